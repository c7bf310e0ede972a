"""Training over shards on an object store (an index of `pipe:` or other non-file URLs; the
sidecar's `data` says "stream-remote"): no random access, so an epoch follows its own rule
(docs/training-data.md): `deal`, a pure function of the shard sizes, seed, epoch, world size,
loader workers and quota, called by the loader and by `pie plan` alike, gives each (rank,
loader worker) its pieces of shards; a worker reads them in order through a shuffle buffer of
`SHUFFLE_BUFFER` samples, every image at most once per epoch.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import numpy as np
import torch

from pie.images import Preprocess
from pie.shards import Reader, Record
from train.augment import mix, uniforms
from train.data import ShardSet, decode_image, epoch_order

SHUFFLE_BUFFER = 1000  # samples per loader worker


class Piece(NamedTuple):
    """Samples [start, stop) of shard `shard` (its position in the index)."""

    shard: int
    start: int
    stop: int


Dealt = list[list[list[Piece]]]  # [rank][loader worker] -> pieces, in reading order


def cut(sizes: Sequence[int], order: Sequence[int], lengths: Sequence[int]) -> list[list[Piece]]:
    """Lay the shards of `order` end to end and cut the sample sequence into consecutive runs
    of `lengths` samples (their sum at most the samples there are); each run as pieces."""
    return split([(int(k), 0, int(sizes[k])) for k in order], lengths)


def split(pieces: Sequence[tuple[int, int, int]], lengths: Sequence[int]) -> list[list[Piece]]:
    """`pieces`, in order, cut into consecutive runs of `lengths` samples (their sum at most
    the samples the pieces hold)."""
    runs: list[list[Piece]] = [[] for _ in lengths]
    w, room = 0, lengths[0] if lengths else 0
    for shard, start, stop in pieces:
        while start < stop:
            while room == 0:
                w += 1
                if w == len(lengths):
                    return runs
                room = lengths[w]
            take = min(room, stop - start)
            runs[w].append(Piece(shard, start, start + take))
            start, room = start + take, room - take
    if room or any(lengths[w + 1 :]):
        raise ValueError(f"runs of {sum(lengths)} samples cut from fewer")
    return runs


def equal(total: int, parts: int) -> list[int]:
    """`total` in `parts` counts as equal as can be, the first ones one more."""
    return [total // parts + (i < total % parts) for i in range(parts)]


def deal(
    sizes: Sequence[int], seed: int, epoch: int, world: int, workers: int, quota: int
) -> Dealt:
    """One training epoch's pieces per (rank, loader worker), `quota` samples per rank (the
    module's rule); where the set holds fewer than `world` x `quota` samples the last ranks get
    what is left (`checks.epoch_shapes` refuses such a run before it starts)."""
    n = sum(sizes)
    lengths = [min(quota, max(0, n - r * quota)) for r in range(world)]
    order = epoch_order(len(sizes), seed, epoch).tolist()
    return per_worker(cut(sizes, order, lengths), lengths, workers)


def deal_eval(sizes: Sequence[int], world: int, workers: int) -> Dealt:
    """Evaluation's pieces per (rank, loader worker): every image once over the ranks, in
    index order."""
    lengths = equal(sum(sizes), world)
    return per_worker(cut(sizes, range(len(sizes)), lengths), lengths, workers)


def per_worker(runs: list[list[Piece]], lengths: list[int], workers: int) -> Dealt:
    """Each rank's run cut into equal runs for its loader workers (0 workers: one)."""
    return [
        split(run, equal(length, max(1, workers)))
        for run, length in zip(runs, lengths, strict=True)
    ]


def samples(dealt: Sequence[Sequence[Piece]]) -> list[int]:
    """Sample counts of a rank's (or a worker's) runs of pieces."""
    return [sum(p.stop - p.start for p in pieces) for pieces in dealt]


class RemoteEpoch(torch.utils.data.IterableDataset):
    """One epoch of a shard set on an object store, as (pixels uint8 tensor, label) samples (the
    module's rule): `quota` samples per rank dealt by `deal`, or with quota None (evaluation)
    every image once over the ranks (`deal_eval`), decoded by the fixed rule (`policy` None).
    `skip`: samples of this rank's epoch already taken (a run resumed mid-epoch); they are
    passed over, read but not decoded."""

    def __init__(
        self,
        shards: ShardSet,
        pre: Preprocess,
        policy: str | None,
        seed: int,
        epoch: int,
        rank: int,
        world: int,
        quota: int | None,
        skip: int = 0,
        buffer: int = SHUFFLE_BUFFER,
    ):
        self.shards, self.pre, self.policy, self.seed, self.epoch = shards, pre, policy, seed, epoch
        self.rank, self.world, self.quota, self.skip, self.buffer = rank, world, quota, skip, buffer
        self.starts = np.cumsum([0] + [s.n for s in shards.shards])

    def mine(self, worker: int, workers: int) -> list[Piece]:
        """The pieces of (rank, worker) this epoch, in reading order."""
        sizes = [s.n for s in self.shards.shards]
        if self.quota is None:
            return deal_eval(sizes, self.world, workers)[self.rank][worker]
        return deal(sizes, self.seed, self.epoch, self.world, workers, self.quota)[self.rank][
            worker
        ]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        skip = self.skip // workers + (worker < self.skip % workers)
        for k, (i, sample) in enumerate(self.shuffled(self.mine(worker, workers), worker)):
            if k >= skip:
                yield self.item(i, sample)

    def shuffled(self, pieces: list[Piece], worker: int) -> Iterator[tuple[int, Record]]:
        """(index in shard order, raw sample) of `pieces`, through the shuffle buffer."""
        rng = random.Random(mix(self.seed, self.epoch, self.rank, worker))
        pool: list[tuple[int, Record]] = []
        reader = Reader()
        for piece in pieces:
            records = reader.read(self.shards.shards[piece.shard], piece.start, piece.stop)
            for j, record in enumerate(records, piece.start):
                pool.append((int(self.starts[piece.shard]) + j, record))
                if len(pool) >= self.buffer:
                    k = rng.randrange(len(pool))
                    pool[k], pool[-1] = pool[-1], pool[k]
                    yield pool.pop()
        rng.shuffle(pool)
        yield from pool

    def item(self, i: int, record: Record) -> tuple[torch.Tensor, int]:
        u = uniforms(self.seed, self.epoch, np.array([i]))[0]
        pixels = decode_image(self.shards.name, record.key, record.image, self.pre, self.policy, u)
        return torch.from_numpy(pixels.copy()), record.label
