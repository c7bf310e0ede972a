"""Training over shards on an object store (an index of `pipe:` or other non-file URLs; the
sidecar's `data` says "stream-remote"): no random access, so an epoch follows its own rule.

The shard order is a permutation drawn from (seed, epoch); shards are dealt round-robin to
(rank, loader worker); each worker reads its shards sequentially through a shuffle buffer of
`SHUFFLE_BUFFER` samples seeded by (seed, epoch, rank, worker); every image is read at most once
per epoch. Every rank takes the same `N // batch` steps as on local shards and stops there (a
rank whose shards hold fewer than its steps' worth is a PieError: pack into more, equal shards).
Augmentation draws come from (seed, epoch, the image's index in shard order).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import numpy as np
import torch

from pie.errors import PieError
from pie.images import Preprocess
from pie.shards import read_url
from train.augment import mix, uniforms
from train.data import ShardSet, batches, decode_sample, epoch_order

SHUFFLE_BUFFER = 1000  # samples per loader worker


class RemoteEpoch(torch.utils.data.IterableDataset):
    """One epoch of a shard set on an object store, as (pixels uint8 tensor, label) samples (the
    module's rule): shards permuted by (seed, epoch), dealt round-robin to
    (rank, loader worker), each read sequentially through a shuffle buffer of `buffer` samples
    seeded by (seed, epoch, rank, worker). With `policy` None (evaluation) images are decoded
    by the fixed rule, in the order read."""

    def __init__(
        self,
        shards: ShardSet,
        pre: Preprocess,
        policy: str | None,
        seed: int,
        epoch: int,
        rank: int,
        world: int,
        buffer: int = SHUFFLE_BUFFER,
        center_crop_only: bool = False,
    ):
        self.shards, self.pre, self.policy, self.seed, self.epoch = shards, pre, policy, seed, epoch
        self.rank, self.world, self.buffer = rank, world, buffer
        self.center_crop_only = center_crop_only
        self.starts = np.cumsum([0] + [n for _, n in shards.shards])

    def mine(self, worker: int, workers: int) -> list[int]:
        """The shards of (rank, worker) this epoch, in reading order."""
        order = epoch_order(len(self.shards.shards), self.seed, self.epoch).tolist()
        return order[self.rank * workers + worker :: self.world * workers]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        rng = random.Random(mix(self.seed, self.epoch, self.rank, worker))
        pool: list[tuple[int, dict]] = []
        for shard in self.mine(worker, workers):
            url, n = self.shards.shards[shard]
            for j, sample in enumerate(read_url(url)):
                if j >= n:
                    raise PieError(f"shard {url} holds more samples than its index's {n}")
                pool.append((int(self.starts[shard]) + j, sample))
                if len(pool) >= self.buffer:
                    k = rng.randrange(len(pool))
                    pool[k], pool[-1] = pool[-1], pool[k]
                    yield self.item(*pool.pop())
        rng.shuffle(pool)
        for i, sample in pool:
            yield self.item(i, sample)

    def item(self, i: int, sample: dict) -> tuple[torch.Tensor, int]:
        u = uniforms(self.seed, self.epoch, np.array([i]))[0]
        pixels = decode_sample(
            self.shards.name, sample, self.pre, self.policy, u, self.center_crop_only
        )
        return torch.from_numpy(pixels.copy()), int(sample["cls"])


def remote_loader(dataset: RemoteEpoch, workers: int, pin: bool) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        pin_memory=pin,
        prefetch_factor=64 if workers else None,
    )


def remote_batches(
    data: torch.utils.data.DataLoader, size: int, count: int | None, rank: int = 0
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`count` batches of `size` samples from a sample loader (None: all, the last one short);
    fewer samples than `count` batches need is a PieError."""
    images: list[torch.Tensor] = []
    labels: list[int] = []
    done = 0
    for x, y in batches(data):
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
            f"its {count} steps of {size}: pack the dataset into more shards of equal size"
        )
    if images:
        yield torch.stack(images), torch.tensor(labels, dtype=torch.int64)
