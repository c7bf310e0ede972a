"""Training at scale: the two input paths, torchrun, resume after SIGKILL, the recipes,
fine-tuning from dense weights, block masks and layer selection, refusals."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_TRAIN as TINY
from conftest import assert_one_line_error, pie, stopped_after_first_save

from analytics.config import AnalyzeConfig, ExportConfig
from infer.config import InferConfig
from ingest.config import CorruptConfig, IngestConfig
from pie import checkpoints, config
from pie.distributed import World
from pie.errors import PieError
from pie.images import decode
from pie.models import create, prunable_weights
from pie.shards import read_shards, scan_offsets
from train import augment, data, loaders, recipe, trainer
from train.config import CompressConfig, TrainConfig
from train.data import preprocess, steps
from train.masks import keep_mask
from train.trainer import learning_rate, make_job, train_one

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "configs").glob("*.toml"))


def tiny_toml(tmp_path: Path, **extra) -> Path:
    """TINY_TRAIN as a config file, one magnitude model at 0.5, in this process's workers."""
    default = TrainConfig()
    settings = {  # the fields TINY_TRAIN sets, then these
        f.name: getattr(TINY, f.name)
        for f in dataclasses.fields(TINY)
        if f.name != "experiment" and getattr(TINY, f.name) != getattr(default, f.name)
    } | dict(workers=1, sparsities=[0.5], seeds=1)
    lines = ['name = "t"', "[train]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in {**settings, **extra}.items()]
    path = tmp_path / "tiny.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


# -- the input: every image once per epoch, the same batches whatever the processes ---------


def feed(cfg, shards, world, start, stop, seed=7):
    """`world.rank`'s batches of steps [start, stop) by the path `cfg.data` chooses."""
    return loaders.load(cfg, shards, preprocess(cfg), world, seed, False).batches(start, stop)


def test_an_epoch_sees_every_image_once_but_the_last_n_mod_batch():
    n, batch, world = 70, 16, 2  # 4 steps of 16: 64 seen, 6 left for this epoch
    seen = []
    for rank in range(world):
        sampler = data.RunSampler(n, seed=5, batch=batch, rank=rank, world=world,
                                  steps_per_epoch=4, start=12, stop=16)  # fmt: skip
        seen += [i for i, epoch, _ in sampler if epoch == 3]
    order = data.epoch_order(n, 5, 3)
    assert len(seen) == len(set(seen)) == 64
    assert sorted(seen) == sorted(order[:64].tolist())
    assert sorted(order.tolist()) == list(range(n))
    assert not torch.equal(order, data.epoch_order(n, 5, 4))  # a new shuffle each epoch
    assert torch.equal(order, data.epoch_order(n, 5, 3))  # a function of (seed, epoch)


@pytest.mark.parametrize("path", ["memory", "stream"])
def test_two_ranks_together_get_the_one_process_batch(packed, path):
    cfg = dataclasses.replace(TINY, data=path, loader_workers=0)
    shards = data.shard_set(packed.shards(cfg.dataset), cfg.dataset)
    one = list(feed(cfg, shards, World(0, 1), 0, 5))
    halves = [list(feed(cfg, shards, World(r, 2, r), 0, 5)) for r in (0, 1)]
    assert len(one) == 5  # steps 0-4: one epoch of 4 and the first of the next
    for step, (x, y) in enumerate(one):
        assert x.shape == (16, 1, 28, 28)
        assert torch.equal(x, torch.cat([halves[0][step][0], halves[1][step][0]]))
        assert torch.equal(y, torch.cat([halves[0][step][1], halves[1][step][1]]))


def test_streamed_batches_are_the_shards_images_augmented(packed):
    """Labels and pixels against an independent read (webdataset, pie.images.decode)."""
    cfg = dataclasses.replace(TINY, augment="none", loader_workers=2)
    shards = data.shard_set(packed.shards(cfg.dataset), cfg.dataset)
    raw = list(read_shards(packed.shards(cfg.dataset)))
    pre = preprocess(cfg)
    order = data.epoch_order(64, 7, 0)
    batches = list(feed(dataclasses.replace(cfg, data="stream"), shards, World(), 0, 4))
    for step, (x, y) in enumerate(batches):
        for j in range(16):
            sample = raw[int(order[step * 16 + j])]
            assert int(y[j]) == sample["cls"]
            assert np.array_equal(x[j].numpy(), decode(sample["png"], pre))


def test_each_path_evaluates_every_image_once_over_the_ranks(packed):
    """`evaluation()` on 2 ranks, not augmented: memory and stream give rank r the images r,
    r + 2, ...; shards on an object store give each rank a run of the set in index order (read
    in sequence); every path gives the shards' own pixels and labels, each image once."""
    name = TINY.eval_dataset
    local = data.shard_set(packed.shards(name), name)
    piped = tuple(dataclasses.replace(s, url=f"pipe:cat {s.path}", path=None) for s in local.shards)
    remote = dataclasses.replace(local, shards=piped)
    raw = list(read_shards(packed.shards(name)))
    x = torch.from_numpy(np.stack([decode(r["png"], preprocess(TINY)) for r in raw]))
    y = torch.tensor([r["cls"] for r in raw])
    cases = (("memory", local, "memory"), ("stream", local, "stream"))
    for asked, shards, path in (*cases, ("stream", remote, "stream-remote")):
        cfg = dataclasses.replace(TINY, data=asked, loader_workers=0)
        got = []
        for rank in (0, 1):
            read = loaders.load(cfg, shards, preprocess(cfg), World(rank, 2), 0, False)
            assert read.path == path
            got.append([torch.cat(t) for t in zip(*read.evaluation(), strict=True)])
        if path == "stream-remote":
            expect = [(x[:10], y[:10]), (x[10:], y[10:])]  # 20 images: runs of 10
        else:
            expect = [(x[r::2], y[r::2]) for r in (0, 1)]
        for (xr, yr), (xe, ye) in zip(got, expect, strict=True):
            assert torch.equal(xr, xe) and torch.equal(yr, ye)


def test_augmentations_follow_their_rules():
    rng = np.random.default_rng(0)
    u = augment.uniforms(1, 2, np.arange(2000))
    assert u.shape == (2000, augment.DRAWS) and u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.01 and np.array_equal(u, augment.uniforms(1, 2, np.arange(2000)))
    areas = []
    for row in u:
        left, top, w, h = augment.resized_crop_box(400, 300, row)
        assert 0 <= left <= 400 - w and 0 <= top <= 300 - h
        areas.append(w * h / (400 * 300))
        if (w, h) != (400, 300):
            assert 3 / 4 - 0.02 <= w / h <= 4 / 3 + 0.02
    assert min(areas) >= 0.07 and max(areas) <= 1.0 and 0.3 < np.mean(areas) < 0.7
    x = torch.from_numpy(rng.integers(1, 255, (64, 1, 28, 28), dtype=np.uint8))
    out = augment.augment_batch(x, "crop_flip", 1, 2, range(64))
    flips = augment.uniforms(1, 2, np.arange(64))[:, 0] < 0.5
    for i in range(64):
        dy, dx = augment.crop_offsets(augment.uniforms(1, 2, np.array([i]))[0])
        padded = np.pad(x[i].numpy(), ((0, 0), (4, 4), (4, 4)))
        expect = padded[:, dy : dy + 28, dx : dx + 28]
        expect = expect[:, :, ::-1] if flips[i] else expect
        assert np.array_equal(out[i].numpy(), expect)


def test_memory_and_stream_paths_train_the_same_weights(packed):
    job = make_job("t", "magnitude", 0.5, seed=0)
    memory = train_one(packed, dataclasses.replace(TINY, data="memory"), job, 10, "fmnist")
    stream = train_one(
        packed, dataclasses.replace(TINY, data="stream", loader_workers=2), job, 10, "fmnist"
    )
    assert (memory.data, stream.data, stream.world_size) == ("memory", "stream", 1)
    assert memory.sha256 == stream.sha256  # loader workers and path change nothing
    assert memory.test_top1 == stream.test_top1


def test_auto_holds_small_sets_in_memory_and_streams_big_ones():
    pre = preprocess(TrainConfig(image_size=224, channels=3, mean=(0, 0, 0), std=(1, 1, 1)))
    assert data.choose_path("auto", 60_000, preprocess(TINY)) == "memory"  # 47 MB
    assert data.choose_path("auto", 1_281_167, pre) == "stream"  # 193 GB
    assert data.choose_path("auto", 14_000, pre) == "memory"  # 2.107e9 bytes < 2 GiB
    assert data.choose_path("auto", 15_000, pre) == "stream"
    assert data.choose_path("memory", 1_281_167, pre) == "memory"


# -- refusals ---------------------------------------------------------------------------------


def test_truncated_and_missing_shards_are_refused_in_one_line(packed, tmp_path):
    toml = tiny_toml(tmp_path)
    shard = sorted(packed.shards("fmnist-train").glob("*.tar"))[0]
    shard.write_bytes(shard.read_bytes()[:-3000])
    result = pie("train", "-c", str(toml), "--root", str(packed.path), ok=False)
    assert_one_line_error(result, "truncated or replaced")
    shard.unlink()
    result = pie("train", "-c", str(toml), "--root", str(packed.path), ok=False)
    assert_one_line_error(result, "is missing")
    shutil.rmtree(packed.shards("fmnist-train"))
    result = pie("train", "-c", str(toml), "--root", str(packed.path), ok=False)
    assert_one_line_error(result, "dataset fmnist-train: no shards at")
    assert not packed.checkpoints.exists() or not any(packed.checkpoints.iterdir())


def test_a_shard_cut_short_inside_is_refused(packed, tmp_path):
    """A tar cut at a member boundary (the index's size check aside): the header scan says so."""
    shard = sorted(packed.shards("fmnist-train").glob("*.tar"))[0]
    cut = tmp_path / "cut.tar"
    cut.write_bytes(shard.read_bytes()[:10240])  # inside a member
    with pytest.raises(PieError, match=r"cannot be read .*: pack the dataset again"):
        scan_offsets(str(cut), 64)
    with tarfile.open(shard) as source, tarfile.open(cut, "w") as short:
        for member in source.getmembers()[:9]:  # 3 whole samples
            short.addfile(member, source.extractfile(member))
    with pytest.raises(PieError, match="holds 3 complete samples, its index says 64"):
        scan_offsets(str(cut), 64)


def test_a_global_batch_that_does_not_divide_and_gpu_options_on_cpu_are_refused():
    with pytest.raises(PieError, match="does not divide by the 3 processes"):
        recipe.check_world(TINY, World(0, 3))
    recipe.check_world(TINY, World(0, 4))
    for option in (dict(precision="bf16"), dict(channels_last=True), dict(compile=True)):
        with pytest.raises(PieError, match="need a CUDA device"):
            recipe.check_device(dataclasses.replace(TINY, **option), torch.device("cpu"))


def test_gpu_option_on_cpu_is_one_line_at_the_cli(packed, tmp_path):
    result = pie(
        "train", "-c", str(tiny_toml(tmp_path, precision="bf16")), "--root", str(packed.path),
        ok=False,
    )  # fmt: skip
    assert_one_line_error(result, "precision = bf16 need a CUDA device")


@pytest.fixture
def algorithm_flags():
    """torch's process-wide algorithm settings, put back after the test."""
    cudnn = torch.backends.cudnn
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn.deterministic,
        cudnn.benchmark,
    )
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    cudnn.deterministic, cudnn.benchmark = saved[2:]


