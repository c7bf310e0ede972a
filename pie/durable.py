"""Durable renames: what a name publishes is on disk before the name is.

A rename is atomic but not durable: after a power cut or a kernel crash the new name can point
at a file whose data never reached the disk (a zero-length checkpoint, a part without its
footer), or the rename itself can be lost. `replace` therefore fsyncs the source (a file, or a
directory: every file under it, then the directories), renames it, then fsyncs the directory
that holds the destination. Every file pie publishes by a rename goes through it: checkpoints,
resume states, prediction parts, shard directories with their index, manifests, the report.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def fsync(path: Path) -> None:
    """fsync one file or directory (its entries, not what they point to)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync(path: Path) -> None:
    """fsync a file, or a directory's files and subdirectories (recursively) and then itself."""
    if path.is_dir():
        for child in sorted(path.iterdir()):
            sync(child)
    fsync(path)


def replace(src: Path, dst: Path, rename: Callable[[Path, Path], T] | None = None) -> T | None:
    """`rename(src, dst)` (by default `os.replace`) with `src` synced before and the directory
    of `dst` after; returns what `rename` returns."""
    sync(Path(src))
    result = (rename or os.replace)(src, dst)
    fsync(Path(dst).parent)
    return result
