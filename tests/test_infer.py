"""Inference: stale pairs (retrained checkpoint, re-packed dataset) are evaluated again and their
rows replaced; leftover parts; decode failures skipped and recorded; the decoding rule comes from
the dataset's kind, not from the size of its images.

Expected predictions are computed here independently: PNG bytes decoded with PIL, cropped or
resized by hand, normalised and passed through the checkpoint's model."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import TINY_TRAIN, write_idx
from PIL import Image

from infer import run as infer_run
from infer.config import InferConfig
from infer.parts import PartWriter
from infer.run import main as infer
from infer.sink import Fingerprint, closing_meta, part_meta, part_path
from ingest import pack, sources
from ingest.config import IngestConfig
from pie import catalog, checkpoints, provenance, store
from pie.catalog import DatasetSpec
from pie.images import DecodeError, Preprocess, decode
from pie.shards import Sample, dataset_hash, read_shards, write_shards
from train.config import TrainConfig
from train.trainer import make_job, train_one

TINY = replace(TINY_TRAIN, epochs=2, prune_end_epoch=1.5)
CFG = InferConfig(workers=0, device="cpu", batch_size=7)
JOBS = [make_job("t", "dense", 0.0, seed) for seed in (0, 1)]


def write_fmnist(directory, seed: int, n_test: int = 20) -> None:
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    for stem, n in (("train", 48), ("t10k", n_test)):
        write_idx(directory / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(directory / f"{stem}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))


def train(root, job, cfg: TrainConfig = TINY) -> str:
    """Train (or train again) one model and register it, as `pie train` does; returns its sha."""
    train_one(root, cfg, job, 10, "fashion-mnist")
    with store.connect(root) as con:
        catalog.register_model(con, checkpoints.read_sidecar(root.checkpoint(job.model_id)))
        return store.rows(con, "select sha256 from models where model_id = ?", [job.model_id])[0][0]


@pytest.fixture
def world(root, tmp_path):
    write_fmnist(tmp_path / "v1", seed=0)
    found = [sources.fashion_mnist(tmp_path / "v1", s) for s in ("train", "test")]
    pack.main(root, IngestConfig(), found)
    for job in JOBS:
        train(root, job)
    return root


def query(root, sql: str, params=()):
    with store.connect(root, read_only=True) as con:
        return store.rows(con, sql, params)


def stored(root, model_id: str, dataset: str) -> dict[str, tuple[int, float]]:
    rows = query(
        root,
        "select key, pred, p_pred from predictions where model_id = ? and dataset = ?",
        [model_id, dataset],
    )
    return {k: (pred, p) for k, pred, p in rows}


def images(root, dataset: str) -> tuple[list[str], list[np.ndarray]]:
    samples = list(read_shards(root.shards(dataset)))
    return [s["__key__"] for s in samples], [
        np.asarray(Image.open(io.BytesIO(s["png"])).convert("L")) for s in samples
    ]


@torch.inference_mode()
def expected(root, model_id: str, keys: list[str], pixels: list[np.ndarray]):
    """(pred, p_pred) per key from the checkpoint on disk and 28x28 uint8 inputs."""
    model, _ = checkpoints.load(root.checkpoint(model_id))
    x = torch.tensor(np.stack(pixels), dtype=torch.float32)[:, None] / 255
    probs = model((x - TINY.mean[0]) / TINY.std[0]).softmax(1)
    return {k: (int(p.argmax()), float(p.max())) for k, p in zip(keys, probs, strict=True)}


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k in want:
        assert got[k][0] == want[k][0] and got[k][1] == pytest.approx(want[k][1], abs=1e-5), k


def said(capsys) -> str:
    """stdout with rich's line wrapping undone."""
    return " ".join(capsys.readouterr().out.split())


def add_tstats(root, dataset: str, experiment: str) -> None:
    with store.connect(root) as con:
        con.execute(
            "insert into class_tstats (dataset, experiment, method, level, sparsity, class_id,"
            " baseline_n, variant_n, significant)"
            " values (?, ?, 'magnitude', 0.9, 0.9, 0, 2, 2, false)",
            [dataset, experiment],
        )


