"""Training input: a dataset's shards, read in memory (small sets) or streamed (big ones).

Which path (`train.data`): "memory" decodes the whole set into this process's RAM once (no
copy on disk; kept for the next job of the same worker process); "stream" reads the shards
through a `torch.utils.data.DataLoader` with worker processes, decoding and augmenting each
sample as it is read, so memory does not grow with the set; "auto" (the default) takes memory
when the decoded pixels (N x C x size x size bytes) are under `MEMORY_LIMIT` (2 GB: Fashion-MNIST,
CIFAR, small subsets) and streams everything else (ImageNet).

One epoch, both paths, whatever the number of processes or loader workers:
- the order is a permutation of the set's N images drawn from (seed, epoch) alone;
- it is cut into `N // batch` global batches; the N mod batch images left at the end of that
  epoch's order are not seen in that epoch (a different few each epoch): every other image is
  seen exactly once;
- under torchrun, rank r of R takes the r-th of R equal slices of every global batch, so the
  global batch is the same as in one process;
- augmentation draws come from (seed, epoch, position in the epoch's order) (`uniforms`, a
  counter-based generator), so they do not depend on R or on the loader workers either, a
  resumed job can start at any step, and the two paths augment alike.
Shards on an object store (an index of `pipe:` or other non-file URLs: "stream-remote", what the
sidecar's `data` says) allow no random access, so an epoch there follows another rule
(`RemoteEpoch`): the shard order is a permutation drawn from (seed, epoch); shards are dealt
round-robin to (rank, loader worker); each worker reads its shards sequentially through a
shuffle buffer of `SHUFFLE_BUFFER` samples seeded by (seed, epoch, rank, worker); every image is
read at most once per epoch. Every rank takes the same `N // batch` steps as above and stops
there: the images its shards hold beyond them are not seen in that epoch (a rank whose shards
hold fewer than its steps' worth is a PieError: pack into more, equal shards). Augmentation
draws come from (seed, epoch, the image's index in shard order). The batches depend on the
number of ranks and loader workers; a job resumed mid-epoch reads that epoch again from its
start and skips the batches already done. `train.data = "memory"` reads remote shards
sequentially once into memory and follows the rule above it.
Streaming local shards reads samples by position: each loader worker scans the tar headers of
a shard the first time it needs it and keeps the offsets (about 20 bytes per image: an index,
not pixels).

Augmentations (`train.augment`, "auto" by input size): inputs of 32 px or less get pad-4,
random crop and horizontal flip ("crop_flip"); larger ones a random resized crop (scale
0.08-1, aspect 3/4-4/3, torchvision's rule) and flip ("resized_crop_flip"). Streaming crops
the full-resolution image; the memory path crops the stored `size` x `size` center crop.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import random
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pie.errors import PieError
from pie.images import SMALL_INPUT, DecodeError, Preprocess, decode
from pie.shards import (
    IMAGE_EXTS,
    INDEX,
    dataset_hash,
    image_field,
    local_path,
    read_url,
    shard_urls,
)

MEMORY_LIMIT = 2 * 1024**3  # decoded bytes below which "auto" holds a set in memory
PAD = 4  # crop_flip: zero padding on each side before the random crop
SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
SHUFFLE_BUFFER = 1000  # samples per loader worker, remote shards


# -- the shard set ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardSet:
    """A packed dataset's shards with their sample counts (from the index, tars unopened)."""

    name: str
    shards: tuple[tuple[str, int], ...]  # (local path or remote URL, samples)
    remote: bool = False  # some shard is not a local file: no random access

    @property
    def n_images(self) -> int:
        return sum(n for _, n in self.shards)


def shard_set(directory: Path, name: str) -> ShardSet:
    """The shards of `directory`, checked against the index: a missing index, a missing shard or
    one whose size differs from the index's (truncated, replaced) is a one-line `PieError`."""
    try:
        urls = shard_urls(directory)
    except PieError:
        raise PieError(f"dataset {name}: no shards at {directory} (missing or unpacked)") from None
    sizes = [e.get("filesize") for e in json.loads((directory / INDEX).read_text())["shardlist"]]
    shards, remote = [], False
    for (url, n), filesize in zip(urls, sizes, strict=True):
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
        shards.append((str(path), n))
    if not shards:
        raise PieError(f"dataset {name}: the index at {directory} lists no shards")
    return ShardSet(name, tuple(shards), remote)


def decoded_bytes(n_images: int, pre: Preprocess) -> int:
    return n_images * pre.channels * pre.size * pre.size


