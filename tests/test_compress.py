"""`pie compress`: derived populations checked against counts taken from the saved tensors,
quantised programs holding int8 weights and reloading to the same logits, inference of a derived
population, and bad input refused before anything is written."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from conftest import TINY_TRAIN, assert_one_line_error, pie

from pie import checkpoints, compressed, store
from pie.images import Preprocess, normalize
from pie.models import prunable_weights
from train import compress as compress_stage
from train import population, quantise

PARENTS = ("t-dense-seed0", "t-dense-seed1")


@pytest.fixture
def dense(packed):
    """The tiny work root with a dense population of two small_cnn models."""
    population.main(packed, dataclasses.replace(TINY_TRAIN, sparsities=(0.0,), seeds=2, workers=1))
    return packed


def compress(root, *args, ok=True):
    config = root.path / "config.toml"
    config.write_text('name = "t"\n[infer]\nworkers = 0\n')
    return pie("compress", "--root", str(root.path), "--config", str(config), *args, ok=ok)


def saved(root, model_id):
    return torch.load(root.checkpoint(model_id) / checkpoints.WEIGHTS, weights_only=True)


def row(root, model_id):
    with store.connect(root, read_only=True) as con:
        return store.rows(
            con,
            "select method, level, parent_id, seed, target_sparsity, achieved_sparsity, params,"
            " nonzero_params, size_bytes from models where model_id = ?",
            [model_id],
        )[0]


def test_oneshot_sparsities_counted_from_saved_tensors(dense):
    compress(dense, "-m", "oneshot_magnitude,oneshot_global_magnitude", "-s", "0.9")
    parent = saved(dense, PARENTS[0])
    names = list(prunable_weights(create_small()).keys())
    layer = saved(dense, f"{PARENTS[0]}.oneshot_magnitude-0.9")
    for name in names:  # per layer: round(0.9 n) zeros in every prunable tensor, the largest kept
        w = layer[name]
        assert int((w == 0).sum()) == round(0.9 * w.numel())
        kept = parent[name][w != 0].abs()
        assert kept.min() >= parent[name][w == 0].abs().max()
    assert torch.equal(layer["fc.weight"], parent["fc.weight"])  # the classifier stays dense
    whole = saved(dense, f"{PARENTS[0]}.oneshot_global_magnitude-0.9")
    zeros = sum(int((whole[n] == 0).sum()) for n in names)
    assert zeros == round(0.9 * sum(whole[n].numel() for n in names))
    method, level, parent_id, seed, target, achieved, params, nonzero, size = row(
        dense, f"{PARENTS[0]}.oneshot_global_magnitude-0.9"
    )
    assert (method, level, parent_id, seed, target) == (
        "oneshot_global_magnitude",
        0.9,
        PARENTS[0],
        0,
        0.9,
    )
    parameters = [n for n, _ in create_small().named_parameters()]  # not the bn running stats
    assert params == sum(whole[n].numel() for n in parameters)
    assert nonzero == sum(int(torch.count_nonzero(whole[n])) for n in parameters)
    assert achieved == pytest.approx(0.9, abs=1e-4)
    assert (
        size
        == (dense.checkpoint(f"{PARENTS[0]}.oneshot_global_magnitude-0.9") / "model.pt")
        .stat()
        .st_size
    )


def create_small():
    from pie.models import create

    return create("small_cnn", 10, 1, 28)


def test_2_4_keeps_two_of_every_four_along_the_reduction(dense):
    compress(dense, "-m", "semistructured_2_4")
    model_id = f"{PARENTS[1]}.semistructured_2_4-0.5"
    state, parent = saved(dense, model_id), saved(dense, PARENTS[1])
    for name in ("conv2.weight", "fc1.weight"):
        groups = state[name].reshape(state[name].shape[0], -1, 4)  # (out, in*kh*kw / 4, 4)
        assert int((groups != 0).sum(2).max()) <= 2
        kept = state[name] != 0
        assert torch.equal(state[name][kept], parent[name][kept])
    # conv1's reduction (1 x 3 x 3 = 9) is no multiple of 4: left dense and listed
    assert torch.equal(state["conv1.weight"], parent["conv1.weight"])
    sidecar = checkpoints.read_sidecar(dense.checkpoint(model_id))
    assert sidecar.compression["skipped"] == ["conv1.weight"] and sidecar.level == 0.5


def test_float16_weights_and_int8_programs(dense):
    compress(dense, "-m", "float16,int8_hybrid,int8_full", "--calibration", "32")
    half = saved(dense, f"{PARENTS[0]}.float16-16")
    parent = saved(dense, PARENTS[0])
    assert {t.dtype for k, t in half.items() if "num_batches" not in k} == {torch.float16}
    assert torch.equal(half["fc1.weight"], parent["fc1.weight"].half())
    dense_size = row(dense, PARENTS[0])[-1]
    for method in ("int8_hybrid", "int8_full"):
        model_id = f"{PARENTS[0]}.{method}-8"
        program, sidecar = checkpoints.load(dense.checkpoint(model_id), device="cpu")
        assert isinstance(program, compressed.OnCpu)
        layers = {
            n: m for n, m in program.module.named_modules() if callable(getattr(m, "weight", None))
        }
        assert set(layers) == {"conv1", "conv2", "fc1", "fc"}  # every conv and linear layer
        assert {m.weight().dtype for m in layers.values()} == {torch.qint8}
        assert sidecar.compression["bits"] == 8 and sidecar.level == 8
        # bytes on disk: about a quarter of the float32 parent's
        assert row(dense, model_id)[-1] < 0.3 * dense_size
    full = checkpoints.read_sidecar(dense.checkpoint(f"{PARENTS[0]}.int8_full-8"))
    assert full.compression["calibration"] == {"dataset": "fmnist-train", "images": 32, "seed": 0}


def test_int8_full_reloads_to_the_program_just_converted(dense):
    model, parent = checkpoints.load(dense.checkpoint(PARENTS[0]))
    pre = Preprocess.from_dict(parent.preprocess)
    calibration = [torch.randint(0, 256, (16, 1, 28, 28), dtype=torch.uint8)]
    program = quantise.quantise(model, "int8_full", pre, calibration)
    sidecar = dataclasses.replace(
        parent, model_id="x", compression=quantise.description("int8_full")
    )
    checkpoints.save(dense, program, sidecar)
    reloaded, _ = checkpoints.load(dense.checkpoint("x"))
    x = normalize(torch.randint(0, 256, (20, 1, 28, 28), dtype=torch.uint8), pre)
    with torch.inference_mode():
        assert torch.equal(reloaded(x), compressed.OnCpu(program)(x))
    # counted by hand: the four layers' weights and biases (batch norm folded into the convs)
    params, nonzero = checkpoints.parameter_counts(reloaded)
    layers = [program.conv1, program.conv2, program.fc1, program.fc]
    assert params == sum(m.weight().numel() + m.bias().numel() for m in layers)
    ints = [m.weight().int_repr() for m in layers]
    assert nonzero == sum(int((w != 0).sum()) for w in ints) + sum(
        int((m.bias() != 0).sum()) for m in layers
    )


def test_infer_evaluates_a_derived_population(dense):
    compress(dense, "-m", "oneshot_magnitude,int8_full", "-s", "0.5", "--calibration", "32")
    again = compress(dense, "-m", "oneshot_magnitude,int8_full", "-s", "0.5", "--calibration", "32")
    assert "0 models to make, 4 already there" in again.output  # a rerun makes nothing
    config = dense.path / "config.toml"
    pie("infer", "--root", str(dense.path), "--config", str(config))
    with store.connect(dense, read_only=True) as con:
        preds = dict(
            ((m, i), p)
            for m, i, p in store.rows(con, "select model_id, key_id, pred from predictions")
        )
    images = sorted({i for _, i in preds})
    for method in ("oneshot_magnitude-0.5", "int8_full-8"):
        for parent in PARENTS:
            child = f"{parent}.{method}"
            same = sum(preds[(child, i)] == preds[(parent, i)] for i in images) / len(images)
            print(f"{child}: predictions agree with its parent's on {same:.0%} of the images")
    assert len(preds) == 6 * len(images)


def test_bad_input_is_one_line_and_writes_nothing(dense):
    before = sorted(p.name for p in dense.checkpoints.iterdir())
    result = compress(dense, "-m", "int8_full", "--device", "cuda", ok=False)
    assert_one_line_error(result, "CPU only")
    result = compress(dense, "-m", "int4_magic", ok=False)
    assert_one_line_error(result, "unknown compression method")
    result = compress(dense, "-m", "float16", "--parent", "magnitude@0.5", ok=False)
    assert_one_line_error(result, "no models of population (t, magnitude, level 0.5)")
    result = compress(dense, "-m", "float16", "--parent", "magnitude", ok=False)
    assert_one_line_error(result, "'<method>@<level>'")
    assert sorted(p.name for p in dense.checkpoints.iterdir()) == before


def test_finetune_holds_the_masks(dense):
    compress(dense, "-m", "oneshot_magnitude", "-s", "0.8", "--finetune-steps", "3")
    tuned, parent = saved(dense, f"{PARENTS[0]}.oneshot_magnitude-0.8"), saved(dense, PARENTS[0])
    for name in prunable_weights(create_small()):
        assert int((tuned[name] == 0).sum()) == round(0.8 * tuned[name].numel())
    kept = tuned["fc1.weight"] != 0
    assert not torch.equal(tuned["fc1.weight"][kept], parent["fc1.weight"][kept])  # trained


def test_a_population_derived_from_a_pruned_one_is_not_pooled_with_one_from_dense():
    assert compress_stage.population_method("dense", "int8_full") == "int8_full"
    named = compress_stage.population_method("magnitude@0.9", "int8_full")
    assert named == "int8_full_of_magnitude_0.9"
    assert named != compress_stage.population_method("magnitude@0.5", "int8_full")
