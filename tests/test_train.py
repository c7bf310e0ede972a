"""Training's spine: what masked weights get, when the schedule fires, checkpoints that are
swapped atomically and refused when their settings differ, workers that die with their parent."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import TINY_TRAIN as TINY
from conftest import stopped_after_first_save

from pie import catalog, checkpoints, store
from pie.errors import PieError
from pie.models import create, prunable_weights
from pie.paths import WorkRoot
from train import population, trainer
from train.pruning import Pruner, ReferencePruner, Schedule, sparsity_report
from train.recipe import check_schedule
from train.trainer import make_job, train_one

REPO = Path(__file__).resolve().parent.parent
METHODS = ["magnitude", "global_magnitude", "random_independent", "random_cumulative"]

# -- masked weights -------------------------------------------------------------------------


def normalised_net() -> torch.nn.Module:
    """Batch-norm after every pruned layer, so that lr 1.6 at batch 16 does not diverge."""
    nn = torch.nn
    return nn.Sequential(
        *(nn.Conv2d(1, 8, 3, stride=2, bias=False), nn.BatchNorm2d(8), nn.ReLU()),
        *(nn.Conv2d(8, 16, 3, stride=2, bias=False), nn.BatchNorm2d(16), nn.ReLU()),
        *(nn.Flatten(), nn.Linear(16 * 6 * 6, 32, bias=False), nn.BatchNorm1d(32), nn.ReLU()),
        nn.Linear(32, 10),
    )


@pytest.mark.parametrize("method", METHODS)
def test_masked_weights_do_not_move_between_updates_at_the_reference_lr(method):
    """lr 1.6 (0.1 x 4096 / 256), Nesterov momentum 0.9, no weight decay, an update every
    other step: a masked weight neither moves nor keeps momentum, and a weight that comes back
    (random_independent) comes back with the value it had when it was masked."""
    torch.manual_seed(0)
    model = normalised_net()
    weights = prunable_weights(model)
    assert list(weights) == ["0.weight", "3.weight", "7.weight"]
    pruner = Pruner(weights, method, Schedule(0.8, 0, 8, 2), torch.Generator().manual_seed(1))
    opt = torch.optim.SGD(model.parameters(), lr=1.6, momentum=0.9, nesterov=True)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g)
    when_masked = {n: torch.zeros_like(w) for n, w in weights.items()}
    revived = 0
    for step in range(12):
        before = {n: w.detach().clone() for n, w in weights.items()}
        old = {n: m.clone() for n, m in pruner.masks.items()}
        assert pruner.update(step, opt) == (step in (0, 2, 4, 6, 8))
        for n, w in weights.items():
            new, was = pruner.masks[n], old[n]
            assert torch.equal(w[new & was], before[n][new & was])  # live: untouched
            assert torch.equal(w[new & ~was], when_masked[n][new & ~was])  # back, old value
            revived += int((new & ~was).sum())
            when_masked[n][was & ~new] = before[n][was & ~new]
            if method != "random_independent":
                assert not (new & ~was).any()  # never un-pruned
        held = {n: w.detach().clone() for n, w in weights.items()}
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
        for n, w in weights.items():
            masked = ~pruner.masks[n]
            assert masked.any() or step < 2  # nothing masked before the update at step 2
            assert torch.equal(w[masked], held[n][masked])  # no step moved it
            assert (w[masked] == 0).all()
            assert (opt.state[w]["momentum_buffer"][masked] == 0).all()
            assert (w[~masked] != held[n][~masked]).any()  # the live ones do train
    masked_fraction, _ = sparsity_report({n: m.float() for n, m in pruner.masks.items()})
    assert masked_fraction == pytest.approx(0.8, abs=0.005)
    assert (revived > 0) == (method == "random_independent")


# -- the schedule ---------------------------------------------------------------------------


def test_schedule_fires_at_begin_step_zero():
    s = Schedule(0.9, begin_step=0, end_step=25, frequency=10)
    assert [t for t in range(40) if s.is_update(t)] == [0, 10, 20, 25]
    assert s.sparsity_at(0) == 0.0 and s.sparsity_at(25) == pytest.approx(0.9)
    at_once = Schedule(0.5, begin_step=0, end_step=0, frequency=50)
    assert [t for t in range(100) if at_once.is_update(t)] == [0]
    assert at_once.sparsity_at(0) == 0.5


def test_prune_start_and_end_epoch_zero_is_on_target_from_the_first_step(packed, monkeypatch):
    seen = []

    class Recording(Pruner):
        def update(self, step, optimizer=None):
            changed = super().update(step, optimizer)
            zeros, _ = sparsity_report({n: w.detach() for n, w in self.weights.items()})
            seen.append((step, changed, zeros))
            return changed

    monkeypatch.setattr(trainer, "Pruner", Recording)
    cfg = dataclasses.replace(TINY, prune_start_epoch=0.0, prune_end_epoch=0.0)
    job = make_job("t", "magnitude", 0.6, seed=0)
    sidecar = train_one(packed, cfg, job, 10, "fashion-mnist")
    # 64 images / batch 16 = 4 steps per epoch, 3 epochs = 12 steps, one update at step 0
    assert [(s, c) for s, c, _ in seen] == [(s, s == 0) for s in range(12)]
    assert all(z == pytest.approx(0.6, abs=0.005) for _, _, z in seen)
    assert sidecar.schedule == {"begin_step": 0, "end_step": 0, "frequency": 1}
    state = torch.load(packed.checkpoint(job.model_id) / "model.pt", weights_only=True)
    for name in ("conv1.weight", "conv2.weight", "fc1.weight"):
        assert (state[name] == 0).float().mean().item() == pytest.approx(0.6, abs=0.01)


def test_a_schedule_ending_after_the_last_step_is_refused():
    # 64 images at batch 16: 4 steps per epoch; 3 epochs: steps 0..11
    cfg = dataclasses.replace(TINY, sparsities=(0.0, 0.5), prune_end_epoch=3.0)
    with pytest.raises(PieError, match=r"step 12, but training stops after step 11"):
        check_schedule(cfg, 64)
    check_schedule(dataclasses.replace(cfg, prune_end_epoch=2.75), 64)  # update at step 11
    check_schedule(dataclasses.replace(cfg, sparsities=(0.0,)), 64)  # nothing is pruned


def test_train_refuses_the_schedule_before_training(packed):
    cfg = dataclasses.replace(TINY, sparsities=(0.5,), seeds=1, workers=1, prune_end_epoch=3.0)
    with pytest.raises(PieError, match="below their target sparsity"):
        population.main(packed, cfg)
    assert not packed.checkpoints.exists() or not any(packed.checkpoints.iterdir())


# -- checkpoints ----------------------------------------------------------------------------


def sidecar_for(model_id: str, top1: float = 0.5) -> checkpoints.Sidecar:
    return checkpoints.Sidecar(
        model_id=model_id,
        experiment="t",
        arch="small_cnn",
        num_classes=10,
        label_space="fashion-mnist",
        method="dense",
        target_sparsity=0.0,
        achieved_sparsity=0.0,
        layer_sparsity={"conv1.weight": 0.0},
        seed=0,
        torch_seed=1,
        train_dataset="a",
        eval_dataset="b",
        test_top1=top1,
        train_loss=1.0,
        steps=3,
        schedule={"begin_step": 0, "end_step": 0, "frequency": 1},
        preprocess={"size": 28, "channels": 1, "mean": [0.5], "std": [0.5], "crop_fraction": 1},
        config={"epochs": 1.0},
        torch_version=torch.__version__,
        device="cpu",
        seconds=0.1,
    )


def test_sidecar_path_is_relative_and_a_copied_root_still_loads(root, con, tmp_path):
    model = create("small_cnn", 10, 1, 28)
    saved = checkpoints.save(root, model, sidecar_for("m-1"))
    assert saved.path == "checkpoints/m-1"
    assert checkpoints.Sidecar.from_json(saved.to_json()) == saved
    catalog.register_model(con, saved)
    assert store.rows(con, "select path, sha256, test_top1 from models") == [
        ("checkpoints/m-1", checkpoints.sha256_file(root.checkpoint("m-1") / "model.pt"), 0.5)
    ]
    copy = WorkRoot(tmp_path / "copy")
    shutil.copytree(root.path, copy.path)
    shutil.rmtree(root.path)
    assert saved.directory(copy) == copy.path / "checkpoints" / "m-1"
    loaded, sidecar = checkpoints.load(saved.directory(copy))
    assert sidecar == saved
    reference = model.state_dict()
    assert all(torch.equal(v, reference[k]) for k, v in loaded.state_dict().items())


def test_a_sidecar_records_what_the_saved_model_holds(root, con):
    model = create("small_cnn", 10, 1, 28)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1)
        model.fc1.weight[:, ::2] = 0  # half of one layer's weights
    saved = checkpoints.save(root, model, sidecar_for("m-1"))
    zeros = model.fc1.weight.numel() // 2
    assert saved.params == sum(p.numel() for p in model.parameters())
    assert saved.nonzero_params == saved.params - zeros
    assert saved.size_bytes == (root.checkpoint("m-1") / "model.pt").stat().st_size
    assert (saved.level, saved.parent_id, saved.compression) == (0.0, "", {})
    catalog.register_model(con, saved)
    stored = "select level, parent_id, params, nonzero_params, size_bytes from models"
    assert store.rows(con, stored) == [
        (0.0, None, saved.params, saved.nonzero_params, saved.size_bytes)
    ]
    old = json.loads(saved.to_json())
    for name in ("level", "parent_id", "compression", "params", "nonzero_params", "size_bytes"):
        del old[name]
    assert checkpoints.Sidecar.from_json(json.dumps(old)).level == 0.0  # an old sidecar's level


def test_replacing_a_checkpoint_never_leaves_none_or_half_of_one(root):
    model = create("small_cnn", 10, 1, 28)
    checkpoints.save(root, model, sidecar_for("m", 0.0))
    directory, seen, stop = root.checkpoint("m"), [], threading.Event()

    def read():
        while not stop.is_set():
            try:
                sidecar = checkpoints.read_sidecar(directory)
                weights = (directory / "model.pt").stat().st_size
            except Exception as e:
                seen.append(repr(e))
            else:
                seen.append((sidecar.test_top1, weights > 0))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(1, 40):
            checkpoints.save(root, model, sidecar_for("m", i / 100))
    finally:
        stop.set()
        reader.join()
    assert seen and all(isinstance(s, tuple) and s[1] for s in seen), seen[:3]
    assert checkpoints.read_sidecar(directory).test_top1 == 0.39
    assert sorted(p.name for p in root.checkpoints.iterdir()) == ["m"]


def test_a_failed_save_keeps_the_old_checkpoint(root, monkeypatch):
    model = create("small_cnn", 10, 1, 28)
    checkpoints.save(root, model, sidecar_for("m", 0.1))

    def dies(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save(root, model, sidecar_for("m", 0.2))
    monkeypatch.undo()
    assert checkpoints.load(root.checkpoint("m"))[1].test_top1 == 0.1
    assert (root.checkpoints / "m.partial").exists()
    assert checkpoints.clean(root.checkpoints) == ["m.partial"]
    assert sorted(p.name for p in root.checkpoints.iterdir()) == ["m"]


# -- reruns ---------------------------------------------------------------------------------


def test_rerun_with_other_settings_is_refused_and_leftovers_are_cleared(packed):
    cfg = dataclasses.replace(TINY, sparsities=(0.5,), seeds=1, workers=1)
    assert population.main(packed, cfg) == ["t-magnitude-s0.5-seed0"]
    # what a killed run leaves: a half-written checkpoint, and one moved aside mid-replace
    (packed.checkpoints / "t-magnitude-s0.5-seed7.partial").mkdir()
    shutil.copytree(packed.checkpoint("t-magnitude-s0.5-seed0"), packed.checkpoints / "x.old")

    with pytest.raises(
        PieError,
        match=r"checkpoint t-magnitude-s0.5-seed0 was trained with epochs=3, lr=0.1, "
        r"this run asks epochs=2.5, lr=0.2: use a new experiment name or delete ",
    ):
        population.main(packed, dataclasses.replace(cfg, epochs=2.5, lr=0.2))
    # execution settings and the population's size are not a difference
    same = dataclasses.replace(cfg, workers=3, threads=2, device="cpu", seeds=1)
    assert population.main(packed, same) == []
    assert sorted(p.name for p in packed.checkpoints.iterdir()) == [
        "t-magnitude-s0.5-seed0",
        "x",  # put back: its checkpoint was missing
    ]


def test_train_is_the_one_writer_and_leaves_the_database_to_readers(packed):
    cfg = dataclasses.replace(TINY, sparsities=(0.0,), seeds=1, workers=1)
    busy = rf"is being written by pid {os.getpid()}: pie infer"
    with store.writer_lock(packed, "pie infer"), pytest.raises(PieError, match=busy):
        population.main(packed, cfg)  # another stage is writing this root
    opened = []
    real = store.connect

    def spy(root, read_only=False, **kw):
        opened.append(time.monotonic())
        return real(root, read_only, **kw)

    trained = []

    def train_and_read(*args):
        # while a model trains, nobody holds the database: a writer can open it at once
        with real(packed) as con:
            trained.append(store.rows(con, "select count(*) from models")[0][0])
        return train_one(*args)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(store, "connect", spy)
        mp.setattr(population, "train_one", train_and_read)
        assert population.main(packed, cfg) == ["t-dense-seed0"]
    assert trained == [0] and len(opened) >= 2  # planning, then the model's row


# -- workers die with their parent ----------------------------------------------------------


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state not in ("Z", "X")


def wait_for(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


def run_script(tmp_path: Path, text: str) -> subprocess.Popen:
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(text))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(script), str(tmp_path)], env=env)


def kill_and_check(parent: subprocess.Popen, tmp_path: Path, n: int) -> None:
    try:
        assert wait_for(lambda: len(list(tmp_path.glob("*.pid"))) == n, 60)
        pids = [int(p.stem) for p in tmp_path.glob("*.pid")]
        assert all(alive(pid) for pid in pids)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        assert wait_for(lambda: not any(alive(pid) for pid in pids), 5), pids
    finally:
        parent.kill()
        for p in tmp_path.glob("*.pid"):
            if alive(int(p.stem)):
                os.kill(int(p.stem), signal.SIGKILL)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_killing_the_parent_ends_its_workers(tmp_path):
    parent = run_script(
        tmp_path,
        """
        import os, sys, time
        from pie.parallel import Workers

        def task(i, out):
            open(os.path.join(out, f"{os.getpid()}.pid"), "w").close()
            time.sleep(120)

        if __name__ == "__main__":
            with Workers(2) as workers:
                for _ in workers.unordered(task, [(0, sys.argv[1]), (1, sys.argv[1])]):
                    pass
        """,
    )
    kill_and_check(parent, tmp_path, 2)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_the_watcher_alone_ends_an_orphan(tmp_path):
    """The portable half: without the kernel's parent-death signal, the watcher thread."""
    parent = run_script(
        tmp_path,
        """
        import subprocess, sys, time
        child = (
            "import os, sys, threading, time; from pie.parallel import watch; "
            "threading.Thread(target=watch, args=(os.getppid(),), daemon=True).start(); "
            "open(os.path.join(sys.argv[1], f'{os.getpid()}.pid'), 'w').close(); time.sleep(120)"
        )
        subprocess.Popen([sys.executable, "-c", child, sys.argv[1]])
        time.sleep(120)
        """,
    )
    kill_and_check(parent, tmp_path, 1)


