"""Resume inside the pruning schedule: a job stopped right after a state saved between two
mask updates, mid-epoch, then run again, ends with the `model.pt` bytes of the uninterrupted
job, for every pruning method and for both input paths.

Each uninterrupted reference is trained once per module; each case then trains its job until
the first state is written (`train.resume.save` raises once it is on disk), and again from it.
"""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch
from conftest import TINY_TRAIN, pack_tiny, stopped_after_first_save

from pie.paths import WorkRoot, open_root
from train import trainer
from train.config import METHODS
from train.resume import state_path
from train.trainer import make_job, schedule, steps, train_one

# 64 images in batches of 16: 4 steps per epoch, 12 steps; masks update at steps 2 (to
# sparsity 0: the polynomial starts there), 5 (0.4375) and 8 (0.5) (start 0.5 epoch, end 2
# epochs, every 3 steps); states are saved every 6 steps
CFG = dataclasses.replace(TINY_TRAIN, prune_frequency=3, save_every=6)
UPDATES = [2, 5, 8]
STOP_AT = 6  # the first state: step 6 runs next, mid-epoch 1, between the updates 5 and 8
PATHS = {"memory": {"data": "memory"}, "stream": {"data": "stream", "loader_workers": 1}}


def config(path: str) -> trainer.TrainConfig:
    return dataclasses.replace(CFG, **PATHS[path])


def test_the_schedule_puts_the_state_strictly_between_two_updates():
    per_epoch, total = steps(CFG, 64)
    plan = schedule(CFG, 0.5, per_epoch)
    assert (per_epoch, total) == (4, 12)
    assert [t for t in range(total) if plan.is_update(t)] == UPDATES
    assert plan.sparsity_at(5) == pytest.approx(0.5 * (1 - 0.5**3))  # masks in force at 6
    assert CFG.save_every == STOP_AT and UPDATES[1] < STOP_AT < UPDATES[2]
    assert STOP_AT % per_epoch != 0  # inside an epoch, not at its start


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory) -> WorkRoot:
    base = tmp_path_factory.mktemp("resume")
    return pack_tiny(open_root(base / "work"), base)


def copy_of(root: WorkRoot, where) -> WorkRoot:
    shutil.copytree(root.path, where)
    return open_root(where)


@pytest.fixture(scope="module")
def uninterrupted(clean_root, tmp_path_factory) -> dict[tuple[str, str], bytes]:
    """model.pt of each (method, input path) job trained without a stop (nor states)."""
    root = copy_of(clean_root, tmp_path_factory.mktemp("reference") / "work")
    out = {}
    for method in METHODS:
        for path in PATHS:
            job = make_job("t", method, 0.5, 0)
            cfg = dataclasses.replace(config(path), save_every=0)
            sidecar = train_one(root, cfg, job, 10, "fashion-mnist")
            out[method, path] = (sidecar.directory(root) / "model.pt").read_bytes()
    return out


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("method", METHODS)
def test_resumed_between_mask_updates_ends_byte_identical(
    method, path, clean_root, uninterrupted, tmp_path
):
    root = copy_of(clean_root, tmp_path / "work")
    job, cfg = make_job("t", method, 0.5, 0), config(path)
    stopped_after_first_save(lambda: train_one(root, cfg, job, 10, "fashion-mnist"))
    state = torch.load(state_path(root, job.model_id), weights_only=True)
    assert state["step"] == STOP_AT
    masked = sum(int((~m).sum()) for m in state["pruner"]["masks"].values())
    assert masked > 0  # saved with masks in force (from the update at step 5)
    assert not root.checkpoint(job.model_id).exists()

    sidecar = train_one(root, cfg, job, 10, "fashion-mnist")
    assert (sidecar.directory(root) / "model.pt").read_bytes() == uninterrupted[method, path]
    assert not state_path(root, job.model_id).exists()
