"""Image operations the corruptions are built from (ingest/corruptions.py): Gaussian and
line blurs, centre zooms, the defocus disk, cv2-style filtering, warping, the plasma fractal,
a frost texture and histogram equalisation. Images are float (H, W, C) arrays in [0, 1].
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from PIL import Image
from scipy import ndimage, signal

Array = np.ndarray
Rng = np.random.Generator
LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601, as cv2.COLOR_RGB2GRAY


def blur(x: Array, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> Array:
    """skimage.filters.gaussian over the two spatial axes."""
    sig = (sigma, sigma) + (0,) * (x.ndim - 2)
    return ndimage.gaussian_filter(x, sig, mode=mode, truncate=truncate)


def luma(x: Array) -> Array:
    return x if x.shape[2] == 1 else (x @ LUMA)[..., None]


def to_u8(x: Array) -> Array:
    return np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)


def pil(x: Array) -> Image.Image:
    u8 = to_u8(x)
    return Image.fromarray(u8[..., 0], "L") if u8.shape[2] == 1 else Image.fromarray(u8, "RGB")


def from_pil(im: Image.Image, shape: tuple[int, ...]) -> Array:
    return np.asarray(im, dtype=np.float64).reshape(shape) / 255


def line_blur(x: Array, radius: float, sigma: float, angle: float) -> Array:
    """ImageMagick's motion blur: out(p) = sum_i k_i x(p + offset_i), i < 2 ceil(radius) + 1,
    k_i ~ exp(-i^2 / 2 sigma^2), offset_i = i * (sin, cos)(angle) rounded; edges repeated."""
    taps = np.arange(2 * math.ceil(radius) + 1)
    k = np.exp(-(taps**2) / (2 * max(sigma, 1e-3) ** 2))
    k /= k.sum()
    rad = math.radians(angle)
    oy = np.ceil(taps * math.sin(rad) - 0.5).astype(int)
    ox = np.ceil(taps * math.cos(rad) - 0.5).astype(int)
    h, w, pad = x.shape[0], x.shape[1], int(taps[-1])
    xp = np.take(x, np.arange(-pad, h + pad), axis=0, mode="clip")  # edge padding
    xp = np.take(xp, np.arange(-pad, w + pad), axis=1, mode="clip")
    out = np.zeros_like(x)
    for ki, dy, dx in zip(k, oy + pad, ox + pad, strict=True):
        out += ki * xp[dy : dy + h, dx : dx + w]
    return out


@lru_cache(maxsize=32)
def zoom_matrices(n: int, zooms: tuple[float, ...]) -> Array:
    """(len(zooms), n, n) float32 bilinear matrices zooming a length-n axis about its centre."""
    centre, i = (n - 1) / 2, np.arange(n)
    mats = np.zeros((len(zooms), n, n), np.float32)
    for z, mat in zip(zooms, mats, strict=True):
        src = np.clip(centre + (i - centre) / z, 0, n - 1)
        lo = np.floor(src).astype(int)
        np.add.at(mat, (i, lo), 1 - (src - lo))
        np.add.at(mat, (i, np.minimum(lo + 1, n - 1)), src - lo)
    return mats


def zoom_sum(x: Array, zooms: tuple[float, ...]) -> Array:
    """Sum over `zooms` of x zoomed about its centre, as one batched matmul."""
    rows, cols = zoom_matrices(x.shape[0], zooms), zoom_matrices(x.shape[1], zooms)
    chw = np.moveaxis(x, 2, 0).astype(np.float32)[None]
    out = (rows[:, None] @ chw @ cols.transpose(0, 2, 1)[:, None]).sum(axis=0)
    return np.moveaxis(out, 0, 2).astype(np.float64)


@lru_cache(maxsize=64)
def disk_kernel(radius: float, alias_blur: float, s: float) -> Array:
    """The original kernel (cv2.GaussianBlur of a binary disk) at the reference size; for s != 1
    its bilinear interpolant sampled at p / s, so it is continuous in s."""
    ksize = 3 if radius <= 8 else 5
    half = math.floor(radius) + ksize // 2
    grid = np.arange(-half, half + 1)
    disk = (grid[:, None] ** 2 + grid[None, :] ** 2 <= radius**2).astype(float)
    taps = np.exp(-((np.arange(ksize) - ksize // 2) ** 2) / (2 * alias_blur**2))
    for axis in (0, 1):
        disk = ndimage.convolve1d(disk, taps / taps.sum(), axis=axis, mode="constant")
    if s != 1:
        new_half = max(1, math.ceil((half + 1) * s))
        g = np.arange(-new_half, new_half + 1) / s + half
        disk = ndimage.map_coordinates(
            disk, np.meshgrid(g, g, indexing="ij"), order=1, mode="grid-constant"
        )
        while len(disk) > 1 and not (disk[0].any() or disk[:, 0].any()):
            disk = disk[1:-1, 1:-1]  # drop all-zero outer rings
    return disk / disk.sum()


def filter2d(x: Array, kernel: Array) -> Array:
    """cv2.filter2D (correlation, reflect-101 border) per channel; FFT for big kernels."""
    if kernel.size <= 121:
        return ndimage.correlate(x, kernel[..., None], mode="mirror")
    pad = kernel.shape[0] // 2
    xp = np.pad(x, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    return signal.fftconvolve(xp, kernel[::-1, ::-1, None], mode="valid", axes=(0, 1))


def warp(x: Array, coords: tuple[Array, Array], mode: str) -> Array:
    """Bilinear resampling of every channel at (row, col) coordinates."""
    return np.stack(
        [ndimage.map_coordinates(x[..., i], coords, order=1, mode=mode) for i in range(x.shape[2])],
        axis=2,
    )


def plasma_fractal(size: int, decay: float, rng: Rng) -> Array:
    """The original's diamond-square height map in [0, 1] (size a power of two): each new point
    is the mean of its 4 (wrapped) neighbours + wibble * U(-wibble, wibble)."""
    grid, step, wibble = np.zeros((size, size)), size, 100.0
    while step >= 2:
        half = step // 2
        corners = grid[::step, ::step]
        ext = np.concatenate([corners, corners[:1]], axis=0)  # wrap: first row/col appended
        ext = np.concatenate([ext, ext[:, :1]], axis=1)
        squares = ext[:-1, :-1] + ext[1:, :-1] + ext[:-1, 1:] + ext[1:, 1:]
        noise = wibble * rng.uniform(-wibble, wibble, squares.shape)
        grid[half::step, half::step] = squares / 4 + noise
        centres = grid[half::step, half::step]
        up = np.concatenate([centres[-1:], centres], axis=0)  # wrap: last row/col prepended
        left = np.concatenate([centres[:, -1:], centres], axis=1)
        for total, dst in (
            (up[1:] + up[:-1] + ext[:-1, :-1] + ext[:-1, 1:], grid[::step, half::step]),
            (left[:, 1:] + left[:, :-1] + ext[:-1, :-1] + ext[1:, :-1], grid[half::step, ::step]),
        ):
            dst[...] = total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)
        step, wibble = half, wibble / decay
    grid -= grid.min()
    return grid / grid.max()


def frost_texture(h: int, w: int, size: float, rng: Rng) -> Array:
    """Synthetic frost intensity in [0, 1]: soft haze, bright needles at three random angles
    (line blurs of sparse seeds, `size` sets their scale) and fine grain."""
    haze = ndimage.gaussian_filter(rng.random((h, w)), 2 * size, mode="wrap")
    haze = (haze - haze.min()) / (np.ptp(haze) + 1e-12)
    seeds = rng.random((h, w)) ** 8
    needles = np.max([line_blur(seeds, 3 * size, 2 * size, a) for a in rng.uniform(0, 360, 3)], 0)
    needles /= needles.max() + 1e-12
    return np.clip(0.1 + 0.45 * haze + 0.8 * needles + 0.15 * rng.random((h, w)), 0, 1)


def equalize_hist(u8: Array) -> Array:
    """cv2.equalizeHist."""
    hist = np.bincount(u8.ravel(), minlength=256)
    first = int(np.flatnonzero(hist)[0])
    if hist[first] == u8.size:
        return u8
    cdf = np.cumsum(hist)
    lut = np.rint((cdf - cdf[first]) * 255 / (u8.size - cdf[first]))
    return np.clip(lut, 0, 255).astype(np.uint8)[u8]