def choose_path(asked: str, n_images: int, pre: Preprocess, remote: bool = False) -> str:
    """'memory', 'stream' or (shards on an object store) 'stream-remote' for `train.data` =
    auto | memory | stream."""
    if asked == "auto":
        asked = "memory" if decoded_bytes(n_images, pre) < MEMORY_LIMIT else "stream"
    return "stream-remote" if asked == "stream" and remote else asked


def resolve_augment(asked: str, size: int) -> str:
    if asked != "auto":
        return asked
    return "crop_flip" if size <= SMALL_INPUT else "resized_crop_flip"


# -- one epoch's order ----------------------------------------------------------------------


def mix(*values: int) -> int:
    """A 63-bit seed from integers (stable across runs and platforms)."""
    text = "/".join(str(v) for v in values)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def epoch_order(n_images: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of the set's images for `epoch`: a function of (seed, epoch) only."""
    return torch.randperm(n_images, generator=torch.Generator().manual_seed(mix(seed, epoch)))


def rank_positions(step: int, batch: int, rank: int, world: int) -> range:
    """Positions in the epoch's order of rank `rank`'s share of global batch `step`."""
    per_rank = batch // world
    start = step * batch + rank * per_rank
    return range(start, start + per_rank)


class EpochSampler(torch.utils.data.Sampler):
    """Rank `rank`'s samples of one epoch from step `start` on, as (index, epoch, position)."""

    def __init__(self, n_images, seed, epoch, batch, rank, world, start, stop):
        self.order = epoch_order(n_images, seed, epoch)
        self.epoch, self.batch, self.rank, self.world = epoch, batch, rank, world
        self.start, self.stop = start, stop

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        for step in range(self.start, self.stop):
            for p in rank_positions(step, self.batch, self.rank, self.world):
                yield int(self.order[p]), self.epoch, p

    def __len__(self) -> int:
        return (self.stop - self.start) * (self.batch // self.world)


# -- augmentation ---------------------------------------------------------------------------


DRAWS = 25  # uniforms per sample: flip, crop row and column, 10 x (area, aspect), left, top


def uniforms(seed: int, epoch: int, positions: np.ndarray) -> np.ndarray:
    """(len(positions), DRAWS) uniforms in [0, 1): a counter-based generator (splitmix64 of
    (seed, epoch) and the position), so any sample's draws are found without the others'."""
    with np.errstate(over="ignore"):
        counter = np.asarray(positions, np.uint64)[:, None] * np.uint64(DRAWS)
        z = counter + np.arange(DRAWS, dtype=np.uint64) + np.uint64(mix(seed, epoch))
        z = z * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def resized_crop_box(width: int, height: int, u: np.ndarray) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box (left, top, w, h) from one sample's draws: 10 tries
    at a random area in SCALE and log-uniform aspect in RATIO, else the center crop at the
    nearest allowed aspect."""
    area = width * height
    log_ratio = (math.log(RATIO[0]), math.log(RATIO[1]))
    for t in range(10):
        target = area * (SCALE[0] + (SCALE[1] - SCALE[0]) * u[3 + 2 * t])
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[4 + 2 * t])
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(u[23] * (width - w + 1)), int(u[24] * (height - h + 1)), w, h
    ratio = width / height
    if ratio < RATIO[0]:
        w, h = width, round(width / RATIO[0])
    elif ratio > RATIO[1]:
        w, h = round(height * RATIO[1]), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def crop_offsets(u: np.ndarray) -> tuple[int, int]:
    """crop_flip's (row, column) offset into the padded image from one sample's draws."""
    return int(u[1] * (2 * PAD + 1)), int(u[2] * (2 * PAD + 1))


def augment_sample(data: bytes, pre: Preprocess, policy: str, u: np.ndarray) -> np.ndarray:
    """Encoded image -> augmented uint8 array (C, size, size), from one sample's draws."""
    if policy == "resized_crop_flip":
        try:
            im = Image.open(io.BytesIO(data)).convert("L" if pre.channels == 1 else "RGB")
        except Exception as e:  # PIL raises many types for corrupt files
            raise DecodeError(f"cannot decode image: {e}") from None
        left, top, w, h = resized_crop_box(*im.size, u)
        im = im.resize(
            (pre.size, pre.size), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h)
        )
        pixels = np.asarray(im, dtype=np.uint8)
        pixels = pixels[None] if pre.channels == 1 else pixels.transpose(2, 0, 1)
    else:
        pixels = decode(data, pre)
        if policy == "crop_flip":
            padded = np.pad(pixels, ((0, 0), (PAD, PAD), (PAD, PAD)))
            dy, dx = crop_offsets(u)
            pixels = padded[:, dy : dy + pre.size, dx : dx + pre.size]
    if policy != "none" and u[0] < 0.5:
        pixels = pixels[:, :, ::-1]
    return np.ascontiguousarray(pixels)


def augment_batch(
    x: torch.Tensor, policy: str, seed: int, epoch: int, positions: range
) -> torch.Tensor:
    """The memory path's augmentation of stored uint8 crops (n, C, S, S) at `positions` of the
    epoch's order: the same draws as `augment_sample` gives those samples, so flip and
    crop_flip match the streaming path pixel for pixel (resized crops are cut from the stored
    center crop here, from the full image there)."""
    if policy == "none":
        return x
    n, size = len(x), x.shape[-1]
    u = uniforms(seed, epoch, np.arange(positions.start, positions.stop))
    if policy == "crop_flip":
        dy, dx = (torch.tensor(v) for v in zip(*(crop_offsets(row) for row in u), strict=True))
        padded = F.pad(x, (PAD, PAD, PAD, PAD))
        span = torch.arange(size)
        rows = (dy[:, None] + span)[:, None, :, None]
        cols = (dx[:, None] + span)[:, None, None, :]
        sample, channel = torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])
        x = padded[sample, channel[:, None, None], rows, cols]
    elif policy == "resized_crop_flip":
        crops = []
        for image, row in zip(x, u, strict=True):
            left, top, w, h = resized_crop_box(size, size, row)
            crop = image[None, :, top : top + h, left : left + w].float()
            crop = F.interpolate(crop, (size, size), mode="bilinear", align_corners=False)[0]
            crops.append(crop.round().clamp(0, 255).to(torch.uint8))
        x = torch.stack(crops)
    flip = torch.from_numpy(u[:, 0] < 0.5)
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


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