# -- masked_weights = "reference" through train_one -----------------------------------------

REFERENCE = dataclasses.replace(TINY, masked_weights="reference", prune_frequency=2)


def test_reference_checkpoint_is_the_training_forward_in_a_stock_state_dict(packed, monkeypatch):
    """random_independent under "reference": the saved state_dict loads strictly into the stock
    model and equals the training model's effective weights raw w * mask, whose kept entries
    carry 1 / (1 - s) (s of the last update: steps 2, 4, 6, 8 of 12, last_update from 0)."""
    seen = {}
    real = ReferencePruner.finish

    def recording(self):
        seen["raw"] = {n: w.detach().clone() for n, w in self.weights.items()}
        seen["factor"] = {n: f.clone() for n, f in self.factors.items()}
        seen["effective"] = {
            n: getattr(module, attr).detach().clone() for n, (module, attr) in self.owners.items()
        }
        seen["last_update"], seen["masks"] = self.last_update, dict(self.masks)
        real(self)

    monkeypatch.setattr(ReferencePruner, "finish", recording)
    job = make_job("t", "random_independent", 0.6, seed=0)
    sidecar = train_one(packed, REFERENCE, job, 10, "fashion-mnist")
    state = torch.load(packed.checkpoint(job.model_id) / "model.pt", weights_only=True)
    stock = create("small_cnn", 10, 1, 28)
    stock.load_state_dict(state)  # strict: stock names, nothing extra
    assert seen["last_update"] == 8 and sidecar.schedule["end_step"] == 8
    scale = torch.tensor(1 / (1 - 0.6), dtype=torch.float32)  # s at step 8 = end: the target
    for name in ("conv1.weight", "conv2.weight", "fc1.weight"):
        keep = seen["masks"][name]
        assert torch.equal(state[name], seen["effective"][name])
        assert torch.equal(state[name], seen["raw"][name] * seen["factor"][name])
        assert torch.equal(seen["factor"][name][keep], scale.expand(int(keep.sum())))
        assert (state[name][~keep] == 0).all()
        assert abs((~keep).float().mean().item() - 0.6) < 0.1  # a Bernoulli draw
    checkpoints.load(packed.checkpoint(job.model_id))  # pie's own loader takes it as well


