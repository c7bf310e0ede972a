"""`pie train`: the config's population, dense and pruned, from one command.

Jobs are (method, sparsity, seed); sparsity 0 is the dense population (method 'dense'),
trained once and shared by every method. Before anything trains:
- what killed runs left in `checkpoints/` (`.partial`, `.old`) is cleared;
- a config whose pruning schedule ends after the last step is refused (its pruned models
  would end below target);
- a job whose checkpoint is on disk is not trained again, but only if that checkpoint was
  made with the same settings: any difference in the resolved config, besides how the run
  executes (`EXECUTION`) and which jobs exist (`POPULATION`), is refused with one line.
  A checkpoint without a `models` row (the run died between the two) is registered.
Worker processes train and write checkpoints; this process alone writes the database.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from pie import catalog, checkpoints, console, store
from pie.config import to_dict
from pie.errors import PieError
from pie.images import load_cached
from pie.models import create
from pie.parallel import run_tasks
from pie.paths import WorkRoot
from train.config import EXECUTION, POPULATION, TrainConfig
from train.trainer import Job, check_schedule, make_job, preprocess, train_one


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
    asked = json.loads(json.dumps(to_dict(cfg)))  # as the sidecar stores it
    missing = "(unset)"
    keys = sorted((set(asked) | set(stored)) - set(EXECUTION) - set(POPULATION))
    differ = [k for k in keys if stored.get(k, missing) != asked.get(k, missing)]
    if differ:

        def spell(values: dict[str, Any]) -> str:
            return ", ".join(f"{k}={json.dumps(values.get(k, missing))}" for k in differ)

        raise PieError(
            f"checkpoint {directory.name} was trained with {spell(stored)}, this run asks "
            f"{spell(asked)}: use a new experiment name or delete {directory}"
        )


def main(root: WorkRoot, cfg: TrainConfig) -> list[str]:
    """Train every job of the population that has no checkpoint; returns the model ids trained."""
    started = datetime.now()
    with store.connect(root) as con:
        train_set = catalog.dataset(con, cfg.dataset)
        catalog.dataset(con, cfg.eval_dataset)
        if train_set["split"] != "train":
            raise PieError(f"dataset {cfg.dataset!r} is an evaluation set, not a training set")
        space = train_set["label_space"]
        n_classes = catalog.n_classes(con, space)
        create(cfg.arch, n_classes, cfg.channels, cfg.image_size)  # fail here, not in a worker
        check_schedule(cfg, train_set["n_images"])
        registered = catalog.model_ids(con)
        cleared = checkpoints.clean(root.checkpoints)  # we hold the write lock: nobody else writes
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
        for sidecar in existing:
            if sidecar.model_id not in registered:
                catalog.register_model(con, sidecar)

        # decode the data once here, so workers only memory-map it
        with console.progress("decoding training data", None) as advance:
            for dataset in (cfg.dataset, cfg.eval_dataset):
                load_cached(root, dataset, preprocess(cfg), advance)

        trained: list[checkpoints.Sidecar] = []
        tasks = [(root, cfg, job, n_classes, space) for job in pending]
        with console.progress(f"training {len(pending)} models", len(pending)) as advance:
            for sidecar in run_tasks(train_one, tasks, cfg.workers):
                catalog.register_model(con, sidecar)
                trained.append(sidecar)
                advance(1)

        summary = f"train: {len(trained)} models trained, {len(existing)} already there"
        if trained:
            top1 = sum(s.test_top1 for s in trained) / len(trained)
            summary += f" (mean test top-1 of the new ones {top1:.4f})"
            store.record_run(con, "train", cfg.experiment, to_dict(cfg), summary, started)
    console.say(summary + f"; checkpoints in {root.checkpoints}")
    return sorted(s.model_id for s in trained)
