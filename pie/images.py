"""Decoding shared by training, inference and `pie corrupt`: an encoded image becomes a uint8
array `(C, size, size)` by the dataset's rule, and a batch becomes model input with
`normalize(batch, pre)`. Nothing decoded is ever written to disk: each stage streams its
shards and decodes per sample.

The rule depends on what the dataset is, never on the size of its images:
- resize-then-crop (the default, every dataset but the ones below): torchvision.transforms.v2
  `Resize(round(size / crop_fraction))` then `CenterCrop(size)` (ImageNet's 256 -> 224), pixel
  for pixel, as torchvision's own functionals compute them on the PIL image: the shorter side
  becomes `round(size / crop_fraction)` and the longer one `int(that * long / short)`
  (truncated), by the spec's interpolation (bilinear unless a model's metadata says otherwise,
  e.g. bicubic for many timm models) and antialiased (PIL's resize), and the crop's top-left
  corner is `round((side - size) / 2)` on each axis (Python's rounding, halves to even);
- center crop only (`center_crop_only(dataset_row)`: ImageNet-C style corruptions, released or
  made by `pie corrupt`, which are stored already as the model-size center crops of their parent):
  the same `CenterCrop(size)` without the resize; an image smaller than `size` is an error for
  that image.
Resizing an image to the size it already has is skipped (torchvision's rule: an identity).
`DECODE_VERSION` names these pixels: predictions stored from another version (`pie infer`
records it in `inference_runs.preprocess`) are evaluated again.

An image that cannot be decoded raises `DecodeError`: inference skips and records it
(`decode_errors`), training refuses the dataset in one line.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from pie.errors import PieError

DECODE_VERSION = (
    2  # 1: own arithmetic (long side and crop offsets rounded otherwise); 2: torchvision
)
RULES = ("resize_then_crop", "center_crop_only")  # how an image becomes a model input
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")  # PIL's filters
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

    `interpolation` is the resize filter (`INTERPOLATIONS`, torchvision's InterpolationMode
    names); bilinear unless the model's own preprocessing says otherwise.

    `rule` is "resize_then_crop" (a model's own rule, what its sidecar saves) or
    "center_crop_only" (no resize): a dataset decides which its images take
    (`for_dataset`), once, where a model meets a dataset.
    """

    size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_fraction: float | None = None
    rule: str = "resize_then_crop"
    interpolation: str = "bilinear"

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
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(RULES)}, got {self.rule!r}")
        if self.interpolation not in INTERPOLATIONS:
            known = ", ".join(INTERPOLATIONS)
            raise ValueError(f"interpolation must be one of {known}, got {self.interpolation!r}")

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
        crop = "-croponly" if self.rule == "center_crop_only" else ""
        resize = "" if self.interpolation == "bilinear" else f"-{self.interpolation}"
        return f"{self.size}px-{self.channels}ch-crop{self.crop_fraction:g}{crop}{resize}"

    def for_dataset(self, dataset: Mapping[str, Any]) -> Preprocess:
        """This preprocessing for the images of a `datasets` row: center crop only for ImageNet-C
        style corruptions (kind 'corrupted'), released or generated: both are stored as the
        model-size center crops of their parent (released ImageNet-C at 224 px; `pie corrupt`
        corrupts the parent's decoded crops), so resizing them again would zoom them relative
        to their clean parent. Every other dataset: resize, then crop."""
        crops = dataset["kind"] == "corrupted" and dataset["origin"] in ("released", "generated")
        return replace(self, rule="center_crop_only" if crops else "resize_then_crop")


def decode(data: bytes, pre: Preprocess) -> np.ndarray:
    """Encoded bytes -> uint8 array (C, size, size); `DecodeError` for an unusable image.

    The pixels are those of torchvision.transforms.v2 `Resize(round(size / crop_fraction))`
    (the spec's interpolation, antialiased; an image already at that size is left as it is) then
    `CenterCrop(size)` on the PIL image, computed by torchvision's own functionals; the
    center_crop_only rule skips the resize."""
    try:
        im = Image.open(io.BytesIO(data))
        im = im.convert("L" if pre.channels == 1 else "RGB")
    except Exception as e:  # PIL raises many types for corrupt files
        raise DecodeError(f"cannot decode image: {e}") from None
    crop_only = pre.rule == "center_crop_only"
    if crop_only and min(im.size) < pre.size:
        w, h = im.size
        raise DecodeError(f"image is {w}x{h}, smaller than the {pre.size} px center crop")
    if not crop_only:
        mode = InterpolationMode(pre.interpolation)
        im = TF.resize(im, [round(pre.size / pre.crop_fraction)], mode)
    pixels = np.asarray(TF.center_crop(im, [pre.size, pre.size]), dtype=np.uint8)
    return pixels[None] if pre.channels == 1 else pixels.transpose(2, 0, 1)


def normalize(batch: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float32 normalised with the spec's mean and std."""
    mean = torch.tensor(pre.mean, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    std = torch.tensor(pre.std, dtype=torch.float32, device=batch.device).view(1, -1, 1, 1)
    return (batch.float() / 255.0 - mean) / std
