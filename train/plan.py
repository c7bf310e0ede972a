"""`pie plan` and `pie train --dry-run`: what a training config will do at a given world size,
from the shard indexes (tars never opened) or from image counts, without training or decoding.

Every number is computed by the code the run itself uses: the jobs (`population.jobs`), steps
(`data.steps`), the pruning schedule (`recipe.schedule`), the data path (`data.choose_path`),
each epoch's dealing to ranks and loader workers (`checks.check_run`, the same refusals `pie
train` makes before it starts), the loaders' prefetch (the constants `train.loaders` gives
its DataLoaders), the model's size and activations (`pie.footprint`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from pie import catalog, console, store
from pie.errors import PieError
from pie.footprint import footprint, human
from pie.paths import WorkRoot
from pie.shards import INDEX, shards
from train import data
from train.checks import EpochShape, check_run
from train.config import TrainConfig
from train.data import preprocess, steps
from train.loaders import EVAL_BATCH, PREFETCH_BATCHES, PREFETCH_SAMPLES
from train.population import jobs
from train.pruning import polynomial_sparsity
from train.recipe import schedule
from train.trainer import torch_seed


@dataclass(frozen=True)
class SetSizes:
    """A dataset as the plan sees it: images per shard, and whether on an object store."""

    name: str
    sizes: tuple[int, ...]
    remote: bool
    source: str  # where the sizes come from, for the reader

    @property
    def images(self) -> int:
        return sum(self.sizes)


def from_index(directory: Path, name: str) -> SetSizes:
    """A dataset's shard sizes from its `index.json` alone (no tar opened, no file checked)."""
    if not (directory / INDEX).exists():
        raise PieError(
            f"dataset {name}: no shard index at {directory / INDEX}: ingest it first, or give "
            "the sizes (--train-images, --eval-images, --shard-images)"
        )
    try:
        found = shards(directory)
    except (KeyError, ValueError, TypeError, json.JSONDecodeError) as e:
        raise PieError(f"dataset {name}: {directory / INDEX} is not a shard index ({e})") from None
    remote = any(s.path is None for s in found)
    return SetSizes(name, tuple(s.n for s in found), remote, f"index {directory / INDEX}")