def scan_shard(path: str, expected: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image offset, image size, label) of every sample of a tar, from its headers (the
    image bytes are skipped, not read); fewer or more samples than `expected` is a PieError."""
    offsets, sizes, labels = [], [], []
    current = None
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                head, _, base = member.name.rpartition("/")
                stem, _, ext = base.partition(".")
                key = f"{head}/{stem}"
                if key != current:
                    current = key
                    offsets.append(-1)
                    sizes.append(0)
                    labels.append(-1)
                if ext in IMAGE_EXTS:
                    offsets[-1], sizes[-1] = member.offset_data, member.size
                elif ext == "cls":
                    labels[-1] = int(tar.extractfile(member).read())
    except (OSError, tarfile.TarError, ValueError) as e:
        raise PieError(f"shard {path} cannot be read ({e}): pack the dataset again") from None
    if len(offsets) != expected or min(offsets, default=0) < 0 or min(labels, default=0) < 0:
        raise PieError(
            f"shard {path} holds {len(offsets)} complete samples, its index says {expected}: "
            "truncated or damaged; pack the dataset again"
        )
    return np.array(offsets, np.int64), np.array(sizes, np.int64), np.array(labels, np.int64)


class ShardSamples(torch.utils.data.Dataset):
    """Samples of a shard set by position (0..N-1 in shard order), read with `os.pread` from
    offsets found by `scan_shard` the first time a shard is touched (per worker process).

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
        self.index: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.files: dict[int, int] = {}

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getstate__(self):  # what goes to a worker: no open files, no index
        return {**self.__dict__, "index": {}, "files": {}}

    def read(self, i: int) -> tuple[bytes, int]:
        shard = int(np.searchsorted(self.starts, i, "right") - 1)
        if shard not in self.index:
            path, n = self.shards.shards[shard]
            self.index[shard] = scan_shard(path, n)
            self.files[shard] = os.open(path, os.O_RDONLY)
        offsets, sizes, labels = self.index[shard]
        j = i - int(self.starts[shard])
        data = os.pread(self.files[shard], int(sizes[j]), int(offsets[j]))
        if len(data) != sizes[j]:
            raise PieError(f"shard {self.shards.shards[shard][0]} is truncated")
        return data, int(labels[j])

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
        persistent_workers=False,
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


# -- the remote streaming path --------------------------------------------------------------


class RemoteEpoch(torch.utils.data.IterableDataset):
    """One epoch of a shard set on an object store, as (pixels uint8 tensor, label) samples (the
    module docstring's remote rule): shards permuted by (seed, epoch), dealt round-robin to
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
