"""ImageNet-C style corruptions (Hendrycks & Dietterich, ICLR 2019), numpy/scipy/PIL only.

The 15 benchmark and 4 extra corruptions of `hendrycks/robustness`, written afresh with the
originals' severity constants: the CIFAR-10-C table for images with min(H, W) <= 64, the
ImageNet-C table above, lengths in pixels scaled by min(H, W) / reference size. Where and why
they deviate from the originals, and how grayscale images are corrupted:
docs/corruptions.md.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from ingest.corruption_ops import (
    Array,
    Rng,
    blur,
    disk_kernel,
    equalize_hist,
    filter2d,
    from_pil,
    frost_texture,
    line_blur,
    luma,
    pil,
    plasma_fractal,
    to_u8,
    warp,
    zoom_sum,
)
from ingest.corruption_tables import (  # the names live there: CLI help needs no scipy
    BENCHMARK,  # noqa: F401  (re-exported)
    CIFAR,
    COLOUR_ONLY,  # noqa: F401  (re-exported)
    CORRUPTIONS,
    EXTRA,  # noqa: F401  (re-exported)
    IMAGENET,
    SEVERITIES,
)

_WATER = np.array([175, 238, 238]) / 255  # pale turquoise
_MUD = np.array([63, 42, 20]) / 255  # mud brown
_FROST_TINT = np.array([0.82, 0.91, 1.0])  # bluish white
_EMBOSS = np.array([[-2.0, -1, 0], [-1, 1, 1], [0, 1, 2]])
_NEEDS_RGB = frozenset({"frost", "spatter", "saturate"})

Row = Any  # one severity row of a table: a number or a tuple of numbers


# ---- corruptions: (x, table row c, pixel scale s, rng) -> float image (clipped later) -------
def _gaussian_noise(x: Array, c: Row, s: float, rng: Rng) -> Array:
    return x + rng.normal(size=x.shape, scale=c)


def _shot_noise(x: Array, c: Row, s: float, rng: Rng) -> Array:
    return rng.poisson(x * c) / c


def _impulse_noise(x: Array, c: Row, s: float, rng: Rng) -> Array:
    """skimage's salt & pepper: each value flips w.p. c, to 0 or 1 with equal odds."""
    flipped = rng.random(x.shape) < c
    salt = rng.random(x.shape) < 0.5
    return np.where(flipped, salt.astype(float), x)


def _speckle_noise(x: Array, c: Row, s: float, rng: Rng) -> Array:
    return x + x * rng.normal(size=x.shape, scale=c)


def _gaussian_blur(x: Array, c: Row, s: float, rng: Rng) -> Array:
    return blur(x, c * s)


def _glass_blur(x: Array, c: Row, s: float, rng: Rng) -> Array:
    """Blur; then, `iterations` times, visit the interior pixels from the bottom-right (row by
    row, right to left) and give each the current value of the pixel at a random offset in
    [-d, d) per axis; blur again. (The original's tuple "swap" on an RGB array assigns through
    numpy views, so the neighbour keeps its value: a copy, which is how ImageNet-C and CIFAR-10-C
    were made.) Vectorised: a pixel whose source was already visited in the same pass inherits
    that source's result, so each pixel follows such links (pointer jumping) to the first source
    not yet visited, and one gather per pass moves all channels."""
    sigma, delta, iterations = c[0] * s, max(1, round(c[1] * s)), c[2]
    x = blur(x, sigma)
    h, w = x.shape[:2]
    rows, cols = np.arange(h - delta, delta, -1), np.arange(w - delta, delta, -1)
    visits = (rows[:, None] * w + cols[None, :]).ravel()  # in visiting order
    rank = np.full(h * w, visits.size)
    rank[visits] = np.arange(visits.size)
    index = np.arange(h * w)  # which blurred pixel each position now holds
    for _ in range(iterations):
        dx, dy = rng.integers(-delta, delta, size=(2, visits.size))
        source, link = np.arange(h * w), np.arange(h * w)
        source[visits] = visits + dy * w + dx
        visited_first = rank[source[visits]] < np.arange(visits.size)
        link[visits[visited_first]] = source[visits[visited_first]]
        while not np.array_equal(link[link], link):
            link = link[link]
        index = index[source[link]]
    return blur(x.reshape(h * w, -1)[index].reshape(x.shape), sigma)