@pytest.mark.parametrize("method", ["magnitude", "random_independent"])
def test_reference_resumes_between_mask_updates_to_the_same_bytes(packed, method):
    """A state saved at step 5 (updates at 2, 4, 6, 8) holds the raw weights, the masks and
    last_update; the resumed job's model.pt equals an uninterrupted run's, byte for byte."""
    cfg = dataclasses.replace(REFERENCE, save_every=5)
    job = make_job("t", method, 0.6, seed=0)
    path = packed.path / "resume" / f"{job.model_id}.pt"
    stopped_after_first_save(lambda: train_one(packed, cfg, job, 10, "fashion-mnist"))
    state = torch.load(path, weights_only=True)
    assert state["step"] == 5 and state["pruner"]["last_update"] == 4
    assert "fc1.parametrizations.weight.original" in state["model"]  # the raw weights
    assert not state["pruner"]["masks"]["fc1.weight"].all()
    resumed = train_one(packed, cfg, job, 10, "fashion-mnist")
    assert not path.exists()
    weights = (packed.checkpoint(job.model_id) / checkpoints.WEIGHTS).read_bytes()
    whole = train_one(packed, dataclasses.replace(cfg, save_every=0), job, 10, "fashion-mnist")
    assert whole.sha256 == resumed.sha256
    assert (packed.checkpoint(job.model_id) / checkpoints.WEIGHTS).read_bytes() == weights


