"""Decoding and the decode-once pixel cache shared by training and inference.

A dataset is decoded and resized once per preprocessing spec into a uint8 array
`(N, C, H, W)` under `cache/<dataset>/`, memory-mapped by every later reader; models then
see `normalize(batch)`. The cache is keyed by the shard index and the spec, so a re-packed
dataset gets a fresh cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pie.errors import PieError
from pie.paths import WorkRoot
from pie.shards import image_field, read_index, read_shards


@dataclass(frozen=True)
class Preprocess:
    """How an encoded image becomes a model input; saved in every checkpoint's sidecar.

    Images whose shorter side is already `size` are only center-cropped (ImageNet-C is released
    at 224 px and must not be resized again); others are resized so the shorter side is
    `size / crop_fraction`, then center-cropped to `size` (the usual 256 -> 224).
    """

    size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_fraction: float = 0.875

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError("mean and std need one value per channel")

    @classmethod
    def pixels_only(cls, size: int, channels: int) -> Preprocess:
        """A spec for reading pixels (mean 0, std 1), e.g. to corrupt them."""
        return cls(size, channels, (0.0,) * channels, (1.0,) * channels)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        return cls(**{**d, "mean": tuple(d["mean"]), "std": tuple(d["std"])})

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std)}

    @property
    def spec(self) -> str:
        return f"{self.size}px-{self.channels}ch-crop{self.crop_fraction:g}"


def decode(data: bytes, pre: Preprocess) -> np.ndarray:
    """Encoded bytes -> uint8 array (C, size, size)."""
    try:
        im = Image.open(io.BytesIO(data))
        im = im.convert("L" if pre.channels == 1 else "RGB")
    except Exception as e:  # PIL raises many types for corrupt files
        raise PieError(f"cannot decode image: {e}") from None
    w, h = im.size
    if min(w, h) != pre.size:
        short = round(pre.size / pre.crop_fraction)
        scale = short / min(w, h)
        im = im.resize(
            (max(pre.size, round(w * scale)), max(pre.size, round(h * scale))),
            Image.Resampling.BILINEAR,
        )
        w, h = im.size
    left, top = (w - pre.size) // 2, (h - pre.size) // 2
    im = im.crop((left, top, left + pre.size, top + pre.size))
    pixels = np.asarray(im, dtype=np.uint8)
    return pixels[None] if pre.channels == 1 else pixels.transpose(2, 0, 1)


def normalize(batch: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 normalised with the spec's mean and std."""
    mean = torch.tensor(pre.mean, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    std = torch.tensor(pre.std, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    return (batch.float() / 255.0 - mean) / std


@dataclass(frozen=True)
class Cached:
    """A decoded dataset: keys and labels in shard order, pixels memory-mapped."""

    keys: np.ndarray
    labels: np.ndarray
    pixels: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)


def load_cached(
    root: WorkRoot,
    dataset: str,
    pre: Preprocess,
    progress: Callable[[int], None] | None = None,
) -> Cached:
    """Decode `dataset` once for `pre` (or reuse the cache) and memory-map it."""
    index = read_index(root.shards(dataset))
    # pixels depend on the shards and the geometry (spec), not on mean/std
    digest = hashlib.sha256(json.dumps([index["shardlist"], pre.spec]).encode()).hexdigest()[:12]
    directory = root.cache(dataset) / f"{pre.spec}-{digest}"
    if not (directory / "pixels.npy").exists():
        build_cache(root, dataset, pre, directory, progress)
    return Cached(
        keys=np.load(directory / "keys.npy"),
        labels=np.load(directory / "labels.npy"),
        pixels=np.load(directory / "pixels.npy", mmap_mode="r"),
    )


def build_cache(
    root: WorkRoot,
    dataset: str,
    pre: Preprocess,
    directory: Path,
    progress: Callable[[int], None] | None,
) -> None:
    n = sum(s["nsamples"] for s in read_index(root.shards(dataset))["shardlist"])
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    shape = (n, pre.channels, pre.size, pre.size)
    pixels = np.lib.format.open_memmap(partial / "pixels.npy", "w+", np.uint8, shape)
    keys, labels = [], []
    for i, sample in enumerate(read_shards(root.shards(dataset))):
        pixels[i] = decode(image_field(sample)[1], pre)
        keys.append(sample["__key__"])
        labels.append(sample["cls"])
        if progress and (i + 1) % 1000 == 0:
            progress(1000)
    if progress:
        progress(len(keys) % 1000)
    if len(keys) != n:
        raise PieError(f"dataset {dataset}: index lists {n} images, shards hold {len(keys)}")
    pixels.flush()
    del pixels
    np.save(partial / "keys.npy", np.array(keys))
    np.save(partial / "labels.npy", np.array(labels, dtype=np.int64))
    for stale in directory.parent.glob(f"{pre.spec}-*"):
        if stale != partial:  # an older cache of a re-packed dataset
            shutil.rmtree(stale, ignore_errors=True)
    partial.rename(directory)
