"""Training input: a dataset's shards, read in memory (small sets) or streamed (big ones).

Which path (`train.data`): "memory" decodes the whole set into this process's RAM once (no
copy on disk; kept for the next job of the same worker process); "stream" reads the shards
through a `torch.utils.data.DataLoader` with worker processes, decoding and augmenting each
sample as it is read, so memory does not grow with the set; "auto" (the default) takes memory
when the decoded pixels (N x C x size x size bytes) are under `MEMORY_LIMIT` (2 GB: Fashion-MNIST,
CIFAR, small subsets) and streams everything else (ImageNet). Shards on an object store stream
by another rule (`train.remote`).

One epoch, both paths, whatever the number of processes or loader workers:
- the order is a permutation of the set's N images drawn from (seed, epoch) alone;
- it is cut into `N // batch` global batches; the N mod batch images left at the end of that
  epoch's order are not seen in that epoch (a different few each epoch): every other image is
  seen exactly once;
- under torchrun, rank r of R takes the r-th of R equal slices of every global batch, so the
  global batch is the same as in one process;
- augmentation draws come from (seed, epoch, position in the epoch's order) (`train.augment`).
Streaming local shards reads samples by position, at the offsets stored with each shard at
ingest (`pie.shards.read_offsets`: 24 bytes plus the key per image, an index, not pixels); a
shard indexed before offsets were stored is scanned once, in the process that makes the
dataset, and its offsets travel to the loader workers: no loader worker reads a tar's headers.
One DataLoader serves every remaining step of the run (`RunSampler`), so its workers start once
and keep prefetching across epoch boundaries.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pie.errors import PieError
from pie.images import DecodeError, Preprocess, decode
from pie.shards import (
    INDEX,
    dataset_hash,
    image_field,
    local_path,
    read_offsets,
    read_url,
    scan_offsets,
    shard_offsets,
    shard_urls,
)
from train.augment import augment_sample, mix, uniforms

MEMORY_LIMIT = 2 * 1024**3  # decoded bytes below which "auto" holds a set in memory


# -- the shard set ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardSet:
    """A packed dataset's shards with their sample counts (from the index, tars unopened)."""

    name: str
    shards: tuple[tuple[str, int], ...]  # (local path or remote URL, samples)
    remote: bool = False  # some shard is not a local file: no random access
    # each shard's offsets file (`pie.shards`); None (or none given): its index names none
    offsets: tuple[str | None, ...] = ()

    @property
    def n_images(self) -> int:
        return sum(n for _, n in self.shards)


def shard_set(directory: Path, name: str) -> ShardSet:
    """The shards of `directory`, checked against the index: a missing index, a missing shard or
    one whose size differs from the index's (truncated, replaced), or a missing offsets file of
    a local shard, is a one-line `PieError`."""
    try:
        urls = shard_urls(directory)
    except PieError:
        raise PieError(f"dataset {name}: no shards at {directory} (missing or unpacked)") from None
    sizes = [e.get("filesize") for e in json.loads((directory / INDEX).read_text())["shardlist"]]
    offsets = shard_offsets(directory)
    shards, remote = [], False
    for (url, n), filesize, file in zip(urls, sizes, offsets, strict=True):
        local = local_path(url)
        if local is None:  # on an object store: opened by URL when read
            shards.append((url, n))
            remote = True
            continue
        path = Path(local)
        if not path.is_file():
            raise PieError(f"dataset {name}: shard {path} is missing")
        size = path.stat().st_size
        if filesize is not None and size != filesize:
            raise PieError(
                f"dataset {name}: shard {path} has {size} bytes, its index says "
                f"{filesize}: truncated or replaced; pack the dataset again"
            )
        if file is not None and not Path(file).is_file():
            raise PieError(f"dataset {name}: offsets file {file} is missing: pack it again")
        shards.append((str(path), n))
    if not shards:
        raise PieError(f"dataset {name}: the index at {directory} lists no shards")
    return ShardSet(name, tuple(shards), remote, tuple(offsets))


def decoded_bytes(n_images: int, pre: Preprocess) -> int:
    return n_images * pre.channels * pre.size * pre.size


