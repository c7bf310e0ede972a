"""Decoded batches streamed from the shards by DataLoader workers.

A dataset's shards are cut into chunks of at most `batch_size` consecutive samples of one shard
(`chunks`); a chunk is one batch. A DataLoader worker reads a chunk's bytes straight from its
tar file (the offsets come from the tar headers, read once per shard and worker, no sample data
touched), decodes and preprocesses them (`pie.images.decode`, the dataset's rule) and hands back
a `Batch` of uint8 pixels; normalisation (per model: mean and std) happens on the device. One
DataLoader serves a whole run, every dataset in turn, so its workers start once and the next
dataset is decoded while the last batches of the previous one are evaluated. Memory holds a few
batches per worker, whatever the size of the dataset; nothing is written to disk.

Under torchrun the chunks are dealt round-robin to the ranks (`mine`).
"""

from __future__ import annotations

import functools
import os
import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pie import checkpoints
from pie.errors import PieError
from pie.images import DecodeError, Preprocess, decode
from pie.parallel import die_with_parent
from pie.shards import IMAGE_EXTS, shard_urls

WORKER_MODELS: dict = {}  # model_id -> loaded model, in a loader worker that scores (CPU)
# webdataset's rule: the key is the member name up to the first dot of its last component
MEMBER = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


@dataclass(frozen=True)
class Chunk:
    """Samples [start, stop) of one shard, decoded for one preprocessing: one batch."""

    shard: str
    start: int
    stop: int
    group: int  # the index of the (dataset, preprocessing) group in the run's plan
    pre: Preprocess
    crop_only: bool
    # set on CPU with loader workers: the worker also runs these models on the batch
    # ((model_id, checkpoint directory, Preprocess), ...) among `class_subset`
    models: tuple[tuple[str, str, Preprocess], ...] = ()
    class_subset: tuple[int, ...] | None = None


@dataclass
class Batch:
    group: int
    keys: list[str]
    labels: torch.Tensor  # int64 (n,)
    pixels: torch.Tensor  # uint8 (n, C, H, W)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (key, why) left out
    outputs: dict[str, dict[str, np.ndarray]] | None = None  # per model, if the worker scored

    def pin_memory(self) -> Batch:
        pixels, labels = self.pixels.pin_memory(), self.labels.pin_memory()
        return Batch(self.group, self.keys, labels, pixels, self.errors, self.outputs)


def chunks(directory, batch_size: int, group: int, pre: Preprocess, crop_only: bool) -> list[Chunk]:
    """Every chunk of a packed dataset, in shard order."""
    return [
        Chunk(url, start, min(start + batch_size, n), group, pre, crop_only)
        for url, n in shard_urls(directory)
        for start in range(0, n, batch_size)
    ]


def mine(items: Sequence[Chunk], rank: int, world_size: int) -> list[Chunk]:
    """This rank's share: every `world_size`-th chunk from `rank`."""
    return list(items[rank::world_size])


@functools.lru_cache(maxsize=4)
def members(shard: str) -> list[tuple[str, dict[str, tuple[int, int]]]]:
    """(key, {extension: (data offset, size)}) of every sample of a tar shard, in order, from
    its 512-byte headers alone (sample data is skipped). Shards written by pie.shards hold plain
    ustar members; anything else (pax or GNU long-name headers) is left to `tarfile`."""
    samples: list[tuple[str, dict[str, tuple[int, int]]]] = []
    with open(shard, "rb") as f:
        offset = 0
        while True:
            f.seek(offset)
            header = f.read(512)
            if len(header) < 512 or header.count(0) == 512:
                break
            if header[156:157] not in (b"0", b"\0", b"5") or header[124] & 0x80:
                return members_by_tarfile(shard)
            size = int(header[124:136].split(b"\0")[0].strip() or b"0", 8)
            name = header[:100].split(b"\0")[0].decode()
            if header[257:262] == b"ustar" and header[345] != 0:
                name = header[345:500].split(b"\0")[0].decode() + "/" + name
            match = MEMBER.match(name) if header[156:157] != b"5" else None
            if match is not None:
                add(samples, *match.groups(), offset + 512, size)
            offset += 512 + (size + 511) // 512 * 512
    return samples


def members_by_tarfile(shard: str) -> list[tuple[str, dict[str, tuple[int, int]]]]:
    samples: list[tuple[str, dict[str, tuple[int, int]]]] = []
    with tarfile.open(shard, "r:") as tar:  # seekable: headers only, data skipped
        for info in tar:
            match = MEMBER.match(info.name) if info.isfile() else None
            if match is not None:
                add(samples, *match.groups(), info.offset_data, info.size)
    return samples


def add(samples: list, key: str, ext: str, offset: int, size: int) -> None:
    if not samples or samples[-1][0] != key:
        samples.append((key, {}))
    samples[-1][1][ext] = (offset, size)


def read_chunk(chunk: Chunk) -> Batch:
    """Decode one chunk; an image that cannot be decoded is left out and listed in `errors`."""
    samples = members(chunk.shard)
    if len(samples) < chunk.stop:
        raise PieError(f"shard {chunk.shard}: index lists more samples than its {len(samples)}")
    pre = chunk.pre
    pixels = np.empty((chunk.stop - chunk.start, pre.channels, pre.size, pre.size), np.uint8)
    keys: list[str] = []
    labels: list[int] = []
    errors: list[tuple[str, str]] = []
    with open(chunk.shard, "rb") as f:

        def read(where: tuple[int, int]) -> bytes:
            f.seek(where[0])
            return f.read(where[1])

        for key, fields in samples[chunk.start : chunk.stop]:
            ext = next((e for e in IMAGE_EXTS if e in fields), None)
            try:
                if ext is None:
                    raise DecodeError(f"no image ({', '.join(IMAGE_EXTS)})")
                pixels[len(keys)] = decode(read(fields[ext]), pre, chunk.crop_only)
            except DecodeError as e:
                errors.append((key, str(e)))
                continue
            keys.append(key)
            labels.append(int(read(fields["cls"])))
    return Batch(
        chunk.group,
        keys,
        torch.tensor(labels, dtype=torch.int64),
        torch.from_numpy(pixels[: len(keys)]),
        errors,
    )


class Chunks(Dataset):
    def __init__(self, items: Sequence[Chunk]) -> None:
        self.items = list(items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> Batch:
        chunk = self.items[i]
        batch = read_chunk(chunk)
        if chunk.models:
            batch = score_in_worker(batch, chunk)
        return batch


@torch.inference_mode()
def score_in_worker(batch: Batch, chunk: Chunk) -> Batch:
    """A CPU loader worker runs the models too (one thread each: processes in parallel, as the
    workers are), so the main process only writes; the pixels are not sent back."""
    from infer.predict import Scorer

    outputs = {}
    if batch.keys:
        for model_id, directory, pre in chunk.models:
            if model_id not in WORKER_MODELS:
                WORKER_MODELS[model_id] = checkpoints.load(Path(directory))[0]
            scorer = Scorer(WORKER_MODELS[model_id], pre, chunk.class_subset, torch.device("cpu"))
            outputs[model_id] = {
                k: v.numpy() for k, v in scorer(batch.pixels, batch.labels).items()
            }
    return Batch(batch.group, batch.keys, batch.labels, batch.pixels[:0], batch.errors, outputs)


def loader(items: Sequence[Chunk], workers: int, pin_memory: bool) -> DataLoader:
    """Batches in chunk order, decoded by `workers` spawned processes (0: in this one), each
    keeping up to 4 batches ready. Workers die with this process, however it ends."""
    return DataLoader(
        Chunks(items),
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