def test_reference_schedule_without_any_update_is_refused():
    # 4 steps per epoch: begin = end = 2, but the first update needs step >= 0 + 3
    cfg = dataclasses.replace(
        REFERENCE, sparsities=(0.5,), prune_start_epoch=0.5, prune_end_epoch=0.5, prune_frequency=3
    )
    with pytest.raises(PieError, match=r"no mask update would fire: .* \[2, 2\] .* = 3"):
        check_schedule(cfg, 64)
    check_schedule(dataclasses.replace(cfg, prune_frequency=2), 64)  # fires at step 2
    check_schedule(dataclasses.replace(cfg, masked_weights="frozen"), 64)  # pie: at begin


REFERENCE_RANK = """
import sys
import torch
import torch.distributed as dist
import torch.nn.functional as F
from pie.models import prunable_weights
from train.pruning import ReferencePruner, Schedule
from functools import partial
from pie.distributed import World
from train.recipe import param_groups
from train.trainer import share_masks


def run(rank, store, out):  # rank -1: one process alone, on the whole batch
    if rank >= 0:
        torch.set_num_threads(1)
        dist.init_process_group("gloo", store=dist.FileStore(store, 2), rank=rank, world_size=2)
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(
        nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4)
    )
    generator = torch.Generator().manual_seed(100 + max(rank, 0))  # rank 1: other draws
    schedule = Schedule(0.6, begin_step=1, end_step=5, frequency=2, reference=True)
    share = partial(share_masks, World(rank, 2)) if rank >= 0 else None
    pruner = ReferencePruner(
        model, prunable_weights(model), "random_independent", schedule, generator, share=share
    )
    groups = param_groups(model, 1e-2, "reference")
    opt = torch.optim.SGD(groups, lr=0.5, momentum=0.9, nesterov=True)
    net = nn.parallel.DistributedDataParallel(model) if rank >= 0 else model
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 20, generator=g), torch.randint(0, 4, (16,), generator=g)
    mine = slice(8 * rank, 8 * rank + 8) if rank >= 0 else slice(0, 16)
    for step in range(8):
        pruner.update(step, opt)
        loss = F.cross_entropy(net(x[mine]), y[mine])
        opt.zero_grad()
        loss.backward()
        pruner.mask_gradients()
        opt.step()
    raw = {n: w.detach().clone() for n, w in pruner.weights.items()}
    masks = dict(pruner.masks)
    pruner.finish()
    torch.save({"raw": raw, "masks": masks, "state": model.state_dict()}, out)


if __name__ == "__main__":
    run(int(sys.argv[1]), sys.argv[2], sys.argv[3])
"""