def test_retrained_checkpoint_is_evaluated_again_and_its_rows_replaced(world, capsys):
    root = world
    m0, m1 = (j.model_id for j in JOBS)
    assert infer(root, CFG) == 2
    before0, before1 = stored(root, m0, "fmnist-test"), stored(root, m1, "fmnist-test")
    old_sha = query(root, "select sha256 from models where model_id = ?", [m0])[0][0]
    for dataset, experiment in (("fmnist-test", "t"), ("fmnist-test", "other"), ("x", "t")):
        add_tstats(root, dataset, experiment)

    new_sha = train(root, JOBS[0], replace(TINY, epochs=3))  # same model_id, other weights
    assert new_sha != old_sha
    capsys.readouterr()
    assert infer(root, CFG) == 1
    assert "1 (model, dataset) pairs evaluated (1 again" in said(capsys)

    runs = dict(query(root, "select model_id, checkpoint_sha256 from inference_runs"))
    m1_sha = query(root, "select sha256 from models where model_id = ?", [m1])[0][0]
    assert runs == {m0: new_sha, m1: m1_sha}
    assert query(root, "select count(*), count(distinct (model_id, key)) from predictions") == [
        (40, 40)
    ]
    keys, pixels = images(root, "fmnist-test")
    after0 = stored(root, m0, "fmnist-test")
    assert_same(after0, expected(root, m0, keys, pixels))
    assert after0 != before0  # the old rows are gone, not kept beside the new ones
    assert stored(root, m1, "fmnist-test") == before1  # the other model's rows untouched
    # class_tstats of (t, fmnist-test) described the old predictions: deleted in the same load
    assert sorted(query(root, "select dataset, experiment from class_tstats")) == [
        ("fmnist-test", "other"),
        ("x", "t"),
    ]
    assert infer(root, CFG) == 0


def test_sidecars_inference_runs_and_runs_record_which_pie_made_them(world):
    """pie's version and commit (None outside a git checkout) in every sidecar (saved by `pie
    train`), every inference_runs row and every runs row (ingest, infer)."""
    root = world
    assert infer(root, CFG) == 2
    made_by = (provenance.version(), provenance.commit())
    assert made_by[0] != ""
    for job in JOBS:
        sidecar = checkpoints.read_sidecar(root.checkpoint(job.model_id))
        assert (sidecar.pie_version, sidecar.pie_commit or None) == made_by
    assert query(root, "select distinct pie_version, pie_commit from inference_runs") == [made_by]
    runs = query(root, "select stage, pie_version, pie_commit from runs")
    assert {r[0] for r in runs} == {"ingest", "infer"} and {r[1:] for r in runs} == {made_by}


def test_repacked_dataset_is_evaluated_again(world, tmp_path):
    root = world
    assert infer(root, CFG) == 2
    old_hash = dataset_hash(root.shards("fmnist-test"))
    assert {h for (h,) in query(root, "select distinct dataset_hash from inference_runs")} == {
        old_hash
    }

    write_fmnist(tmp_path / "v2", seed=1)  # other images, same count
    pack.pack(root, sources.fashion_mnist(tmp_path / "v2", "test"), IngestConfig())
    new_hash = dataset_hash(root.shards("fmnist-test"))
    assert new_hash != old_hash

    assert infer(root, CFG) == 2
    assert query(root, "select distinct dataset_hash from inference_runs") == [(new_hash,)]
    assert query(root, "select count(*) from predictions") == [(40,)]
    keys, pixels = images(root, "fmnist-test")
    for m in (j.model_id for j in JOBS):
        assert_same(stored(root, m, "fmnist-test"), expected(root, m, keys, pixels))


