"""The checks that refuse a training config which cannot run to its end, before anything
starts; `pie train` (`population.find_jobs`, rank 0) and `pie plan` run these same functions, so
the plan cannot promise what the run refuses: the global batch splits over the ranks
(`recipe.check_world`), the pruning schedule ends on a step that runs
(`recipe.check_schedule`), and every rank fills its quota of images in every epoch, as its
data path deals them (`epoch_shapes`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pie.distributed import World
from pie.errors import PieError
from train import data, remote
from train.config import TrainConfig
from train.data import steps
from train.recipe import check_schedule, check_world


@dataclass(frozen=True)
class EpochShape:
    """One epoch of a job as its data path deals it: per rank, the images it holds for the
    epoch and (streaming from an object store) the shards it opens and the images each of its
    loader workers reads."""

    epoch: int
    steps: int  # steps run in this epoch (the last epoch may stop early)
    per_rank: int  # images per rank per step (batch_size / world size)
    held: tuple[int, ...]  # per rank: images its data path holds for the epoch
    shards: tuple[int, ...] = ()  # per rank: shards it opens (stream-remote)
    workers: tuple[int, ...] = ()  # per loader worker of every rank: images it reads

    @property
    def quota(self) -> int:
        """Images each rank delivers this epoch."""
        return self.steps * self.per_rank


def epoch_shapes(
    cfg: TrainConfig, sizes: list[int], path: str, world_size: int, seed: int
) -> list[EpochShape]:
    """Every epoch of a job of `cfg` over shards of `sizes` images, on `world_size` ranks, as
    `path` deals it (the loaders' own dealing: `data.rank_positions` for memory and local
    streams, `remote.deal` for an object store); a rank that cannot fill its quota in some
    epoch is a PieError. The images a rank holds do not depend on `seed` (each rank's share is
    a fixed count of the epoch's order); which shards it opens on an object store does."""
    n = sum(sizes)
    steps_per_epoch, total = steps(cfg, n)
    per_rank = cfg.batch_size // world_size
    out = []
    for epoch in range(math.ceil(total / steps_per_epoch)):
        run = min(steps_per_epoch, total - epoch * steps_per_epoch)
        if path == "stream-remote":
            dealt = remote.deal(
                sizes, seed, epoch, world_size, cfg.loader_workers, steps_per_epoch * per_rank
            )
            held = tuple(sum(remote.samples(rank)) for rank in dealt)
            shards = tuple(len({p.shard for w in rank for p in w}) for rank in dealt)
            workers = tuple(k for rank in dealt for k in remote.samples(rank))
            shape = EpochShape(epoch, run, per_rank, held, shards, workers)
        else:
            held = tuple(
                local_held(cfg.batch_size, r, world_size, run, n) for r in range(world_size)
            )
            shape = EpochShape(epoch, run, per_rank, held)
        short = [r for r, h in enumerate(shape.held) if h < shape.quota]
        if short:
            raise PieError(
                f"epoch {epoch}: rank {short[0]} of {world_size} holds {shape.held[short[0]]} "
                f"images, its {run} steps of {per_rank} need {shape.quota} ({n} images, global "
                f"batch {cfg.batch_size}): lower batch_size or use fewer ranks"
            )
        out.append(shape)
    return out


def local_held(batch: int, rank: int, world_size: int, run: int, n: int) -> int:
    """Images of a set of `n` that rank `rank` finds at its positions (`data.rank_positions`)
    over `run` steps of one epoch's order."""
    first = data.rank_positions(0, batch, rank, world_size)
    stride = data.rank_positions(1, batch, rank, world_size).start - first.start
    starts = first.start + stride * np.arange(run)
    return int(np.clip(n - starts, 0, len(first)).sum())


def check_run(
    cfg: TrainConfig, sizes: list[int], path: str, world_size: int, seed: int
) -> list[EpochShape]:
    """Every check that refuses a config which cannot run to its end, before anything starts
    (`pie train` and `pie plan` alike): the global batch splits over the ranks, the pruning
    schedule ends on a step that runs, every rank fills its quota in every epoch (dealt with
    `seed`, the first job's, see `epoch_shapes`). Returns the epochs' shapes."""
    check_world(cfg, World(0, world_size))
    check_schedule(cfg, sum(sizes))
    return epoch_shapes(cfg, sizes, path, world_size, seed)
