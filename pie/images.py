"""Decoding and the decode-once pixel cache shared by training and inference.

A dataset is decoded and resized once per preprocessing spec and rule into a uint8 array
`(N, C, H, W)` under `cache/<dataset>/`, memory-mapped by every later reader; models then
see `normalize(batch)`. The cache is keyed by the dataset's content hash
(`pie.shards.dataset_hash`), the spec and the rule, so a re-packed dataset gets a fresh cache.

The rule depends on what the dataset is, never on the size of its images:
- resize-then-crop (the default, every dataset but the ones below): the shorter side is resized
  to `size / crop_fraction`, then the center `size` x `size` is cropped (ImageNet's 256 -> 224);
- center crop only (`center_crop_only(dataset_row)`: ImageNet-C style corruptions, released or
  made by `pie corrupt`, which are stored already as the model-size center crops of their parent):
  an image smaller than `size` is an error for that image.
Resizing an image to the size it already has is skipped (a no-op, not a rule).

An image that cannot be decoded is skipped and recorded with the cache (`Cached.errors`); a
strict reader (the default, e.g. training) refuses such a dataset, inference evaluates the rest.
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from pie.errors import PieError
from pie.paths import WorkRoot
from pie.shards import dataset_hash, image_field, read_index, read_shards

SMALL_INPUT = 32  # model inputs up to this size (28-32 px: MNIST, CIFAR) are the whole image


class DecodeError(PieError):
    """One image cannot become a model input (corrupt bytes, too small for a crop-only rule)."""


@dataclass(frozen=True)
class Preprocess:
    """How an encoded image becomes a model input; saved in every checkpoint's sidecar.

    `crop_fraction` is the share of the resized shorter side kept by the center crop. Left out,
    it is 1.0 for small inputs (size <= 32: the whole image, resized to `size`, an identity for
    28 px Fashion-MNIST at size 28) and 0.875 otherwise (ImageNet's 256 -> 224); the resolved
    value is what `to_dict` saves.
    """

    size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_fraction: float | None = None

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError("mean and std need one value per channel")
        if self.crop_fraction is None:
            default = 1.0 if self.size <= SMALL_INPUT else 0.875
            object.__setattr__(self, "crop_fraction", default)
        if not 0.0 < self.crop_fraction <= 1.0:
            raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction}")

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


def center_crop_only(dataset: Mapping[str, Any]) -> bool:
    """The preprocessing rule of a `datasets` row: True for ImageNet-C style corruptions
    (kind 'corrupted'), released or generated: both are stored as the model-size center crops of
    their parent (released ImageNet-C at 224 px; `pie corrupt` corrupts the parent's decoded
    crops), so resizing them again would zoom them relative to their clean parent."""
    return dataset["kind"] == "corrupted" and dataset["origin"] in ("released", "generated")


def decode(data: bytes, pre: Preprocess, center_crop_only: bool = False) -> np.ndarray:
    """Encoded bytes -> uint8 array (C, size, size); `DecodeError` for an unusable image."""
    try:
        im = Image.open(io.BytesIO(data))
        im = im.convert("L" if pre.channels == 1 else "RGB")
    except Exception as e:  # PIL raises many types for corrupt files
        raise DecodeError(f"cannot decode image: {e}") from None
    w, h = im.size
    if center_crop_only:
        if min(w, h) < pre.size:
            raise DecodeError(f"image is {w}x{h}, smaller than the {pre.size} px center crop")
    else:
        scale = round(pre.size / pre.crop_fraction) / min(w, h)
        target = (max(pre.size, round(w * scale)), max(pre.size, round(h * scale)))
        if target != (w, h):
            im = im.resize(target, Image.Resampling.BILINEAR)
            w, h = target
    left, top = (w - pre.size) // 2, (h - pre.size) // 2
    if (left, top, w, h) != (0, 0, pre.size, pre.size):
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
    """A decoded dataset: keys and labels in shard order, pixels memory-mapped; `errors` holds
    the (key, error) of every image left out because it could not be decoded, `dataset_hash`
    the content hash of the shards it was decoded from."""

    keys: np.ndarray
    labels: np.ndarray
    pixels: np.ndarray
    errors: tuple[tuple[str, str], ...] = ()
    dataset_hash: str = ""

    def __len__(self) -> int:
        return len(self.keys)


def load_cached(
    root: WorkRoot,
    dataset: str,
    pre: Preprocess,
    progress: Callable[[int], None] | None = None,
    *,
    center_crop_only: bool = False,
    strict: bool = True,
) -> Cached:
    """Decode `dataset` once for `pre` and the rule (or reuse the cache) and memory-map it.

    strict: an image that cannot be decoded is a `PieError` for the whole dataset; otherwise
    such images are left out and listed in `Cached.errors`.
    """
    content = dataset_hash(root.shards(dataset))
    rule = "croponly" if center_crop_only else "resize"
    # pixels depend on the shards, the geometry (spec) and the rule, not on mean/std
    directory = root.cache(dataset) / f"{pre.spec}-{rule}-{content[:12]}"
    if not (directory / "pixels.npy").exists():
        build_cache(root, dataset, pre, center_crop_only, directory, progress)
    errors = tuple((k, e) for k, e in json.loads((directory / "errors.json").read_text()))
    if strict and errors:
        key, error = errors[0]
        raise PieError(
            f"dataset {dataset}: {len(errors)} images cannot be decoded (first: {key}: {error})"
        )
    return Cached(
        keys=np.load(directory / "keys.npy"),
        labels=np.load(directory / "labels.npy"),
        pixels=np.load(directory / "pixels.npy", mmap_mode="r"),
        errors=errors,
        dataset_hash=content,
    )


def build_cache(
    root: WorkRoot,
    dataset: str,
    pre: Preprocess,
    center_crop_only: bool,
    directory: Path,
    progress: Callable[[int], None] | None,
) -> None:
    n = sum(s["nsamples"] for s in read_index(root.shards(dataset))["shardlist"])
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    shape = (n, pre.channels, pre.size, pre.size)
    pixels = np.lib.format.open_memmap(partial / "pixels.npy", "w+", np.uint8, shape)
    keys, labels, errors, seen = [], [], [], 0
    for seen, sample in enumerate(read_shards(root.shards(dataset)), start=1):
        try:
            pixels[len(keys)] = decode(image_field(sample)[1], pre, center_crop_only)
        except DecodeError as e:
            errors.append((sample["__key__"], str(e)))
        else:
            keys.append(sample["__key__"])
            labels.append(sample["cls"])
        if progress and seen % 1000 == 0:
            progress(1000)
    if progress:
        progress(seen % 1000)
    if seen != n:
        raise PieError(f"dataset {dataset}: index lists {n} images, shards hold {seen}")
    pixels.flush()
    if errors:  # keep only the decoded rows
        kept = np.lib.format.open_memmap(
            partial / "kept.npy", "w+", np.uint8, (len(keys), *shape[1:])
        )
        for start in range(0, len(keys), 4096):
            stop = min(start + 4096, len(keys))
            kept[start:stop] = pixels[start:stop]
        kept.flush()
        del kept
        (partial / "kept.npy").replace(partial / "pixels.npy")
    del pixels
    np.save(partial / "keys.npy", np.array(keys))
    np.save(partial / "labels.npy", np.array(labels, dtype=np.int64))
    (partial / "errors.json").write_text(json.dumps(errors) + "\n")
    spec_and_rule = directory.name.rsplit("-", 1)[0]  # the name less the content hash
    for stale in directory.parent.glob(f"{spec_and_rule}-*"):
        if stale != partial:  # an older cache of a re-packed dataset
            shutil.rmtree(stale, ignore_errors=True)
    partial.rename(directory)