def test_reference_under_ddp_takes_rank_zeros_masks_and_averages_masked_gradients(tmp_path):
    """Two gloo ranks, each half of a global batch of 16, random_independent under "reference"
    with a different generator on rank 1: both ranks end with rank 0's masks, and raw weights and
    checkpoint equal to one process on the whole batch (a model without batch norm)."""
    script = tmp_path / "rank.py"
    script.write_text(REFERENCE_RANK)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    runs = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                str(rank),
                str(tmp_path / "store"),
                str(tmp_path / f"{rank}.pt"),
            ],
            env=env,
            stderr=subprocess.PIPE,
        )
        for rank in (0, 1)
    ]
    alone: dict = {"__name__": "alone"}
    exec(REFERENCE_RANK, alone)
    alone["run"](-1, "", str(tmp_path / "-1.pt"))
    for run in runs:
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err.decode()[-2000:]
    out = {r: torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in (0, 1, -1)}
    for name, mask in out[-1]["masks"].items():
        assert not mask.all()  # pruned
        assert torch.equal(out[0]["masks"][name], mask) and torch.equal(out[1]["masks"][name], mask)
        assert torch.equal(out[0]["raw"][name], out[1]["raw"][name])
        assert torch.allclose(out[0]["raw"][name], out[-1]["raw"][name], rtol=1e-5, atol=1e-6)
    for name, value in out[-1]["state"].items():
        assert torch.allclose(out[0]["state"][name], value, rtol=1e-5, atol=1e-6), name