def from_counts(name: str, images: int, shard_images: int, remote_shards: bool) -> SetSizes:
    """`images` in shards of `shard_images`, the last one short (as `pie ingest` packs)."""
    if images < 1 or shard_images < 1:
        raise PieError(f"dataset {name}: image and shard counts must be positive")
    sizes = [shard_images] * (images // shard_images)
    if images % shard_images:
        sizes.append(images % shard_images)
    return SetSizes(name, tuple(sizes), remote_shards, "given on the command line")


@dataclass(frozen=True)
class TrainPlan:
    cfg: TrainConfig
    world_size: int
    train: SetSizes
    eval: SetSizes
    path: str
    n_jobs: int
    steps_per_epoch: int
    total_steps: int
    shapes: list[EpochShape]
    mask_updates: list[int]  # steps at which the masks change (pruned jobs)
    saves: list[int]  # steps at which a resumable state is written
    lines: list[str]


def plan(
    cfg: TrainConfig,
    train: SetSizes,
    evalset: SetSizes,
    world_size: int,
    classes: int,
    classes_from: str = "the database",
) -> TrainPlan:
    """The plan of `cfg` on `world_size` ranks for a label space of `classes`; a config that
    cannot run to its end is a PieError (one line), as `pie train` refuses it."""
    pre = preprocess(cfg)
    path = data.choose_path(cfg.data, train.images, pre, train.remote)
    population = jobs(cfg)
    seed = torch_seed(cfg.experiment, population[0]) if population else 0
    shapes = check_run(cfg, list(train.sizes), path, world_size, seed)
    per_epoch, total = steps(cfg, train.images)
    sched = schedule(cfg, 1.0, per_epoch)
    pruned = any(s > 0 for s in cfg.sparsities)
    # the steps at which masks change, by the schedule's own rule (frozen or reference)
    updates = [s for s in sched.update_steps() if s < total] if pruned else []
    saves = list(range(cfg.save_every, total, cfg.save_every)) if cfg.save_every else []
    per_rank = cfg.batch_size // world_size
    n = train.images
    out = [
        f"train plan: experiment {cfg.experiment}, {world_size} ranks (processes, one GPU each), "
        f"{cfg.loader_workers} loader workers per rank",
        f"  training set    {described(train)}",
        f"  evaluation set  {described(evalset)}",
        f"  model           {cfg.arch}, {cfg.channels}x{cfg.image_size}x{cfg.image_size} inputs, "
        f"{classes:,} classes ({classes_from}), {cfg.precision}",
        f"  data path       {path} (train.data = {cfg.data}; {PATHS[path]})",
        f"  jobs            {len(population)} models: {population_text(cfg)}; "
        + (
            f"one after another, each on all {world_size} ranks"
            if world_size > 1
            else f"{cfg.workers} side by side (train.workers)"
        ),
        f"  global batch    {cfg.batch_size:,} = {world_size} ranks x {per_rank:,} images "
        "(the per-rank batch)",
        f"  steps           {per_epoch:,} per epoch = {n:,} // {cfg.batch_size:,}; "
        f"{total:,} per job = round({cfg.epochs:g} epochs x {per_epoch:,}); {len(shapes)} epochs"
        + (f", the last one of {shapes[-1].steps:,} steps" if shapes[-1].steps < per_epoch else ""),
        f"  left out        {n - per_epoch * cfg.batch_size:,} images an epoch = {n:,} - "
        f"{per_epoch:,} x {cfg.batch_size:,} (a different few each epoch)",
        f"  quota           {per_epoch * per_rank:,} images per rank per full epoch = "
        f"{per_epoch:,} steps x {per_rank:,}",
        "  epochs          every epoch checked, epochs of the same shape folded into a range"
        + (" (dealt with job 0's data seed)" if path == "stream-remote" else ""),
        *epoch_table(shapes, path),
        f"  mask updates    {mask_text(cfg, updates, per_epoch, pruned)}",
        f"  resume          {resume_text(cfg, saves)}",
    ]
    out += resources(cfg, train, evalset, path, world_size, len(population), classes)
    return TrainPlan(
        cfg, world_size, train, evalset, path, len(population), per_epoch, total, shapes,
        updates, saves, out,
    )  # fmt: skip


PATHS = {
    "memory": "every rank decodes the whole set into its RAM once, batches are taken by position",
    "stream": "loader workers read samples by position from local shards",
    "stream-remote": "shards on an object store, dealt by sample count: each rank reads whole "
    "shards and at most a partial one at each end, sequentially",
}


def described(s: SetSizes) -> str:
    last = f", the last {s.sizes[-1]:,}" if len(s.sizes) > 1 and s.sizes[-1] != s.sizes[0] else ""
    where = "on an object store" if s.remote else "local"
    return (
        f"{s.name}: {s.images:,} images in {len(s.sizes):,} shards of {s.sizes[0]:,}{last}, "
        f"{where} ({s.source})"
    )


def population_text(cfg: TrainConfig) -> str:
    levels = sorted(s for s in cfg.sparsities if s > 0)
    parts = [f"dense x {cfg.seeds} seeds"] if 0.0 in cfg.sparsities else []
    if levels:
        parts.append(
            f"{len(cfg.methods)} methods ({', '.join(cfg.methods)}) x {len(levels)} sparsities "
            f"({', '.join(f'{s:g}' for s in levels)}) x {cfg.seeds} seeds"
        )
    return " + ".join(parts)


def epoch_table(shapes: list[EpochShape], path: str) -> list[str]:
    """Rows of consecutive epochs of one shape: steps, images per rank (delivered, and held by
    the dealing), and on an object store the shards each rank opens and each loader worker's
    images (min-max over ranks and folded epochs)."""
    remote_path = path == "stream-remote"
    head = f"    {'epochs':<10}{'steps':>7}{'per rank':>10}{'delivered':>12}{'held':>12}"
    if remote_path:
        head += f"{'shards/rank':>14}{'per worker':>16}"
    rows = [head]
    groups: list[list[EpochShape]] = []
    for s in shapes:
        key = (s.steps, s.per_rank, s.held, sorted(set(s.workers)))
        if groups and groups[-1][0].epoch + len(groups[-1]) == s.epoch:
            last = groups[-1][0]
            if (last.steps, last.per_rank, last.held, sorted(set(last.workers))) == key:
                groups[-1].append(s)
                continue
        groups.append([s])
    for g in groups:
        first, end = g[0], g[-1]
        epochs = f"{first.epoch}" if first is end else f"{first.epoch}-{end.epoch}"
        held = span(first.held)
        row = f"    {epochs:<10}{first.steps:>7,}{first.per_rank:>10,}{first.quota:>12,}{held:>12}"
        if remote_path:
            opened = span([n for s in g for n in s.shards])
            row += f"{opened:>14}{span(first.workers):>16}"
        rows.append(row)
    return rows


def span(values) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:,}" if lo == hi else f"{lo:,}-{hi:,}"


