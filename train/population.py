"""`pie train`: the config's population, dense and pruned, from one command.

Jobs are (method, sparsity, seed); sparsity 0 is the dense population (method 'dense'),
trained once and shared by every method. Before anything trains:
- what killed runs left in `checkpoints/` (`.partial`, `.old`) and `resume/` is cleared;
- the training and evaluation shards are checked against their index (missing or truncated
  shards are refused), GPU-only options on a CPU run are refused, the global batch must divide
  by the number of processes, and `init_from` must hold weights of this arch and class count;
- a config that cannot run to its end is refused (`train.checks`, which `pie plan`
  runs too): a pruning schedule ending after the last step (its pruned models would end below
  target), or a rank that cannot fill its quota of images in some epoch;
- a job whose checkpoint is on disk is not trained again, but only if that checkpoint was
  made with the same settings: any difference in the resolved config, besides how the run
  executes (`EXECUTION`) and which jobs exist (`POPULATION`), is refused with one line.
  A checkpoint without a `models` row (the run died between the two) is registered; one
  replaced on disk since it was registered is checked (`checkpoints.reconcile`: weights that
  do not match their sidecar are refused in one line, a consistent pair with a new sha256 is
  registered again, so that `pie infer` evaluates it again).
- a job with a resumable state (`train.resume`, written every `save_every` steps) continues
  from it.
In one process, worker processes (`workers`) train jobs side by side and write checkpoints;
this process alone writes the database. Under torchrun every process trains each job
together (DistributedDataParallel), one job after another; rank 0 alone reads and writes the
database and writes checkpoints, and tells the other ranks what to train.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pie import catalog, checkpoints, console, distributed, store
from pie.config import differences, to_dict
from pie.distributed import World
from pie.errors import PieError
from pie.images import Preprocess
from pie.models import create, resolve_device
from pie.parallel import Workers
from pie.paths import WorkRoot
from train import data, finetune, resume
from train.checks import check_run
from train.config import EXECUTION, POPULATION, TrainConfig
from train.recipe import check_device, check_world, determinism
from train.trainer import Job, make_job, torch_seed, train_one


def jobs(cfg: TrainConfig) -> list[Job]:
    out = []
    if 0.0 in cfg.sparsities:
        out += [make_job(cfg.experiment, "dense", 0.0, seed) for seed in range(cfg.seeds)]
    for method in cfg.methods:
        for sparsity in sorted(s for s in cfg.sparsities if s > 0):
            out += [make_job(cfg.experiment, method, sparsity, seed) for seed in range(cfg.seeds)]
    return out


def check_same_settings(directory: Path, stored: dict[str, Any], cfg: TrainConfig) -> None:
    """Refuse to reuse a checkpoint trained with settings other than `cfg`'s."""
    differ = differences(stored, to_dict(cfg), EXECUTION + POPULATION)
    if differ:
        raise PieError(
            f"checkpoint {directory.name} was trained with {differ[0]}, this run asks"
            f" {differ[1]}: use a new experiment name or delete {directory}"
        )


@dataclass(frozen=True)
class PopulationJobs:
    """What rank 0 found in the database and on disk: the jobs to train and how to label them."""

    pending: list[Job]
    n_existing: int
    n_replaced: int  # existing checkpoints found replaced on disk, registered again
    n_classes: int
    label_space: str
    eval_pre: Preprocess  # the model's preprocessing for the eval set's images
    data_path: str


