"""The shard index of a packed dataset: which shards it has, where they are, how many samples
each holds, and where each sample's image lies in its tar (the offsets files).

The index (`index.json`, wids format) lists each shard's `url`, `nsamples`, `filesize` and
`sha256`, and `offsets`: the name of the shard's offsets file, beside the index, written with the
shard. An offsets file holds one row per sample, in shard order: the image's byte offset and size
in the tar, the label and the key (24 bytes plus the longest key of the shard per image), so a
reader finds a sample by position without walking the tar's headers, as wids reads samples by
offset from a per-shard index. wids ignores the extra fields. An index written before offsets
files has no `offsets`: a local shard is then scanned once (`pie.shards.read.scan_offsets`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pie.errors import PieError
from pie.shards.format import INDEX, OFFSETS, locate


@dataclass(frozen=True)
class Shard:
    """One shard as the index lists it."""

    url: str  # as a reader opens it (`format.locate`)
    path: str | None  # the local file; None on an object store or behind a `pipe:` command
    n: int  # samples
    filesize: int | None = None
    offsets: str | None = None  # the offsets file; None where the index names none


def read_index(directory: Path) -> dict[str, Any]:
    path = directory / INDEX
    if not path.exists():
        raise PieError(f"no shard index at {path}: the dataset is missing or incomplete")
    return json.loads(path.read_text())


def shards(directory: Path) -> tuple[Shard, ...]:
    """Every shard of a packed dataset, in index order."""
    out = []
    for s in read_index(directory)["shardlist"]:
        url, path = locate(directory, s["url"])
        offsets = str(directory / s["offsets"]) if s.get("offsets") else None
        out.append(Shard(url, path, int(s["nsamples"]), s.get("filesize"), offsets))
    return tuple(out)


def dataset_hash(directory: Path) -> str:
    """The content hash of a packed dataset: the sha256 of its `index.json`, which lists every
    shard with its size, sample count and sha256. Shard bytes are reproducible, so packing the
    same samples again gives the same hash, and a re-pack with other content another one.
    Predictions and decode caches are pinned to it."""
    path = directory / INDEX
    if not path.exists():
        raise PieError(f"no shard index at {path}: the dataset is missing or incomplete")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_present(directory: Path) -> tuple[Shard, ...]:
    """The shards of a dataset, after checking that every local one is there at the size its
    index says, with its offsets file: a one-line PieError naming what is wrong, before a run
    starts rather than in a loader worker. Remote shards are not looked at."""
    found = shards(directory)
    for s in found:
        if s.path is None:
            continue
        path = Path(s.path)
        if not path.is_file():
            raise PieError(f"shard {path} is missing: its dataset changed since it was packed")
        size = path.stat().st_size
        if s.filesize is not None and size != s.filesize:
            raise PieError(
                f"shard {path} has {size} bytes, its index says {s.filesize}: "
                "truncated or replaced; pack the dataset again"
            )
        if s.offsets is not None and not Path(s.offsets).is_file():
            raise PieError(f"offsets file {s.offsets} is missing: pack it again")
    return found


def shard_paths(directory: Path) -> list[Path]:
    """The local files of a dataset's shards; a remote shard has none (a user error)."""
    out = []
    for s in shards(directory):
        if s.path is None:
            raise PieError(f"shard {s.url} of {directory} is not a local file")
        out.append(Path(s.path))
    return out


def read_offsets(path: str, expected: int) -> np.ndarray:
    """A shard's offsets file, memory-mapped (read lazily, shared between processes by the page
    cache); missing, unreadable or holding other than `expected` rows is a PieError."""
    try:
        table = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        why = f"offsets file {path} cannot be read ({e})"
        raise PieError(f"{why}: pack the dataset again") from None
    if table.dtype.names is None or table.dtype.names[:3] != tuple(n for n, _ in OFFSETS):
        raise PieError(f"{path} is not an offsets file: pack the dataset again")
    if len(table) != expected:
        raise PieError(
            f"offsets file {path} lists {len(table)} samples, the index {expected}: "
            "pack the dataset again"
        )
    return table


def offsets_table(rows: list[tuple[int, int, int]], keys: list[str]) -> np.ndarray:
    """One record per sample (`OFFSETS`, then `key` as ASCII bytes as wide as the longest)."""
    encoded = [k.encode() for k in keys]
    width = max((len(k) for k in encoded), default=1)
    table = np.empty(len(rows), [*OFFSETS, ("key", f"S{width}")])
    for i, (name, _) in enumerate(OFFSETS):
        table[name] = [row[i] for row in rows]
    table["key"] = encoded
    return table
