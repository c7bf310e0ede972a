"""Loading: each pending group's shards, cut into chunks, dealt to this rank and to its loader
workers, read and decoded into uint8 batches (`shares`).

A chunk is at most `batch_size` consecutive samples of one shard, decoded for one group's
preprocessing: one batch. A DataLoader worker reads a chunk's images with a
`pie.shards.Reader` (a local shard by the offsets stored with it, a remote one sequentially),
decodes and preprocesses them (`pie.images.decode`, the dataset's rule) and hands back a
`Batch` of uint8 pixels; normalisation (per model: mean and std) happens where the model runs.
One DataLoader serves the whole run, every group in turn, so its workers start once and the next
group is decoded while the last batches of the previous one are scored. Memory holds a few
batches per worker, whatever the size of the dataset; nothing is written to disk.

A shard whose URL is not a local file (`pipe:aws s3 cp s3://b/x.tar -`, `s3:`, `http:`: no
random access) is read from start to end: its chunks form one work item, dealt whole to one
rank (`mine`) and laid out for one loader worker (`layout`), whose reader keeps the stream open
from one chunk to the next, so a remote shard is read once. Under torchrun the work items (a
local chunk, or all the chunks of a remote shard) are dealt round-robin to the ranks.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pie.images import DecodeError, Preprocess, decode
from pie.parallel import die_with_parent
from pie.shards import IMAGE_EXTS, Reader, Shard, shards


@dataclass(frozen=True)
class Chunk:
    """Samples [start, stop) of one shard, decoded for one group's preprocessing: one batch."""

    shard: Shard
    start: int
    stop: int
    group: int  # the index of its group in the run
    pre: Preprocess

    @property
    def remote(self) -> bool:
        """Read by URL, sequentially (not a local file)."""
        return self.shard.path is None


@dataclass
class Batch:
    group: int
    keys: list[str]
    labels: torch.Tensor  # int64 (n,)
    pixels: torch.Tensor  # uint8 (n, C, H, W)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (key, why) left out
    outputs: dict[str, dict[str, np.ndarray]] | None = None  # per model, if a worker scored

    def pin_memory(self) -> Batch:
        return dataclasses.replace(
            self, labels=self.labels.pin_memory(), pixels=self.pixels.pin_memory()
        )


def shares(
    groups: Sequence[tuple[Path, Preprocess]],
    batch_size: int,
    workers: int,
    rank: int,
    world_size: int,
    pin_memory: bool,
    then: Callable[[Batch], Batch] | None = None,
) -> list[tuple[int, Iterator[Batch]]]:
    """This rank's share of every group (shard directory, preprocessing): its number of images
    and its batches, read and decoded by one DataLoader of `workers` processes for all groups;
    `then` runs on each batch where it was decoded."""
    dealt, offset = [], 0
    for i, (directory, pre) in enumerate(groups):
        dealt.append(
            layout(mine(chunks(directory, batch_size, i, pre), rank, world_size), workers, offset)
        )
        offset += len(dealt[-1])
    batches = iter(data_loader([c for d in dealt for c in d], workers, pin_memory, then))
    return [(sum(c.stop - c.start for c in d), itertools.islice(batches, len(d))) for d in dealt]


def chunks(directory: Path, batch_size: int, group: int, pre: Preprocess) -> list[Chunk]:
    """Every chunk of a packed dataset, in shard order."""
    return [
        Chunk(shard, start, min(start + batch_size, shard.n), group, pre)
        for shard in shards(directory)
        for start in range(0, shard.n, batch_size)
    ]


def work_items(items: Sequence[Chunk]) -> list[list[Chunk]]:
    """Chunks grouped into work items: a local chunk alone, a remote shard's chunks together."""
    out: list[list[Chunk]] = []
    for c in items:
        if c.remote and out and out[-1][0].remote and out[-1][0].shard == c.shard:
            out[-1].append(c)
        else:
            out.append([c])
    return out


def mine(items: Sequence[Chunk], rank: int, world_size: int) -> list[Chunk]:
    """This rank's share: every `world_size`-th work item from `rank` (for local shards: every
    `world_size`-th chunk)."""
    return [c for item in work_items(items)[rank::world_size] for c in item]


def layout(share: Sequence[Chunk], workers: int, offset: int) -> list[Chunk]:
    """A rank's chunks of one group, ordered so that each remote shard's chunks reach one loader
    worker: the DataLoader hands position p of the run to worker p % workers, and this group's
    chunks start at position `offset`. Each remote shard goes to the worker with the fewest
    remote chunks so far; local chunks fill the other positions in order; a position left with
    nothing for its worker gets an empty chunk (no samples, nothing read). Without remote shards
    (or loader workers) the share is returned as it is. Order within a group does not change the
    predictions, and a chunk reaching another worker is still read correctly (from the start of
    its shard again), so this layout is about speed only."""
    items = work_items(share)
    if workers <= 1 or not any(item[0].remote for item in items):
        return list(share)
    queues: list[list[Chunk]] = [[] for _ in range(workers)]
    local = [item[0] for item in items if not item[0].remote]
    for item in (i for i in items if i[0].remote):
        min(queues, key=len).extend(item)
    for q in queues:
        q.reverse()
    local.reverse()
    out: list[Chunk] = []
    while local or any(queues):
        q = queues[(offset + len(out)) % workers]
        if q:
            out.append(q.pop())
        elif local:
            out.append(local.pop())
        else:
            first = next(c for c in share if c.remote)
            out.append(dataclasses.replace(first, start=0, stop=0))
    return out


def read_chunk(chunk: Chunk, reader: Reader) -> Batch:
    """Decode one chunk; an image that cannot be decoded is left out and listed in `errors`."""
    pre = chunk.pre
    pixels = np.empty((chunk.stop - chunk.start, pre.channels, pre.size, pre.size), np.uint8)
    keys: list[str] = []
    labels: list[int] = []
    errors: list[tuple[str, str]] = []
    for key, label, image in reader.read(chunk.shard, chunk.start, chunk.stop):
        try:
            if image is None:
                raise DecodeError(f"no image ({', '.join(IMAGE_EXTS)})")
            pixels[len(keys)] = decode(image, pre)
        except DecodeError as e:
            errors.append((key, str(e)))
            continue
        keys.append(key)
        labels.append(int(label))
    return Batch(
        chunk.group,
        keys,
        torch.tensor(labels, dtype=torch.int64),
        torch.from_numpy(pixels[: len(keys)]),
        errors,
    )


class Batches(Dataset):
    """The decoded batch of each chunk (then `then`'s, when given)."""

    def __init__(
        self, items: Sequence[Chunk], then: Callable[[Batch], Batch] | None = None
    ) -> None:
        self.items = list(items)
        self.reader = Reader(list(dict.fromkeys(c.shard for c in self.items)))
        self.then = then

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Batch:
        batch = read_chunk(self.items[i], self.reader)
        return self.then(batch) if self.then else batch


def data_loader(
    items: Sequence[Chunk],
    workers: int,
    pin_memory: bool,
    then: Callable[[Batch], Batch] | None = None,
) -> DataLoader:
    """Batches in chunk order, decoded by `workers` spawned processes (0: in this one), each
    keeping up to 4 batches ready. Workers die with this process, however it ends."""
    return DataLoader(
        Batches(items, then),
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
        worker_init_fn=functools.partial(start_worker, os.getpid()) if workers else None,
        multiprocessing_context="spawn" if workers else None,
    )


def start_worker(parent: int, worker_id: int) -> None:
    die_with_parent(parent)