def _defocus_blur(x: Array, c: Row, s: float, rng: Rng) -> Array:
    return filter2d(x, disk_kernel(c[0], c[1], s))


def _motion_blur(x: Array, c: Row, s: float, rng: Rng) -> Array:
    return line_blur(x, c[0] * s, c[1] * s, rng.uniform(-45, 45))


def _zoom_blur(x: Array, c: Row, s: float, rng: Rng) -> Array:
    zooms = tuple(np.arange(1, c[0], c[1]).tolist())
    return (x + zoom_sum(x, zooms)) / (len(zooms) + 1)


def _snow(x: Array, c: Row, s: float, rng: Rng) -> Array:
    """Zoomed, thresholded Gaussian noise motion-blurred into falling flakes (added, and added
    again rotated by 180 degrees) over an image brightened towards 1.5 * luminance + 0.5."""
    layer = rng.normal(size=(*x.shape[:2], 1), loc=c[0], scale=c[1])
    layer = zoom_sum(layer, (max(1.0, c[2] * s),))
    layer = np.clip(np.where(layer < c[3], 0, layer), 0, 1)
    layer = line_blur(layer, c[4] * s, c[5] * s, rng.uniform(-135, -45))
    x = c[6] * x + (1 - c[6]) * np.maximum(x, luma(x) * 1.5 + 0.5)
    return x + layer + layer[::-1, ::-1]


def _frost(x: Array, c: Row, s: float, rng: Rng) -> Array:
    texture = frost_texture(x.shape[0], x.shape[1], c[2] * s, rng)
    return c[0] * x + c[1] * texture[..., None] * _FROST_TINT


def _fog(x: Array, c: Row, s: float, rng: Rng) -> Array:
    h, w = x.shape[:2]
    size = 1 << (max(h, w) - 1).bit_length()
    peak = x.max()
    x = x + c[0] * plasma_fractal(size, c[1], rng)[:h, :w, None]
    return x * peak / (peak + c[0])


def _brightness(x: Array, c: Row, s: float, rng: Rng) -> Array:
    """HSV value + c with hue and saturation kept: every channel scales by V'/V."""
    v = x.max(axis=2, keepdims=True)
    v_new = np.minimum(v + c, 1)
    return np.where(v > 0, x * v_new / np.maximum(v, 1e-12), v_new)


def _contrast(x: Array, c: Row, s: float, rng: Rng) -> Array:
    means = x.mean(axis=(0, 1), keepdims=True)
    return (x - means) * c + means


