"""WebDataset shards: reproducible writing, sequential reading, the wids index.

A sample is one image with its integer label and JSON metadata, stored as
`<key>.<ext>` (the source bytes, untouched), `<key>.cls` (the label in ASCII) and
`<key>.json`. Shards are written into a `.partial` directory that is renamed into place
once complete, so a dataset directory is either whole or absent. Bytes are reproducible:
fixed mtime, owner and mode, samples in source order, JSON with sorted keys.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import webdataset as wds

from pie.errors import PieError

INDEX = "index.json"
# WebDataset splits a member name at the first dot of its last component: keys have none.
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_\-/]+$")
IMAGE_EXTS = ("png", "jpg", "jpeg", "webp", "ppm", "bmp")


@dataclass(frozen=True)
class Sample:
    key: str
    label: int
    data: bytes  # the encoded image, stored as is
    ext: str  # "png", "jpg", ...
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Written:
    """What `write_shards` packed: one (key, label, shard) per sample, in order."""

    keys: list[str]
    labels: list[int]
    shards: list[str]
    n_shards: int


def safe_key(text: str) -> str:
    """A WebDataset-safe key from free text (file stems, CSV ids): no dots, no spaces."""
    return re.sub(r"[^A-Za-z0-9_\-/]", "_", text)


def write_shards(
    samples: Iterable[Sample],
    out_dir: Path,
    prefix: str,
    max_count: int = 10_000,
    max_size: int = 512 * 1024 * 1024,
) -> Written:
    """Pack `samples` into `<out_dir>/<prefix>-000000.tar ...` plus a wids `index.json`."""
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    pattern = str(partial / f"{prefix}-%06d.tar")
    try:
        keys, labels, shards = _write(samples, pattern, max_count, max_size, out_dir.name)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if not keys:
        shutil.rmtree(partial)
        raise PieError(f"no samples to write for {out_dir.name}")
    names = sorted(p.name for p in partial.glob(f"{prefix}-*.tar"))
    counts = Counter(shards)
    write_index(partial, out_dir.name, [(name, counts[name]) for name in names])
    if out_dir.exists():
        shutil.rmtree(out_dir)
    partial.rename(out_dir)
    return Written(keys, labels, shards, len(names))


def _write(
    samples: Iterable[Sample], pattern: str, max_count: int, max_size: int, name: str
) -> tuple[list[str], list[int], list[str]]:
    keys: list[str] = []
    labels: list[int] = []
    shards: list[str] = []
    seen: set[str] = set()
    with wds.ShardWriter(pattern, maxcount=max_count, maxsize=max_size, verbose=0, mtime=0) as w:
        for s in samples:
            if not KEY_PATTERN.match(s.key):
                raise PieError(f"invalid sample key {s.key!r}: use letters, digits, _ - / only")
            if s.key in seen:
                raise PieError(f"duplicate sample key {s.key!r} in {name}")
            seen.add(s.key)
            w.write(
                {
                    "__key__": s.key,
                    s.ext: s.data,
                    "cls": str(s.label).encode(),
                    "json": json.dumps(s.meta, sort_keys=True).encode(),
                }
            )
            keys.append(s.key)
            labels.append(s.label)
            shards.append(Path(w.fname).name)
    return keys, labels, shards


def write_index(directory: Path, name: str, shards: list[tuple[str, int]]) -> None:
    """The wids shard index: relative URLs, so the directory can move. Each shard also gets
    its sha256 (an extra field wids ignores): tar files are padded to 10 KiB records, so sizes
    and counts alone rarely tell two packings apart, and `dataset_hash` must."""
    index = {
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "name": name,
        "shardlist": [
            {
                "url": shard,
                "nsamples": n,
                "filesize": (directory / shard).stat().st_size,
                "sha256": sha256_file(directory / shard),
            }
            for shard, n in shards
        ],
    }
    (directory / INDEX).write_text(json.dumps(index, indent=2) + "\n")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_index(directory: Path) -> dict[str, Any]:
    path = directory / INDEX
    if not path.exists():
        raise PieError(f"no shard index at {path}: the dataset is missing or incomplete")
    return json.loads(path.read_text())


def dataset_hash(directory: Path) -> str:
    """The content hash of a packed dataset: the sha256 of its `index.json`, which lists every
    shard with its size, sample count and sha256 (`write_index`). Shard bytes are reproducible,
    so packing the same samples again gives the same hash, and a re-pack with other content
    another one. Predictions and decode caches are pinned to it."""
    path = directory / INDEX
    if not path.exists():
        raise PieError(f"no shard index at {path}: the dataset is missing or incomplete")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shard_paths(directory: Path) -> list[Path]:
    return [directory / s["url"] for s in read_index(directory)["shardlist"]]


def shard_urls(directory: Path) -> list[tuple[str, int]]:
    """(url, number of samples) of every shard, in index order: what streaming readers open
    (webdataset or wids); the counts give an epoch's length without opening the tars."""
    return [
        (str(directory / s["url"]), int(s["nsamples"])) for s in read_index(directory)["shardlist"]
    ]


def read_shards(directory: Path) -> Iterator[dict[str, Any]]:
    """Yield raw samples in shard order: `__key__`, the image bytes under its extension,
    `cls` (int) and `json` (dict)."""
    urls = [str(p) for p in shard_paths(directory)]
    for raw in wds.WebDataset(urls, shardshuffle=False, empty_check=False):
        sample = {k: v for k, v in raw.items() if k not in ("__url__", "__local_path__")}
        sample["cls"] = int(sample["cls"])
        sample["json"] = json.loads(sample["json"])
        yield sample


def image_field(sample: dict[str, Any]) -> tuple[str, bytes]:
    """The (extension, bytes) of a raw sample's image."""
    for ext in IMAGE_EXTS:
        if ext in sample:
            return ext, sample[ext]
    raise PieError(f"sample {sample.get('__key__')!r} has no image ({', '.join(IMAGE_EXTS)})")