def test_leftover_parts_tmp_removed_stale_dropped_current_loaded(world, capsys, monkeypatch):
    """A run killed after its parts were complete but before they were loaded: the next run
    loads the current ones, drops the stale and incomplete ones, removes the `.tmp`."""
    root = world
    m0, m1 = (j.model_id for j in JOBS)
    monkeypatch.setattr(infer_run, "load_group", lambda *a: 0)  # the parts stay on disk
    assert infer(root, CFG) == 2
    monkeypatch.undo()
    assert query(root, "select count(*) from inference_runs") == [(0,)]
    stale, current = part_path(root, m0, "fmnist-test"), part_path(root, m1, "fmnist-test")
    assert stale.exists() and current.exists()
    new_sha = train(root, JOBS[0], replace(TINY, epochs=3))  # m0's part is now stale
    m1_sha = query(root, "select sha256 from models where model_id = ?", [m1])[0][0]
    lone = part_path(root, m1, "fmnist-test", 0, 2)  # rank 0 of 2 without rank 1: dropped
    meta = part_meta(m1, "fmnist-test", "t", Fingerprint(m1_sha, None), 0, 2, "{}")
    PartWriter(lone, meta).close(closing_meta(0.0, []))
    tmp = root.parts("predictions") / "killed__mid-write.0-of-1.parquet.tmp"
    tmp.write_bytes(b"PAR1 half a part")

    capsys.readouterr()
    assert infer(root, CFG) == 1  # m0 again; m1 came from its leftover part
    assert "2 stale staged parts dropped" in said(capsys)
    assert not any(p.exists() for p in (tmp, stale, current, lone))
    runs = dict(query(root, "select model_id, checkpoint_sha256 from inference_runs"))
    assert runs == {m0: new_sha, m1: m1_sha}
    keys, pixels = images(root, "fmnist-test")
    for m in (j.model_id for j in JOBS):
        assert_same(stored(root, m, "fmnist-test"), expected(root, m, keys, pixels))


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def pack_arrays(root, name: str, pixels: list[bytes], kind="clean", origin="released") -> None:
    samples = [Sample(f"k{i}", i % 10, data, "png") for i, data in enumerate(pixels)]
    written = write_shards(samples, root.shards(name), name)
    spec = DatasetSpec(
        name,
        "fashion-mnist",
        kind,
        "eval",
        "test",
        parent="fmnist-test" if kind == "corrupted" else None,
        corruption="fog" if kind == "corrupted" else None,
        severity=1 if kind == "corrupted" else None,
        origin=origin,
    )
    with store.connect(root) as con:
        catalog.record_dataset(con, spec, root.shards(name), written)


