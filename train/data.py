"""Training input: a dataset's shards, read in memory (small sets) or streamed (big ones).

`train.data` = "memory" decodes the whole set into this process's RAM once (kept for the next
job of the same worker process); "stream" reads the shards through a DataLoader with worker
processes, decoding and augmenting each sample as it is read; "auto" (the default) takes memory
when the decoded pixels are under `MEMORY_LIMIT` and streams everything else. Shards on an
object store stream by another rule (`train.remote`); `train.loaders` chooses the path once per
dataset. Each epoch's order, how it is shared among ranks, and where augmentation draws come
from, the same on every path: docs/training-data.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pie.errors import PieError
from pie.images import DecodeError, Preprocess, decode
from pie.shards import INDEX, Reader, Shard, check_present, dataset_hash
from train.augment import augment_sample, mix, uniforms
from train.config import TrainConfig

MEMORY_LIMIT = 2 * 1024**3  # decoded bytes below which "auto" holds a set in memory


# -- the shard set ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardSet:
    """A packed dataset's shards with their sample counts (from the index, tars unopened)."""

    name: str
    shards: tuple[Shard, ...]
    directory: Path  # of its index

    @property
    def n_images(self) -> int:
        return sum(s.n for s in self.shards)

    @property
    def remote(self) -> bool:
        """Some shard is not a local file: no random access."""
        return any(s.path is None for s in self.shards)


def shard_set(directory: Path, name: str) -> ShardSet:
    """The shards of `directory`, checked against the index (`pie.shards.check_present`): a
    missing index, a missing shard or one whose size differs from the index's, or a missing
    offsets file, is a one-line `PieError` naming the dataset."""
    if not (directory / INDEX).exists():
        raise PieError(f"dataset {name}: no shards at {directory} (missing or unpacked)")
    try:
        shards = check_present(directory)
    except PieError as e:
        raise PieError(f"dataset {name}: {e}") from None
    if not shards:
        raise PieError(f"dataset {name}: the index at {directory} lists no shards")
    return ShardSet(name, shards, directory)


def preprocess(cfg: TrainConfig) -> Preprocess:
    """How the training set's images become model inputs (saved in the checkpoint)."""
    return Preprocess(cfg.image_size, cfg.channels, cfg.mean, cfg.std)


def steps(cfg: TrainConfig, n_images: int) -> tuple[int, int]:
    """(steps per epoch, total steps): full batches only, at least one of each."""
    steps_per_epoch = max(1, n_images // cfg.batch_size)
    return steps_per_epoch, max(1, round(cfg.epochs * steps_per_epoch))


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

    def steps(self) -> Iterator[tuple[int, range, np.ndarray]]:
        """(epoch, positions in its order, image indices) of each step."""
        order, current = torch.empty(0), -1
        for step in range(self.start, self.stop):
            epoch, s = divmod(step, self.steps_per_epoch)
            if epoch != current:
                order, current = epoch_order(self.n_images, self.seed, epoch), epoch
            positions = rank_positions(s, self.batch, self.rank, self.world)
            yield epoch, positions, order[positions.start : positions.stop].numpy()

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        for epoch, positions, indices in self.steps():
            for i, p in zip(indices.tolist(), positions, strict=True):
                yield i, epoch, p

    def __len__(self) -> int:
        return (self.stop - self.start) * (self.batch // self.world)


# -- the memory path ------------------------------------------------------------------------

_DECODED: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
KEEP_DECODED = 4  # sets kept decoded per process (train and eval of the current run)


def in_memory(shards: ShardSet, pre: Preprocess) -> tuple[np.ndarray, np.ndarray]:
    """(pixels uint8 (N, C, S, S), labels int64 (N,)) of a whole set in shard order, decoded
    once per process and kept for its next job; an image that cannot be decoded, or shards
    holding other than the index's count, is a `PieError`."""
    key = (str(shards.directory), dataset_hash(shards.directory), pre.spec)
    if key not in _DECODED:
        pixels = np.empty((shards.n_images, pre.channels, pre.size, pre.size), np.uint8)
        labels = np.empty(shards.n_images, np.int64)
        reader = Reader(shards.shards)
        i = 0
        for shard in shards.shards:  # in shard order: each shard is read once, in order
            for record in reader.read(shard, 0, shard.n):
                pixels[i] = decode_image(shards.name, record.key, record.image, pre, None, None)
                labels[i] = record.label
                i += 1
        reader.close()
        while len(_DECODED) >= KEEP_DECODED:
            _DECODED.pop(next(iter(_DECODED)))
        _DECODED[key] = (pixels, labels)
    return _DECODED[key]


def decode_image(
    name: str,
    key: str,
    image: bytes | None,
    pre: Preprocess,
    policy: str | None,
    u: np.ndarray | None,
) -> np.ndarray:
    """A sample's image, decoded (policy None) or augmented with draws `u`; a sample without
    an image, or one that cannot be decoded, is a one-line PieError."""
    try:
        if image is None:
            raise DecodeError("the sample has no image")
        if policy is None:
            return decode(image, pre)
        return augment_sample(image, pre, policy, u)
    except DecodeError as e:
        raise PieError(f"dataset {name}: image {key}: {e}") from None


# -- the streaming path ---------------------------------------------------------------------


class ShardSamples(torch.utils.data.Dataset):
    """Samples of a shard set by position (0..N-1 in shard order), read by a `pie.shards.Reader`
    (made here, so that a shard indexed without offsets is scanned once, in this process, and
    its offsets go to the loader workers with the dataset).

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
    ):
        self.shards, self.pre, self.policy, self.seed = shards, pre, policy, seed
        self.starts = np.cumsum([0] + [s.n for s in shards.shards])
        self.reader = Reader(shards.shards)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, item: tuple[int, int, int]) -> tuple[torch.Tensor, int]:
        i, epoch, position = item
        k = int(np.searchsorted(self.starts, i, "right") - 1)
        j = i - int(self.starts[k])
        (record,) = self.reader.read(self.shards.shards[k], j, j + 1)
        u = None if self.policy is None else uniforms(self.seed, epoch, np.array([position]))[0]
        pixels = decode_image(self.shards.name, record.key, record.image, self.pre, self.policy, u)
        return torch.from_numpy(
            pixels.copy() if not pixels.flags.writeable else pixels
        ), record.label