def find_jobs(con, root: WorkRoot, cfg: TrainConfig, world: World) -> PopulationJobs:
    """Every check that can fail before training, then the pending jobs (rank 0 only)."""
    train_set = catalog.dataset(con, cfg.dataset)
    eval_set = catalog.dataset(con, cfg.eval_dataset)
    if train_set["split"] != "train":
        raise PieError(f"dataset {cfg.dataset!r} is an evaluation set, not a training set")
    shards = data.shard_set(root.shards(cfg.dataset), cfg.dataset)
    data.shard_set(root.shards(cfg.eval_dataset), cfg.eval_dataset)
    space = train_set["label_space"]
    n_classes = catalog.n_classes(con, space)
    model = create(cfg.arch, n_classes, cfg.channels, cfg.image_size)  # fail here, not later
    if cfg.init_from:
        finetune.load_dense(model, cfg.init_from, cfg.arch, n_classes)
    path = data.choose_path(cfg.data, shards.n_images, data.preprocess(cfg), shards.remote)
    sizes = [s.n for s in shards.shards]
    first = jobs(cfg)[:1]
    seed = torch_seed(cfg.experiment, first[0]) if first else 0
    check_run(cfg, sizes, path, world.size, seed)
    registered = {m.model_id: m.sha256 for m in catalog.model_rows(con)}
    cleared = checkpoints.clean(root.checkpoints)  # we hold the writer lock: nobody else writes
    resume.clean(root)
    if cleared:
        console.say(f"train: cleared {len(cleared)} leftovers of killed runs in checkpoints/")

    pending, existing = [], []
    for job in jobs(cfg):
        directory = root.checkpoint(job.model_id)
        if (directory / checkpoints.SIDECAR).exists():
            sidecar = checkpoints.read_sidecar(directory)
            check_same_settings(directory, sidecar.config, cfg)
            existing.append(sidecar)
        else:
            pending.append(job)
    replaced = 0
    for sidecar in existing:
        before = registered.get(sidecar.model_id)
        _, changed = checkpoints.reconcile(con, root, sidecar.model_id, before)
        replaced += changed and before is not None
    eval_pre = data.preprocess(cfg).for_dataset(eval_set)
    return PopulationJobs(pending, len(existing), replaced, n_classes, space, eval_pre, path)


def main(root: WorkRoot, cfg: TrainConfig) -> list[str]:
    """Train every job of the population that has no checkpoint; returns the model ids trained
    (on rank 0; an empty list on the other ranks)."""
    started = datetime.now()
    device = resolve_device(cfg.device)
    determinism(cfg, device)  # before CUDA starts (CUBLAS_WORKSPACE_CONFIG)
    world = distributed.init(device)
    check_world(cfg, world)
    check_device(cfg, device)
    if not world.is_main:
        return follow(root, cfg, world)
    # The work root's one writer for the whole run (`store.writer_lock`); the database itself is
    # opened only for short steps (planning, each model's row), so readers are never locked out.
    with store.writer_lock(root, "pie train"):
        with store.connect(root) as con:
            try:
                found = find_jobs(con, root, cfg, world)
            except PieError as e:
                distributed.broadcast_object(world, str(e))
                raise
        distributed.broadcast_object(world, found)
        resumed = sum(resume.state_path(root, j.model_id).exists() for j in found.pending)
        how = f"{found.data_path} data"
        if world.distributed:
            how += f", {world.size} processes per model"
            if cfg.workers > 1:
                how += " (workers applies to one-process runs only)"
        note = f", {resumed} resumed" if resumed else ""
        console.say(f"train: {len(found.pending)} models to train{note} ({how})")

        trained: list[checkpoints.Sidecar] = []
        tasks = [
            (root, cfg, job, found.n_classes, found.label_space, found.eval_pre)
            for job in found.pending
        ]
        with (
            Workers(1 if world.distributed else cfg.workers) as workers,
            console.progress(f"training {len(tasks)} models", len(tasks)) as advance,
        ):
            for _, sidecar in workers.unordered(train_one, tasks):
                with store.connect(root) as con:
                    checkpoints.register(con, root, sidecar)
                trained.append(sidecar)
                advance(1)

        summary = f"train: {len(trained)} models trained, {found.n_existing} already there"
        if found.n_replaced:
            summary += (
                f" ({found.n_replaced} replaced on disk since registered: registered again,"
                " `pie infer` evaluates them again)"
            )
        if trained:
            top1 = sum(s.test_top1 for s in trained) / len(trained)
            summary += f" (mean test top-1 of the new ones {top1:.4f})"
            with store.connect(root) as con:
                store.record_run(con, "train", cfg.experiment, to_dict(cfg), summary, started)
    console.say(summary + f"; checkpoints in {root.checkpoints}")
    return sorted(s.model_id for s in trained)


def follow(root: WorkRoot, cfg: TrainConfig, world: World) -> list[str]:
    """A rank other than 0: train what rank 0 planned, alongside it; never open the database."""
    found = distributed.broadcast_object(world, None)
    if isinstance(found, str):
        raise PieError(found)
    for job in found.pending:
        train_one(root, cfg, job, found.n_classes, found.label_space, found.eval_pre)
    return []