def test_truncated_png_is_skipped_and_recorded(world, capsys):
    root = world
    rng = np.random.default_rng(5)
    arrays = [rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(6)]
    encoded = [png(a) for a in arrays]
    encoded[3] = encoded[3][: len(encoded[3]) // 2]  # truncated
    pack_arrays(root, "broken", encoded)

    capsys.readouterr()
    assert infer(root, replace(CFG, datasets=("broken",))) == 2
    assert "1 images skipped (cannot be decoded" in said(capsys)
    errors = query(root, "select dataset, key, error from decode_errors")
    assert [(d, k) for d, k, _ in errors] == [("broken", "k3")]
    assert "cannot decode" in errors[0][2]
    assert query(root, "select distinct n_images from inference_runs where dataset = 'broken'") == [
        (5,)
    ]
    keys = [f"k{i}" for i in (0, 1, 2, 4, 5)]
    kept = [arrays[i] for i in (0, 1, 2, 4, 5)]
    for job in JOBS:
        assert_same(stored(root, job.model_id, "broken"), expected(root, job.model_id, keys, kept))


def test_infer_takes_the_rule_from_the_dataset_row(world):
    """30 px images for 28 px models: released ImageNet-C style sets are center-cropped, the
    same images as a clean set are resized (to 28: crop_fraction 1.0 for small inputs)."""
    root = world
    rng = np.random.default_rng(7)
    arrays = [rng.integers(0, 256, (30, 30), dtype=np.uint8) for _ in range(5)]
    pack_arrays(root, "c-released", [png(a) for a in arrays], kind="corrupted")
    pack_arrays(root, "c-clean", [png(a) for a in arrays])
    assert infer(root, replace(CFG, datasets=("c-released", "c-clean"))) == 4
    keys = [f"k{i}" for i in range(5)]
    cropped = [a[1:29, 1:29] for a in arrays]
    resized = [
        np.asarray(Image.fromarray(a).resize((28, 28), Image.Resampling.BILINEAR)) for a in arrays
    ]
    assert not np.array_equal(cropped[0], resized[0])
    for job in JOBS:
        m = job.model_id
        assert_same(stored(root, m, "c-released"), expected(root, m, keys, cropped))
        assert_same(stored(root, m, "c-clean"), expected(root, m, keys, resized))


# -- decoding rules (pie.images) ----------------------------------------------------------------

IMAGENET = Preprocess(224, 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
CROP_ONLY = replace(IMAGENET, rule="center_crop_only")


def rgb(side: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)


def chw(pixels: np.ndarray) -> np.ndarray:
    return pixels.transpose(2, 0, 1)


@pytest.mark.parametrize("side", [224, 225])
def test_other_kinds_are_resized_then_cropped_whatever_their_size(side):
    image = rgb(side, side)
    assert IMAGENET.crop_fraction == 0.875
    by_hand = Image.fromarray(image).resize((256, 256), Image.Resampling.BILINEAR)
    by_hand = np.asarray(by_hand.crop((16, 16, 240, 240)))
    out = decode(png(image), IMAGENET)
    np.testing.assert_array_equal(out, chw(by_hand))
    assert not np.array_equal(out, chw(image[:224, :224]))  # not a plain crop


@pytest.mark.parametrize("side", [224, 225, 226])
def test_released_corruptions_are_center_cropped_only(side):
    image = rgb(side, side)
    offset = (side - 224) // 2
    out = decode(png(image), CROP_ONLY)
    np.testing.assert_array_equal(out, chw(image[offset : offset + 224, offset : offset + 224]))


def test_crop_only_refuses_an_image_smaller_than_the_crop():
    with pytest.raises(DecodeError, match="smaller than the 224 px center crop"):
        decode(png(rgb(200, 0)), CROP_ONLY)


def test_rule_comes_from_kind_and_origin():
    def rule(kind, origin):
        return IMAGENET.for_dataset({"kind": kind, "origin": origin}).rule

    assert rule("corrupted", "released") == "center_crop_only"
    assert rule("corrupted", "generated") == "center_crop_only"  # pie corrupt's crops
    for kind in ("clean", "natural_adversarial", "rendition", "export"):
        assert rule(kind, "released") == "resize_then_crop"
    assert CROP_ONLY.for_dataset({"kind": "clean", "origin": "released"}) == IMAGENET
    assert CROP_ONLY.spec != IMAGENET.spec  # decoded images are cached per spec


def test_small_inputs_keep_the_whole_image_and_same_size_resize_is_identity():
    gray = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    fmnist = Preprocess(28, 1, (0.286,), (0.353,))
    assert fmnist.crop_fraction == 1.0 and fmnist.to_dict()["crop_fraction"] == 1.0
    np.testing.assert_array_equal(decode(png(gray), fmnist), gray[None])
    # an explicit crop fraction holds: 28 -> 32 -> center 28, no longer the input
    zoomed = decode(png(gray), replace(fmnist, crop_fraction=0.875))
    by_hand = Image.fromarray(gray).resize((32, 32), Image.Resampling.BILINEAR).crop((2, 2, 30, 30))
    np.testing.assert_array_equal(zoomed, np.asarray(by_hand)[None])
    with pytest.raises(ValueError, match="crop_fraction"):
        Preprocess(28, 1, (0.0,), (1.0,), crop_fraction=1.5)
