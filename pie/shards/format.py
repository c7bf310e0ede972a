"""What a packed dataset is on disk: the names, the key rule and the URL rule, stated once.

A sample is one image with its integer label and JSON metadata, stored as `<key>.<ext>` (the
source bytes, untouched), `<key>.cls` (the label in ASCII) and `<key>.json`. A dataset directory
holds its shards `<prefix>-000000.tar ...`, one offsets file per shard
(`<prefix>-000000.idx.npy`: one row per sample, `OFFSETS` then the key) and `index.json` (the
wids shard index, which names each shard's offsets file).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from pie.errors import PieError

INDEX = "index.json"
SHARD_NAME = "{prefix}-{index:06d}.tar"
IMAGE_EXTS = ("png", "jpg", "jpeg", "webp", "ppm", "bmp")
# one row per sample of a shard: where its image is in the tar, its label (then its key)
OFFSETS = (("offset", "<i8"), ("size", "<i8"), ("label", "<i8"))
# WebDataset splits a member name at the first dot of its last component: keys have none.
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_\-/]+$")


def split_member(name: str) -> tuple[str, str]:
    """(key, field) of a tar member name, as webdataset groups members into samples: the key is
    the name up to the first dot of its last component (`a/b.c.d` -> (`a/b`, `c.d`))."""
    directory, _, base = name.rpartition("/")
    stem, _, field = base.partition(".")
    return (f"{directory}/{stem}" if directory else stem), field


def check_key(key: str) -> None:
    if not KEY_PATTERN.match(key):
        raise PieError(f"invalid sample key {key!r}: use letters, digits, _ - / only")


def safe_key(text: str) -> str:
    """A WebDataset-safe key from free text (file stems, CSV ids): no dots, no spaces."""
    return re.sub(r"[^A-Za-z0-9_\-/]", "_", text)


def shard_name(prefix: str, index: int) -> str:
    return SHARD_NAME.format(prefix=prefix, index=index)


def offsets_name(shard: str) -> str:
    """The offsets file of a shard: `<prefix>-000000.tar` -> `<prefix>-000000.idx.npy`."""
    return shard.removesuffix(".tar") + ".idx.npy"


def locate(directory: Path, url: str) -> tuple[str, str | None]:
    """The URL rule: (url as a reader opens it, local file or None) of an index url. A path
    relative to the index (what pie writes) is joined to its directory; an absolute path or a
    `file:` URL is a local file; `pipe:` commands and other schemes (`s3:`, `http:`, opened by
    webdataset's `gopen`) are not local. A one-letter scheme is a Windows drive."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return url, url2pathname(parsed.path)
    if parsed.scheme and len(parsed.scheme) > 1:
        return url, None
    path = url if Path(url).is_absolute() else str(directory / url)
    return path, path