def test_deterministic_algorithms_always_on_cpu_and_on_cuda_only_when_asked(
    packed, tmp_path, monkeypatch, algorithm_flags
):
    cudnn, cuda = torch.backends.cudnn, torch.device("cuda")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    # CUDA by default: the fastest kernels, cudnn timing its algorithms, nothing forced
    assert recipe.determinism(TINY, cuda) is False
    assert not torch.are_deterministic_algorithms_enabled()
    assert cudnn.benchmark and not cudnn.deterministic
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    # CUDA with train.deterministic: what each library needs for it
    assert recipe.determinism(dataclasses.replace(TINY, deterministic=True), cuda) is True
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()
    assert cudnn.deterministic and not cudnn.benchmark
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    # too late (CUDA started without it) or a value cuBLAS does not make deterministic: refused
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":1:1")
    with pytest.raises(PieError, match="one of :4096:8, :16:8, the environment has ':1:1'"):
        recipe.determinism(dataclasses.replace(TINY, deterministic=True), cuda)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(PieError, match="before CUDA starts, and CUDA started without it"):
        recipe.determinism(dataclasses.replace(TINY, deterministic=True), cuda)
    # CPU: deterministic algorithms whatever the setting, and the sidecar says so
    torch.use_deterministic_algorithms(False)
    pie("train", "-c", str(tiny_toml(tmp_path)), "--root", str(packed.path))
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()
    sidecar = checkpoints.read_sidecar(packed.checkpoint("t-magnitude-s0.5-seed0"))
    assert (sidecar.config["deterministic"], sidecar.deterministic) == (False, True)
    # an execution setting: the checkpoint stands when it changes
    toml = tiny_toml(tmp_path, deterministic=True)
    assert "1 already there" in pie("train", "-c", str(toml), "--root", str(packed.path)).output