def mask_text(cfg: TrainConfig, updates: list[int], per_epoch: int, pruned: bool) -> str:
    if not pruned:
        return "none (no sparsity above 0)"
    shown = ", ".join(f"{s:,}" for s in updates[:3])
    if len(updates) > 4:
        shown += f", ..., {updates[-1]:,}"
    elif len(updates) == 4:
        shown += f", {updates[-1]:,}"
    begin = round(cfg.prune_start_epoch * per_epoch)
    end = round(cfg.prune_end_epoch * per_epoch)
    head = f"{len(updates)} per pruned job, at steps {shown}: "
    if cfg.masked_weights == "reference":
        final = polynomial_sparsity(updates[-1], 1.0, begin, end)
        return head + (
            f"when last_update + {cfg.prune_frequency:,} <= step within [round("
            f"{cfg.prune_start_epoch:g} x {per_epoch:,}), round({cfg.prune_end_epoch:g} x "
            f"{per_epoch:,})] = [{begin:,}, {end:,}] (masked_weights = reference, last_update "
            f"from 0); the last, {updates[-1]:,}, brings {final:.5f} of the target sparsity"
        )
    return head + (
        f"from round({cfg.prune_start_epoch:g} x {per_epoch:,}) every "
        f"{cfg.prune_frequency:,} steps, and at round({cfg.prune_end_epoch:g} x {per_epoch:,}) "
        f"= {updates[-1]:,} with the target sparsity"
    )


def resume_text(cfg: TrainConfig, saves: list[int]) -> str:
    if not cfg.save_every:
        return "no resumable states (save_every = 0): a killed job starts over"
    if not saves:
        return f"save_every = {cfg.save_every:,}: no state, the job is shorter"
    return (
        f"a state every {cfg.save_every:,} steps (save_every): {len(saves)} per job, at steps "
        f"{saves[0]:,} ... {saves[-1]:,}, each replacing the last; a kill loses at most "
        f"{cfg.save_every - 1:,} steps"
    )


# -- resources --------------------------------------------------------------------------------