def choose_path(asked: str, n_images: int, pre: Preprocess, remote: bool = False) -> str:
    """'memory', 'stream' or (shards on an object store) 'stream-remote' for `train.data` =
    auto | memory | stream."""
    if asked == "auto":
        asked = "memory" if decoded_bytes(n_images, pre) < MEMORY_LIMIT else "stream"
    return "stream-remote" if asked == "stream" and remote else asked


# -- one epoch's order ----------------------------------------------------------------------


def epoch_order(n_images: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of the set's images for `epoch`: a function of (seed, epoch) only."""
    return torch.randperm(n_images, generator=torch.Generator().manual_seed(mix(seed, epoch)))


def rank_positions(step: int, batch: int, rank: int, world: int) -> range:
    """Positions in the epoch's order of rank `rank`'s share of global batch `step`."""
    per_rank = batch // world
    start = step * batch + rank * per_rank
    return range(start, start + per_rank)


class RunSampler(torch.utils.data.Sampler):
    """Rank `rank`'s samples for global steps `start` to `stop` of a run, across epochs, as
    (index, epoch, position): step s is step s mod `steps_per_epoch` of epoch
    s // `steps_per_epoch`, cut from that epoch's `epoch_order`. One sampler spans the run, so
    one DataLoader serves it and its workers persist from one epoch to the next."""

    def __init__(self, n_images, seed, batch, rank, world, steps_per_epoch, start, stop):
        self.n_images, self.seed, self.batch = n_images, seed, batch
        self.rank, self.world = rank, world
        self.steps_per_epoch, self.start, self.stop = steps_per_epoch, start, stop

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        order, current = None, -1
        for step in range(self.start, self.stop):
            epoch, s = divmod(step, self.steps_per_epoch)
            if epoch != current:
                order, current = epoch_order(self.n_images, self.seed, epoch), epoch
            for p in rank_positions(s, self.batch, self.rank, self.world):
                yield int(order[p]), epoch, p

    def __len__(self) -> int:
        return (self.stop - self.start) * (self.batch // self.world)


# -- the memory path ------------------------------------------------------------------------

_DECODED: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
KEEP_DECODED = 4  # sets kept decoded per process (train and eval of the current run)


def in_memory(
    directory: Path, name: str, pre: Preprocess, center_crop_only: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(pixels uint8 (N, C, S, S), labels int64 (N,)) of a whole set in shard order, decoded
    once per process and kept for its next job; an image that cannot be decoded, or shards
    holding other than the index's count, is a `PieError`."""
    shards = shard_set(directory, name)
    key = (str(directory), dataset_hash(directory), pre.spec, center_crop_only)
    if key not in _DECODED:
        pixels = np.empty((shards.n_images, pre.channels, pre.size, pre.size), np.uint8)
        labels = np.empty(shards.n_images, np.int64)
        if shards.remote:  # read by URL, each shard once, in order
            for i, (image, labels[i]) in enumerate(sequential(shards, pre, center_crop_only)):
                pixels[i] = image
        else:
            samples = ShardSamples(shards, pre, None, center_crop_only=center_crop_only)
            for i in range(shards.n_images):  # in shard order: each shard is read once, in order
                image, labels[i] = samples[i, 0, 0]
                pixels[i] = image.numpy()
        while len(_DECODED) >= KEEP_DECODED:
            _DECODED.pop(next(iter(_DECODED)))
        _DECODED[key] = (pixels, labels)
    return _DECODED[key]


def sequential(
    shards: ShardSet, pre: Preprocess, center_crop_only: bool
) -> Iterator[tuple[np.ndarray, int]]:
    """(pixels, label) of every image in shard order, each shard read by URL once; a shard
    holding other than its index's count, or an image that cannot be decoded, is a PieError."""
    for url, n in shards.shards:
        for j, sample in enumerate(read_url(url)):
            if j >= n:
                raise PieError(f"shard {url} holds more samples than its index's {n}")
            yield (
                decode_sample(shards.name, sample, pre, None, None, center_crop_only),
                sample["cls"],
            )
        if n and j + 1 != n:
            raise PieError(f"shard {url} holds {j + 1} samples, its index says {n}")


def decode_sample(
    name: str,
    sample: dict,
    pre: Preprocess,
    policy: str | None,
    u: np.ndarray | None,
    center_crop_only: bool,
) -> np.ndarray:
    """A raw sample's image, decoded (policy None) or augmented with draws `u`."""
    try:
        _, data = image_field(sample)
        if policy is None:
            return decode(data, pre, center_crop_only)
        return augment_sample(data, pre, policy, u)
    except (DecodeError, PieError) as e:
        raise PieError(f"dataset {name}: image {sample['__key__']}: {e}") from None


# -- the streaming path ---------------------------------------------------------------------


class ShardSamples(torch.utils.data.Dataset):
    """Samples of a shard set by position (0..N-1 in shard order), read with `os.pread` at the
    offsets stored with each shard (`pie.shards.read_offsets`, loaded the first time a shard is
    touched, per process). A shard whose index names no offsets file (packed before pie stored
    them) is scanned here, once, when the dataset is made (`pie.shards.scan_offsets`), and its
    offsets go to the loader workers with the dataset; no worker reads a tar's headers.

    An item is `(index, epoch, position)`: with `policy` set it is decoded and augmented with
    draws from (seed, epoch, position); with policy None (evaluation) it is decoded with the
    fixed preprocessing rule.
    """

    def __init__(
        self,
        shards: ShardSet,
        pre: Preprocess,
        policy: str | None,
        seed: int = 0,
        center_crop_only: bool = False,
    ):
        self.shards, self.pre, self.policy, self.seed = shards, pre, policy, seed
        self.center_crop_only = center_crop_only
        self.starts = np.cumsum([0] + [n for _, n in shards.shards])
        self.tables: dict[int, np.ndarray] = {}  # offsets files loaded in this process
        self.files: dict[int, int] = {}
        self.offsets_files = shards.offsets or (None,) * len(shards.shards)
        self.scanned = {  # shards without an offsets file
            k: scan_offsets(*shards.shards[k])
            for k, file in enumerate(self.offsets_files)
            if file is None
        }

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getstate__(self):  # what goes to a spawned worker: no open files or mapped tables
        return {**self.__dict__, "tables": {}, "files": {}}

    def table(self, shard: int) -> np.ndarray:
        """The offsets of one shard (`pie.shards.OFFSETS`)."""
        if shard in self.scanned:
            return self.scanned[shard]
        if shard not in self.tables:
            file, (_, n) = self.offsets_files[shard], self.shards.shards[shard]
            self.tables[shard] = read_offsets(file, n)
        return self.tables[shard]

    def read(self, i: int) -> tuple[bytes, int]:
        shard = int(np.searchsorted(self.starts, i, "right") - 1)
        row = self.table(shard)[i - int(self.starts[shard])]
        if shard not in self.files:
            self.files[shard] = os.open(self.shards.shards[shard][0], os.O_RDONLY)
        data = os.pread(self.files[shard], int(row["size"]), int(row["offset"]))
        if len(data) != row["size"]:
            raise PieError(f"shard {self.shards.shards[shard][0]} is truncated")
        return data, int(row["label"])

    def __getitem__(self, item: tuple[int, int, int]) -> tuple[torch.Tensor, int]:
        i, epoch, position = item
        data, label = self.read(i)
        try:
            if self.policy is None:
                pixels = decode(data, self.pre, self.center_crop_only)
            else:
                u = uniforms(self.seed, epoch, np.array([position]))[0]
                pixels = augment_sample(data, self.pre, self.policy, u)
        except DecodeError as e:
            raise PieError(f"dataset {self.shards.name}: image {i}: {e}") from None
        return torch.from_numpy(pixels.copy() if not pixels.flags.writeable else pixels), label

    def __del__(self):
        for fd in self.files.values():
            os.close(fd)


def loader(
    dataset: ShardSamples,
    sampler: Sequence | torch.utils.data.Sampler,
    batch: int,
    workers: int,
    pin: bool,
) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin,
        prefetch_factor=4 if workers else None,
    )


def batches(data: torch.utils.data.DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Iterate a loader; a user error raised in a worker comes back as one line."""
    iterator = iter(data)
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
