"""Writing shards: reproducible bytes, bounded shards, the index and the offsets files.

Shards are written into a `.partial` directory that is synced and renamed into place once
complete (`pie.durable`), so a dataset directory is either whole or absent. Bytes are
reproducible: fixed mtime, owner and mode, samples in the order given, JSON with sorted keys.

Where one shard ends is decided by the samples alone (`shard_bounds`): at most `max_count`
samples, and a shard closes before the sample whose image bytes, plus `SAMPLE_OVERHEAD` for its
tar headers, label and metadata, would take it past `max_size` (a single larger sample gets a
shard of its own). So shard k's contents, and its bytes, do not depend on who writes it:
parallel writers (`write_tar`, one whole shard each) produce what one sequential writer
(`write_shards`) would.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pie import durable
from pie.errors import PieError
from pie.shards.format import INDEX, check_key, offsets_name, shard_name
from pie.shards.index import offsets_table

SAMPLE_OVERHEAD = 2048  # bytes counted per sample besides its image: 3 tar headers, cls, json


@dataclass(frozen=True)
class Sample:
    key: str
    label: int
    data: bytes  # the encoded image, stored as is
    ext: str  # "png", "jpg", ...
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Packed:
    """What was packed: one (key, label, shard) per sample, in order."""

    keys: list[str]
    labels: list[int]
    shards: list[str]
    n_shards: int


@dataclass(frozen=True)
class ShardFile:
    """One written shard, as the index lists it."""

    name: str
    nsamples: int
    filesize: int
    sha256: str
    offsets: str = ""  # the name of its offsets file (`offsets_name`); "" for none


def shard_bounds(sizes: Iterable[int], max_count: int, max_size: int) -> list[int]:
    """Where each shard starts, for samples whose image bytes are `sizes` (in order): a list of
    start positions, beginning with 0 (empty for no samples)."""
    starts: list[int] = []
    count = used = 0
    for i, size in enumerate(sizes):
        cost = size + SAMPLE_OVERHEAD
        if not starts or count == max_count or (count and used + cost > max_size):
            starts.append(i)
            count = used = 0
        count += 1
        used += cost
    return starts


def write_tar(samples: Iterable[Sample], path: Path) -> ShardFile:
    """Write one shard and return what its index entry needs."""
    with TarShard(path) as shard:
        for s in samples:
            shard.add(s)
    return shard.file


class TarShard:
    """One shard being written, a sample at a time. The bytes are those of webdataset's
    `TarWriter(mtime=0)` (members in sorted field order, mode 0444, owner bigdata), written with
    the standard library so that worker processes need not import webdataset (and torch with
    it); the sha256 and size are computed on the way, and each image's offset in the tar is
    noted. Once closed without an error, the offsets file is written beside the shard
    (`offsets_name`) and `file` is set."""

    def __init__(self, path: Path) -> None:
        self.path, self.n = path, 0
        self.raw = path.open("wb")
        self.hashed = HashingWriter(self.raw)
        self.tar = tarfile.open(fileobj=self.hashed, mode="w|")  # noqa: SIM115
        self.rows: list[tuple[int, int, int]] = []  # (image offset, size, label) per sample
        self.keys: list[str] = []

    def add(self, s: Sample) -> None:
        check_key(s.key)
        fields = {
            s.ext: s.data,
            "cls": str(s.label).encode(),
            "json": json.dumps(s.meta, sort_keys=True).encode(),
        }
        for name in sorted(fields):
            info = tarfile.TarInfo(f"{s.key}.{name}")
            info.size, info.mtime, info.mode = len(fields[name]), 0, 0o444
            info.uname = info.gname = "bigdata"
            self.tar.addfile(info, io.BytesIO(fields[name]))
            if name == s.ext:  # the data ends the member, padded to 512-byte blocks
                padded = -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
                self.rows.append((self.tar.offset - padded, info.size, s.label))
        self.keys.append(s.key)
        self.n += 1

    def __enter__(self) -> TarShard:
        return self

    def __exit__(self, kind: type | None, *exc: object) -> None:
        self.tar.close()
        self.raw.close()
        if kind is not None:
            return
        name = offsets_name(self.path.name)
        write_offsets(self.path.with_name(name), offsets_table(self.rows, self.keys))
        h = self.hashed
        self.file = ShardFile(self.path.name, self.n, h.size, h.sha256.hexdigest(), name)


def write_offsets(path: Path, table: np.ndarray) -> None:
    """A `.npy` file (format 1.0, so the same rows give the same bytes)."""
    with path.open("wb") as f:
        np.lib.format.write_array(f, table, version=(1, 0), allow_pickle=False)


class HashingWriter:
    """A binary file wrapper that hashes and counts what is written through it."""

    def __init__(self, file: BinaryIO) -> None:
        self.file, self.sha256, self.size = file, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.file.write(data)


def partial_dir(out_dir: Path) -> Path:
    """A fresh, empty `<out_dir>.partial` to write shards into."""
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return partial


def publish(partial: Path, out_dir: Path, shards: Sequence[ShardFile]) -> None:
    """Write the index of a complete `.partial` directory and rename it into place."""
    write_index(partial, out_dir.name, shards)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    durable.replace(partial, out_dir)


def write_shards(
    samples: Iterable[Sample],
    out_dir: Path,
    prefix: str,
    max_count: int = 10_000,
    max_size: int = 256 * 1024 * 1024,
) -> Packed:
    """Pack `samples`, streamed in order, into `<out_dir>/<prefix>-000000.tar ...` plus the
    index; shard boundaries as `shard_bounds` (the same bytes as parallel writers)."""
    partial = partial_dir(out_dir)
    keys: list[str] = []
    labels: list[int] = []
    shards: list[str] = []
    files: list[ShardFile] = []
    seen: set[str] = set()
    pending: list[Sample] = []  # the open shard's samples (at most max_count)
    used = 0

    def flush() -> None:
        nonlocal used
        name = shard_name(prefix, len(files))
        files.append(write_tar(pending, partial / name))
        shards.extend([name] * len(pending))
        pending.clear()
        used = 0

    try:
        for s in samples:
            check_key(s.key)
            if s.key in seen:
                raise PieError(f"duplicate sample key {s.key!r} in {out_dir.name}")
            seen.add(s.key)
            cost = len(s.data) + SAMPLE_OVERHEAD
            if pending and (len(pending) == max_count or used + cost > max_size):
                flush()
            pending.append(s)
            used += cost
            keys.append(s.key)
            labels.append(s.label)
        if pending:
            flush()
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if not keys:
        shutil.rmtree(partial)
        raise PieError(f"no samples to write for {out_dir.name}")
    publish(partial, out_dir, files)
    return Packed(keys, labels, shards, len(files))


def write_index(directory: Path, name: str, shards: Sequence[ShardFile]) -> None:
    """The wids shard index: relative URLs, so the directory can move. Each shard also gets
    its sha256 (an extra field wids ignores): tar files are padded to 10 KiB records, so sizes
    and counts alone rarely tell two packings apart, and `dataset_hash` must; and the name of
    its offsets file (another extra field), when it has one."""

    def entry(s: ShardFile) -> dict[str, Any]:
        out = {"url": s.name, "nsamples": s.nsamples, "filesize": s.filesize, "sha256": s.sha256}
        return out | {"offsets": s.offsets} if s.offsets else out

    index = {
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "name": name,
        "shardlist": [entry(s) for s in shards],
    }
    (directory / INDEX).write_text(json.dumps(index, indent=2) + "\n")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