# -- recipes ----------------------------------------------------------------------------------

SECTIONS = {
    "ingest": IngestConfig,
    "corrupt": CorruptConfig,
    "train": TrainConfig,
    "compress": CompressConfig,
    "infer": InferConfig,
    "analyze": AnalyzeConfig,
    "export": ExportConfig,
}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_packaged_config_loads_every_section(path):
    for section, cls in SECTIONS.items():
        config.load(cls, path, section)
    assert "GPU-hours" in path.read_text() or path.stem == "fashion-mnist"


def test_the_reference_recipe_is_the_papers():
    cfg = config.load(TrainConfig, REPO / "configs/imagenet-resnet50.toml", "train")
    assert (cfg.arch, cfg.image_size, cfg.seeds) == ("resnet50", 224, 30)
    assert cfg.sparsities == (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
    per_epoch, total = steps(cfg, 1_281_167)
    assert (per_epoch, total) == (312, 32_000)
    assert cfg.nesterov and cfg.momentum == 0.9 and cfg.label_smoothing == 0.1
    # 0.1 x 4096 / 256 = 1.6, 5 warm-up epochs, then x0.1 at 30, 60 and 80 epochs
    assert learning_rate(5 * 312 - 1, total, per_epoch, cfg) == pytest.approx(1.6)
    assert learning_rate(0, total, per_epoch, cfg) == pytest.approx(1.6 / (5 * 312))
    assert learning_rate(30 * 312 - 1, total, per_epoch, cfg) == pytest.approx(1.6)
    assert learning_rate(30 * 312, total, per_epoch, cfg) == pytest.approx(0.16)
    assert learning_rate(60 * 312, total, per_epoch, cfg) == pytest.approx(0.016)
    assert learning_rate(80 * 312, total, per_epoch, cfg) == pytest.approx(0.0016)
    model = create("resnet50", 1000, 3, 224)
    assert cfg.masked_weights == "reference"
    groups = recipe.param_groups(model, cfg.weight_decay, cfg.masked_weights)
    assert groups[0]["weight_decay"] == 1e-4 and groups[1]["weight_decay"] == 0.0
    bn = {id(p) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)
          for p in m.parameters()}  # fmt: skip
    # the reference's l2 loss: every variable but batch norm's, the classifier bias included
    assert bn == {id(p) for p in groups[1]["params"]}
    assert any(p is model.fc.bias for p in groups[0]["params"])
    # its updates: last_update + 500 <= step within [9984, 24960]
    plan = recipe.schedule(cfg, 0.9, per_epoch)
    updates = plan.update_steps()
    assert (updates[0], updates[1], updates[-1], len(updates)) == (9984, 10484, 24484, 30)
    assert plan.sparsity_at(24484) == pytest.approx(0.9 * (1 - (476 / 14976) ** 3))
    weights = prunable_weights(model, cfg.prune_layers)
    assert "conv1.weight" in weights and "fc.weight" not in weights
    assert len(weights) == 53  # every conv of ResNet-50, the stem and the downsamples included