def resources(
    cfg: TrainConfig,
    train: SetSizes,
    evalset: SetSizes,
    path: str,
    world: int,
    n_jobs: int,
    classes: int,
) -> list[str]:
    """GPU memory per process, /dev/shm and host RAM the loaders take, disk for checkpoints
    and resume states."""
    bf16 = cfg.precision == "bf16"
    fp = footprint(cfg.arch, classes, cfg.channels, cfg.image_size, bf16,
                   cfg.prune_layers, tuple(cfg.keep_layers))  # fmt: skip
    per_rank = cfg.batch_size // world
    params = fp.parameter_bytes
    ddp = params if world > 1 else 0
    pruner = 6 * fp.prunable if any(s > 0 for s in cfg.sparsities) else 0
    activations = per_rank * fp.train_activation_bytes
    gpu = params * 3 + ddp + pruner + activations + fp.buffer_bytes
    side = 1 if world > 1 else cfg.workers
    image = cfg.channels * cfg.image_size**2  # uint8 pixels of one decoded image
    out = [
        f"  GPU memory      per training process, estimated: {human(gpu)} = weights "
        f"{human(params)} ({fp.parameters:,} parameters x 4 bytes) + gradients {human(params)} + "
        f"momentum {human(params)} + batch-norm buffers {human(fp.buffer_bytes)}"
        + (f" + DDP gradient buckets {human(ddp)}" if ddp else "")
        + (
            f" + pruner {human(pruner)} (2 mask bytes and a 4-byte kept value per prunable "
            f"weight, {fp.prunable:,})"
            if pruner
            else ""
        )
        + f" + activations {human(activations)} ({per_rank:,} images x "
        f"{human(fp.train_activation_bytes)} saved for backward at {cfg.precision}, measured by "
        "pie.footprint); CUDA context and workspaces come on top"
        + (f"; {side} such processes share the device (train.workers)" if side > 1 else ""),
    ]
    workers = cfg.loader_workers
    if path == "memory":
        out.append(
            f"  host RAM        {human(train.images * image)} per process for the decoded "
            f"training set ({train.images:,} x {image:,} bytes), {human(evalset.images * image)} "
            f"for the evaluation set; no loader workers, no /dev/shm"
        )
    else:
        fetch = (PREFETCH_BATCHES if path == "stream" else PREFETCH_SAMPLES) if workers else 0
        if path == "stream":
            batch, what = fetch * per_rank, f"{fetch} batches of {per_rank:,}"
        else:
            batch, what = fetch, f"{fetch} images"
        shm = workers * batch * image
        eval_fetch = (
            fetch * EVAL_BATCH if path == "stream" else fetch
        )  # evaluation: batches of 250 locally, single images from an object store
        out.append(
            f"  /dev/shm        {human(shm)} per rank for training = {workers} loader workers x "
            f"{what} x {image:,} bytes (uint8 {cfg.channels}x{cfg.image_size}x{cfg.image_size}), "
            f"{human(shm * world)} for {world} ranks on one machine; evaluation "
            f"{human(workers * eval_fetch * image)} per rank"
        )
    state = fp.state_dict_bytes
    resume_state = state + params + pruner
    out.append(
        f"  disk            checkpoints {human(n_jobs * state)} = {n_jobs} models x "
        f"{human(state)} (state_dict: weights and buffers, fp32)"
        + (
            f"; resume states {human(side * resume_state)} = {side} x {human(resume_state)} "
            "(weights, buffers, momentum, pruner state), one per job in training, deleted "
            "once its checkpoint is written"
            if cfg.save_every
            else ""
        )
    )
    return out


def classes_in(root: WorkRoot, dataset: str) -> int | None:
    """The class count of `dataset`'s label space from the work root's database (read only);
    None when the root has no database or the dataset is not registered there."""
    if not root.db.exists():
        return None
    with store.connect(root, read_only=True) as con:
        try:
            space = catalog.dataset(con, dataset)["label_space"]
        except PieError:
            return None
        return catalog.n_classes(con, space)


def dry_run(root: WorkRoot, cfg: TrainConfig) -> None:
    """`pie train --dry-run`: the plan of `cfg` over the work root's shard indexes, on the
    world size torchrun gives (WORLD_SIZE; 1 without it), printed by rank 0."""
    train = from_index(root.shards(cfg.dataset), cfg.dataset)
    evalset = from_index(root.shards(cfg.eval_dataset), cfg.eval_dataset)
    classes = classes_in(root, cfg.dataset)
    if classes is None:
        raise PieError(
            f"dataset {cfg.dataset} is not in the database of {root.path}: ingest it, or use "
            "`pie plan --classes N`"
        )
    lines = plan(cfg, train, evalset, int(os.environ.get("WORLD_SIZE", "1")), classes).lines
    if int(os.environ.get("RANK", "0")) == 0:
        for line in lines:
            console.out.print(line, markup=False, soft_wrap=True)
