"""Training augmentation, a function of (seed, epoch, position in the epoch's order) alone.

`uniforms` is a counter-based generator (splitmix64), so any sample's draws are found without
the others': they do not depend on the number of ranks or loader workers, a resumed job can
start at any step, and the memory and streaming paths augment alike.

Policies (`train.augment`, "auto" by input size): inputs of 32 px or less get pad-4, random crop
and horizontal flip ("crop_flip"); larger ones a random resized crop (scale 0.08-1, aspect
3/4-4/3, torchvision's rule) and flip ("resized_crop_flip"); "flip" and "none" as named.
`augment_sample` augments one encoded image (streaming: from the full-resolution image);
`augment_batch` a batch of stored crops (the memory path: from the stored center crop).
"""

from __future__ import annotations

import hashlib
import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pie.images import SMALL_INPUT, DecodeError, Preprocess, decode

PAD = 4  # crop_flip: zero padding on each side before the random crop
SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)


def mix(*values: int) -> int:
    """A 63-bit seed from integers (stable across runs and platforms)."""
    text = "/".join(str(v) for v in values)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def resolve_augment(asked: str, size: int) -> str:
    if asked != "auto":
        return asked
    return "crop_flip" if size <= SMALL_INPUT else "resized_crop_flip"


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