# -- torchrun ---------------------------------------------------------------------------------


def torchrun(root: Path, toml: Path) -> tuple[int, str]:
    """(exit code, stderr) of a 2-process CPU torchrun of `pie train`; on a timeout the whole
    process group (torchrun and its workers) is killed."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node=2", "-m", "pie", "train", "-c", str(toml), "--root", str(root)]
    run = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        _, err = run.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        _, err = run.communicate()
    return run.returncode, err.decode()


@pytest.mark.slow
def test_torchrun_two_cpu_ranks_train_one_checkpoint(packed, tmp_path):
    """Two gloo ranks, global batch 16 (8 each): sparsity on target, a verified sha256, top-1
    within 0.15 (3 of the 20 test images) of the one-process model."""
    toml = tiny_toml(tmp_path)
    code, err = torchrun(packed.path, toml)
    assert code == 0, err[-3000:]
    model_id = "t-magnitude-s0.5-seed0"
    _, sidecar = checkpoints.load(packed.checkpoint(model_id))  # checks the sha256
    assert sidecar.world_size == 2 and sidecar.data == "memory"
    assert sidecar.achieved_sparsity == pytest.approx(0.5, abs=0.005)
    state = torch.load(packed.checkpoint(model_id) / "model.pt", weights_only=True)
    for name in ("conv1.weight", "conv2.weight", "fc1.weight"):
        assert (state[name] == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)
    cfg = config.load(TrainConfig, toml, "train")
    alone = train_one(packed, cfg, make_job("t", "magnitude", 0.5, 0), 10, "fashion-mnist")
    assert abs(alone.test_top1 - sidecar.test_top1) <= 0.15


# -- resume -----------------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_a_run_killed_midway_resumes_to_the_same_bytes(packed, tmp_path):
    """SIGKILL inside the pruning schedule, then a new process: 240 steps, masks updated at
    steps 2, 12, ..., 192 and 200, states every 15 steps, each strictly between two updates."""
    toml = tiny_toml(tmp_path, epochs=60, save_every=15, prune_end_epoch=50, prune_frequency=10)
    model_id = "t-magnitude-s0.5-seed0"
    state = packed.path / "resume" / f"{model_id}.pt"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "pie", "train", "-c", str(toml), "--root", str(packed.path)]
    run = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not state.exists() and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert run.poll() is None, run.stderr.read().decode()[-2000:]
        os.kill(run.pid, signal.SIGKILL)
        run.wait()
    finally:
        run.kill()
    assert state.exists()
    assert not (packed.checkpoint(model_id) / "model.json").exists()  # killed midway
    saved_at = torch.load(state, weights_only=True)["step"]
    assert 0 < saved_at < 200 and saved_at % 15 == 0  # inside the schedule
    assert (saved_at - 2) % 10 != 0  # between two mask updates

    result = pie("train", "-c", str(toml), "--root", str(packed.path))
    assert "1 resumed" in result.output
    assert not state.exists()  # gone once the checkpoint is written
    resumed = (packed.checkpoint(model_id) / "model.pt").read_bytes()

    cfg = config.load(TrainConfig, toml, "train")
    shutil.rmtree(packed.checkpoint(model_id))
    whole = train_one(packed, dataclasses.replace(cfg, save_every=0),
                      make_job("t", "magnitude", 0.5, 0), 10, "fashion-mnist")  # fmt: skip
    assert (packed.checkpoint(model_id) / "model.pt").read_bytes() == resumed
    assert whole.steps == 240


def test_a_state_saved_with_other_settings_is_refused(packed, tmp_path):
    cfg = dataclasses.replace(TINY, save_every=4, epochs=3)
    job = make_job("t", "magnitude", 0.5, 0)
    path = packed.path / "resume" / f"{job.model_id}.pt"
    stopped_after_first_save(lambda: train_one(packed, cfg, job, 10, "fashion-mnist"))
    assert torch.load(path, weights_only=True)["step"] == 4
    with pytest.raises(PieError, match=r"saved with lr=0.1, this run asks lr=0.2: delete"):
        train_one(packed, dataclasses.replace(cfg, lr=0.2), job, 10, "fashion-mnist")


# -- fine-tuning from dense weights -----------------------------------------------------------


def test_init_from_a_dense_checkpoint_prunes_while_fine_tuning(packed, tmp_path):
    dense = train_one(packed, TINY, make_job("t", "dense", 0.0, 0), 10, "fashion-mnist")
    source = dense.directory(packed)
    cfg = dataclasses.replace(TINY, init_from=str(source), experiment="ft")
    calls = []
    real = trainer.finetune.load_dense

    def recording(model, *args):
        real(model, *args)
        calls.append({k: v.clone() for k, v in model.state_dict().items()})

    trainer.finetune.load_dense = recording
    try:
        tuned = train_one(packed, cfg, make_job("ft", "magnitude", 0.7, 0), 10, "fashion-mnist")
    finally:
        trainer.finetune.load_dense = real
    reference = torch.load(source / "model.pt", weights_only=True)
    assert all(torch.equal(calls[0][k], reference[k]) for k in reference)  # started from it
    assert tuned.achieved_sparsity == pytest.approx(0.7, abs=0.005)
    assert tuned.config["init_from"] == str(source)

    # a torchvision-style file: a plain state_dict, here with DataParallel's prefix
    file = tmp_path / "dense.pth"
    torch.save({f"module.{k}": v for k, v in reference.items()}, file)
    model = create("small_cnn", 10, 1, 28)
    trainer.finetune.load_dense(model, str(file), "small_cnn", 10)
    assert torch.equal(model.state_dict()["fc1.weight"], reference["fc1.weight"])


def test_init_from_another_architecture_or_class_count_is_one_line(packed, tmp_path):
    torch.save(create("small_cnn", 7, 1, 28).state_dict(), tmp_path / "seven.pt")
    torch.save(create("resnet18", 10, 3, 32).state_dict(), tmp_path / "resnet.pt")
    toml = tiny_toml(tmp_path)
    for file, expected in (
        ("seven.pt", "fc.weight is (7, 256), the model's (10, 256)"),
        ("resnet.pt", "does not fit small_cnn: it lacks weight 'bn2.bias'"),
        ("none.pt", "no such checkpoint directory or weights file"),
    ):
        result = pie(
            "train", "-c", str(toml), "--root", str(packed.path),
            "--init-from", str(tmp_path / file), ok=False,
        )  # fmt: skip
        assert_one_line_error(result, expected)
    assert not packed.checkpoints.exists() or not any(packed.checkpoints.iterdir())


# -- block masks, which layers, pie models ----------------------------------------------------


def test_block_masks_prune_whole_blocks_by_mean_magnitude():
    # a 4 x 4 weight in 2 x 2 blocks with means 1, 2 (top) and 3, 0.5 (bottom)
    w = torch.tensor(
        [
            [1.0, 1.0, 2.0, 2.0],
            [1.0, 1.0, 2.0, 2.0],
            [3.0, 3.0, 0.4, 0.6],
            [3.0, 3.0, 0.6, 0.4],
        ]
    )
    keep = keep_mask(w.abs(), 0.5, (2, 2))
    expected = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]]).bool()
    assert torch.equal(keep, expected)
    # a conv weight (4, 1, 3, 3) seen as 4 x 9 in 1 x 3 blocks: 12 blocks, 25 % = 3 dropped
    conv = torch.arange(36, dtype=torch.float32).view(4, 1, 3, 3) + 1
    keep = keep_mask(conv, 0.25, (1, 3)).view(4, 9)
    assert keep[0].tolist() == [False] * 9 and keep[1:].all()  # the 3 smallest blocks: row 0


def test_which_layers_are_pruned_is_a_setting():
    model = create("small_cnn", 10, 1, 28)
    assert list(prunable_weights(model)) == ["conv1.weight", "conv2.weight", "fc1.weight"]
    assert list(prunable_weights(model, "convs")) == ["conv1.weight", "conv2.weight"]
    assert list(prunable_weights(model, "all"))[-1] == "fc.weight"
    assert list(prunable_weights(model, "reference", ["conv1.*"])) == ["conv2.weight", "fc1.weight"]


def test_block_and_layer_settings_reach_the_checkpoint_and_pie_models(packed):
    cfg = dataclasses.replace(TINY, block=(4, 4), keep_layers=("conv1.*",))
    sidecar = train_one(packed, cfg, make_job("t", "magnitude", 0.5, 0), 10, "fashion-mnist")
    state = torch.load(sidecar.directory(packed) / "model.pt", weights_only=True)
    assert state["conv1.weight"].count_nonzero() == state["conv1.weight"].numel()  # kept
    fc1 = state["fc1.weight"]  # 256 x 1568 in 4 x 4 blocks: each block all zero or all live
    blocks = (fc1 == 0).view(64, 4, 392, 4).permute(0, 2, 1, 3).reshape(64 * 392, 16)
    assert set(blocks.sum(1).tolist()) == {0, 16}
    assert blocks.all(1).float().mean().item() == pytest.approx(0.5, abs=0.001)
    assert set(sidecar.layer_sparsity) == {"conv2.weight", "fc1.weight"}

    listed = pie("models", "--root", str(packed.path)).output.splitlines()
    assert listed[0].split() == [
        "model_id", "arch", "method", "target", "achieved", "seed", "top1", "world", "data"
    ]  # fmt: skip
    assert listed[1].split()[:5] == ["t-magnitude-s0.5-seed0", "small_cnn", "magnitude", "0.5",
                                     f"{sidecar.achieved_sparsity:.4f}"]  # fmt: skip
    shown = pie("models", "t-magnitude-s0.5-seed0", "--root", str(packed.path)).output
    rows = {line.split()[0]: line.split()[1] for line in shown.splitlines()[2:]}
    assert rows == {k: f"{v:.4f}" for k, v in sidecar.layer_sparsity.items()}
    assert math.isclose(float(rows["fc1.weight"]), 0.5, abs_tol=0.001)
    assert_one_line_error(pie("models", "nope", "--root", str(packed.path), ok=False), "no model")
