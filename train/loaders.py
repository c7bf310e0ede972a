"""What a job's loops iterate, the data path chosen once per dataset (as `load_data` does in
torchvision's classification reference): the training loop and the evaluation take these
and only iterate.

`load_data` gives a job's training and evaluation sets, each read by the path `train.data`
chooses for it (`data.choose_path`): `InMemory`, `Streamed` (local shards, by position) or
`Remote` (shards on an object store, dealt by `train.remote`). Each has
- `batches(start, stop)`: this rank's (uint8 images, labels) of global steps [start, stop),
  augmented: the same batches on every path, and for a run resumed at `start` the batches of
  the uninterrupted run (`train.data`, `train.remote`);
- `evaluation()`: this rank's share of the set, not augmented: every image once over the ranks.
Both read nothing until iterated. Their DataLoaders run `train.loader_workers` processes; a
user error in one comes back as one line (`batches`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import torch

from pie.distributed import World
from pie.errors import PieError
from pie.images import Preprocess
from pie.paths import WorkRoot
from train import augment, data, remote
from train.config import TrainConfig

Batch = tuple[torch.Tensor, torch.Tensor]
EVAL_BATCH = 250  # images per evaluation batch read from shards
MEMORY_EVAL_BATCH = 1000  # images per evaluation batch of a set held in memory
PREFETCH_BATCHES = 4  # batches each loader worker keeps ready (local shards)
PREFETCH_SAMPLES = 64  # decoded samples each loader worker keeps ready (an object store)
Loader = torch.utils.data.DataLoader


@dataclass(frozen=True)
class Input(ABC):
    """A dataset as one rank of a job reads it (the module's rule)."""

    path: ClassVar[str]  # the sidecar's `data`
    shards: data.ShardSet
    pre: Preprocess  # how its images become model inputs
    policy: str  # training augmentation (`train.augment`)
    seed: int  # of the data order and the augmentation draws
    world: World
    batch: int  # the global batch
    steps_per_epoch: int  # full global batches an epoch (`data.steps`)
    workers: int  # DataLoader worker processes
    pin: bool

    @property
    def per_rank(self) -> int:
        return self.batch // self.world.size

    @abstractmethod
    def batches(self, start: int, stop: int) -> Iterator[Batch]:
        """This rank's batches of global steps [start, stop), augmented."""

    @abstractmethod
    def evaluation(self) -> Iterator[Batch]:
        """This rank's share of the set, not augmented: every image once over the ranks."""

    def loader(self, dataset: torch.utils.data.Dataset, batch: int | None, sampler=None) -> Loader:
        """`dataset` read by `workers` processes: batches of `batch` of `sampler`'s items, or
        (batch None, an object store's epoch) single samples."""
        prefetch = PREFETCH_BATCHES if batch else PREFETCH_SAMPLES
        return Loader(
            dataset, batch_size=batch, sampler=sampler, num_workers=self.workers,
            pin_memory=self.pin, prefetch_factor=prefetch if self.workers else None,
        )  # fmt: skip

    def sampler(self, start: int, stop: int) -> data.RunSampler:
        """This rank's samples of steps [start, stop) in the epochs' orders (local shards)."""
        n, rank, size = self.shards.n_images, self.world.rank, self.world.size
        per_epoch = self.steps_per_epoch
        return data.RunSampler(n, self.seed, self.batch, rank, size, per_epoch, start, stop)


class InMemory(Input):
    """The whole set decoded into this process's RAM once (`data.in_memory`), batches cut from
    it and augmented as batches (`augment.augment_batch`)."""

    path = "memory"

    def batches(self, start: int, stop: int) -> Iterator[Batch]:
        pixels, labels = data.in_memory(self.shards, self.pre)
        for epoch, positions, idx in self.sampler(start, stop).steps():
            x = torch.from_numpy(pixels[idx])
            x = augment.augment_batch(x, self.policy, self.seed, epoch, positions)
            yield x, torch.from_numpy(labels[idx])

    def evaluation(self) -> Iterator[Batch]:
        pixels, labels = data.in_memory(self.shards, self.pre)
        mine = range(self.world.rank, self.shards.n_images, self.world.size)
        for i in range(0, len(mine), MEMORY_EVAL_BATCH):
            part = mine[i : i + MEMORY_EVAL_BATCH]
            yield torch.from_numpy(pixels[part]), torch.from_numpy(labels[part])


class Streamed(Input):
    """Local shards read by position in loader workers (`data.ShardSamples`); one DataLoader
    serves every step from `start` to `stop`, so its workers persist across epochs."""

    path = "stream"

    def batches(self, start: int, stop: int) -> Iterator[Batch]:
        dataset = data.ShardSamples(self.shards, self.pre, self.policy, self.seed)
        yield from batches(self.loader(dataset, self.per_rank, self.sampler(start, stop)))

    def evaluation(self) -> Iterator[Batch]:
        dataset = data.ShardSamples(self.shards, self.pre, None)
        mine = [(i, 0, 0) for i in range(self.world.rank, self.shards.n_images, self.world.size)]
        yield from batches(self.loader(dataset, EVAL_BATCH, mine))


class Remote(Input):
    """Shards on an object store, read in sequence: one loader per epoch over the shards dealt
    to this rank (`remote.RemoteEpoch`); resumed mid-epoch, the batches already taken are
    passed over."""

    path = "stream-remote"

    def batches(self, start: int, stop: int) -> Iterator[Batch]:
        per_epoch, per_rank, rank = self.steps_per_epoch, self.per_rank, self.world.rank
        for epoch in range(start // per_epoch, -(-stop // per_epoch)):
            first = max(0, start - epoch * per_epoch)
            last = min(per_epoch, stop - epoch * per_epoch)
            dataset = remote.RemoteEpoch(
                self.shards, self.pre, self.policy, self.seed, epoch, rank, self.world.size,
                quota=per_epoch * per_rank, skip=first * per_rank,
            )  # fmt: skip
            yield from grouped(batches(self.loader(dataset, None)), per_rank, last - first, rank)

    def evaluation(self) -> Iterator[Batch]:
        rank, world = self.world.rank, self.world.size
        dataset = remote.RemoteEpoch(self.shards, self.pre, None, 0, 0, rank, world, None, 0, 1)
        yield from grouped(batches(self.loader(dataset, None)), EVAL_BATCH, None, rank)


PATHS = {kind.path: kind for kind in (InMemory, Streamed, Remote)}


def load(
    cfg: TrainConfig, shards: data.ShardSet, pre: Preprocess, world: World, seed: int, pin: bool
) -> Input:
    """`shards` as this rank reads them, by the path `cfg.data` chooses for the set."""
    kind = PATHS[data.choose_path(cfg.data, shards.n_images, pre, shards.remote)]
    policy = augment.resolve_augment(cfg.augment, cfg.image_size)
    per_epoch, _ = data.steps(cfg, shards.n_images)
    batch, workers = cfg.batch_size, cfg.loader_workers
    return kind(shards, pre, policy, seed, world, batch, per_epoch, workers, pin)


def load_data(
    cfg: TrainConfig, root: WorkRoot, world: World, seed: int, pin: bool, eval_pre: Preprocess
) -> tuple[Input, Input]:
    """A job's training set (`cfg.dataset`, read with `data.preprocess(cfg)`) and evaluation
    set (`cfg.eval_dataset`, read with `eval_pre`, the model's preprocessing for it), their
    shards checked against their indexes (`data.shard_set`)."""
    train = data.shard_set(root.shards(cfg.dataset), cfg.dataset)
    test = data.shard_set(root.shards(cfg.eval_dataset), cfg.eval_dataset)
    return (
        load(cfg, train, data.preprocess(cfg), world, seed, pin),
        load(cfg, test, eval_pre, world, seed, pin),
    )


def batches(loader: Loader) -> Iterator:
    """Iterate a loader; a user error raised in a worker comes back as one line."""
    iterator = iter(loader)
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except PieError as e:  # re-raised by the DataLoader with the worker's traceback
            lines = [line for line in str(e).splitlines() if line.strip()]
            message = lines[-1].split("PieError: ", 1)[-1] if lines else str(e)
            raise PieError(message) from None
        yield item


def grouped(
    samples: Iterator[tuple[torch.Tensor, int]], size: int, count: int | None, rank: int
) -> Iterator[Batch]:
    """`count` batches of `size` samples (None: all, the last one short); fewer samples than
    `count` batches need is a PieError."""
    images: list[torch.Tensor] = []
    labels: list[int] = []
    done = 0
    for x, y in samples:
        if count is not None and done == count:
            return
        images.append(x)
        labels.append(y)
        if len(images) == size:
            yield torch.stack(images), torch.tensor(labels, dtype=torch.int64)
            images, labels, done = [], [], done + 1
    if count is not None and done < count:
        raise PieError(
            f"rank {rank}'s shards held {done * size + len(images)} images this epoch, fewer than "
            f"its {count} steps of {size}: a shard holds fewer samples than its index says"
        )
    if images:
        yield torch.stack(images), torch.tensor(labels, dtype=torch.int64)