def _elastic_transform(x: Array, c: Row, s: float, rng: Rng) -> Array:
    """Random affine (three points moved by up to `shift`, reflect-101 border), then a random
    displacement field: U(-1, 1) noise blurred by sigma, times alpha. Blurred white noise has
    amplitude ~ 1 / sigma, so alpha scales by s**2 for the displacement to scale by s."""
    alpha, sigma, shift = c[0] * s * s, c[1] * s, c[2] * s
    h, w = x.shape[:2]
    centre, half = np.array([h // 2, w // 2], dtype=float), min(h, w) // 3
    src = centre + np.array([[half, half], [half, -half], [-half, -half]])
    dst = src + rng.uniform(-shift, shift, size=src.shape)
    affine = np.linalg.solve(np.c_[dst, np.ones(3)], src)  # (row, col, 1) @ affine: dst -> src
    r, q = np.mgrid[0:h, 0:w].astype(float)
    x = warp(x, tuple(affine[0, i] * r + affine[1, i] * q + affine[2, i] for i in (0, 1)), "mirror")
    dx, dy = (blur(rng.uniform(-1, 1, (h, w)), sigma, "reflect", 3.0) * alpha for _ in "xy")
    return warp(x, (r + dy, q + dx), "reflect")


def _pixelate(x: Array, c: Row, s: float, rng: Rng) -> Array:
    h, w = x.shape[:2]
    small = pil(x).resize((max(1, int(w * c)), max(1, int(h * c))), Image.Resampling.BOX)
    return from_pil(small.resize((w, h), Image.Resampling.BOX), x.shape)


def _jpeg_compression(x: Array, c: Row, s: float, rng: Rng) -> Array:
    buf = io.BytesIO()
    pil(x).save(buf, format="JPEG", quality=c)
    with Image.open(buf) as im:
        return from_pil(im, x.shape)


def _spatter(x: Array, c: Row, s: float, rng: Rng) -> Array:
    """Water drops (severities 1-3 in both tables) or mud (4-5) from blurred, thresholded noise.
    Water: the drops' shading is the embossed, equalised distance to their edges."""
    mean, std, sigma, threshold, strength, mud = c
    liquid = blur(rng.normal(size=x.shape[:2], loc=mean, scale=std), sigma * s)
    liquid[liquid < threshold] = 0
    if mud:
        m = blur((liquid > threshold).astype(float), strength * s)
        m = np.where(m < 0.8, 0, m)[..., None]
        return x * (1 - m) + _MUD * m
    wet = np.clip(liquid * 255, 0, 255).astype(np.uint8)
    edges = (wet > 0) & ~ndimage.binary_erosion(wet > 0, border_value=1)
    dist = ndimage.distance_transform_edt(~edges) if edges.any() else np.full(wet.shape, 255.0)
    dist = ndimage.uniform_filter(np.minimum(dist, 20 * s), 3, mode="mirror").astype(np.uint8)
    dist = ndimage.correlate(equalize_hist(dist).astype(float), _EMBOSS, mode="mirror")
    dist = ndimage.uniform_filter(np.clip(np.rint(dist), 0, 255), 3, mode="mirror")
    m = wet * dist
    m = m / m.max() * strength if m.max() > 0 else m
    return x + m[..., None] * _WATER


def _saturate(x: Array, c: Row, s: float, rng: Rng) -> Array:
    """HSV saturation * c0 + c1 with hue and value kept (channel = V - V S g(hue)); achromatic
    pixels have hue 0 (red), as in skimage."""
    v, low = x.max(axis=2, keepdims=True), x.min(axis=2, keepdims=True)
    sat = np.where(v > 0, (v - low) / np.maximum(v, 1e-12), 0)
    sat_new = np.clip(sat * c[0] + c[1], 0, 1)
    ratio = np.where(sat > 0, sat_new / np.maximum(sat, 1e-12), 0)
    grey = np.where(sat > 0, 0, v * sat_new) * np.array([0.0, 1.0, 1.0])
    return v - (v - x) * ratio - grey


_FUNCTIONS = {name: globals()[f"_{name}"] for name in CORRUPTIONS}


# ---- dispatcher ------------------------------------------------------------------------------
def _check(image: Array, name: str, severity: int) -> None:
    if not isinstance(name, str) or name not in _FUNCTIONS:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, int | np.integer) or severity < 1:
        raise ValueError(f"severity must be an int in {SEVERITIES}, got {severity!r}")
    if severity > 5:
        raise ValueError(f"severity must be an int in {SEVERITIES}, got {severity!r}")
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise ValueError(f"image must be a uint8 numpy array, got {getattr(image, 'dtype', image)}")
    if image.ndim not in (2, 3) or image.shape[2:] not in ((), (3,)) or min(image.shape[:2]) < 8:
        raise ValueError(f"image shape must be (H, W) or (H, W, 3), H, W >= 8; got {image.shape}")


def corrupt(image: np.ndarray, name: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    """image: uint8, shape (H, W) grayscale or (H, W, 3) RGB, any size >= 8x8 (Fashion-MNIST is
    28x28 grayscale; CIFAR 32x32 RGB; ImageNet 224x224 RGB). Returns uint8 of the same shape and
    dtype. All randomness comes from `rng` (never the global numpy/random state), so the same rng
    seed gives the same bytes."""
    _check(image, name, severity)
    small = min(image.shape[:2]) <= 64
    row = (CIFAR if small else IMAGENET)[name][int(severity) - 1]
    s = min(image.shape[:2]) / (32 if small else 224)
    x = image.reshape(image.shape[0], image.shape[1], -1) / 255.0
    to_rgb = x.shape[2] == 1 and name in _NEEDS_RGB
    out = _FUNCTIONS[name](np.repeat(x, 3, axis=2) if to_rgb else x, row, s, rng)
    if to_rgb:
        out = luma(np.clip(out, 0, 1))
    return to_u8(out).reshape(image.shape)
