"""Tests for ingest.corruptions: shapes, determinism, severity ordering, closed forms, errors."""

from __future__ import annotations

import colorsys
import io
import itertools
import random

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from ingest.corruptions import BENCHMARK, CORRUPTIONS, EXTRA, SEVERITIES, corrupt

RANDOM = (
    "gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "glass_blur", "motion_blur",
    "snow", "frost", "fog", "elastic_transform", "spatter",
)  # fmt: skip
DETERMINISTIC = tuple(c for c in CORRUPTIONS if c not in RANDOM)
BLURS = ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur")


def structured(size: int, rgb: bool, k: int = 0) -> np.ndarray:
    """A smooth colour gradient with a disc and a bar; k moves the shapes and permutes colours."""
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([0.2 + 0.6 * x, 0.3 + 0.5 * y, 0.7 - 0.4 * x * y], axis=2)
    img = np.roll(img, k, axis=2)
    disc = (y - 0.45 - 0.15 * np.sin(k)) ** 2 + (x - 0.5 - 0.15 * np.cos(k)) ** 2 < 0.05
    bar = (np.abs(y - 0.75) < 0.08) & (np.abs(x - 0.3 - 0.05 * (k % 5)) < 0.2)
    img[disc] = (0.9, 0.2, 0.1)
    img[bar] = (0.1, 0.1, 0.4)
    img = (img * 255).astype(np.uint8)
    return img if rgb else (img @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def mad(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(float) - b.astype(float)).mean())


def test_names() -> None:
    assert BENCHMARK == (
        "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
        "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
        "elastic_transform", "pixelate", "jpeg_compression",
    )  # fmt: skip
    assert EXTRA == ("speckle_noise", "gaussian_blur", "spatter", "saturate")
    assert CORRUPTIONS == BENCHMARK + EXTRA
    assert SEVERITIES == (1, 2, 3, 4, 5)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_every_severity_keeps_shape_and_dtype(name: str) -> None:
    images = [structured(28, rgb=False), structured(32, rgb=True), structured(72, rgb=True)]
    images += [np.full((8, 8), 77, np.uint8), rng(1).integers(0, 256, (30, 41, 3), np.uint8)]
    for image in images:
        for severity in SEVERITIES:
            out = corrupt(image, name, severity, rng(severity))
            assert out.shape == image.shape and out.dtype == np.uint8, (image.shape, severity)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_same_seed_same_bytes_and_no_global_state(name: str) -> None:
    for image in (structured(28, rgb=False), structured(32, rgb=True)):
        np.random.seed(1)
        random.seed(1)
        first = corrupt(image, name, 3, rng(7))
        np.random.seed(2)
        random.seed(2)
        assert corrupt(image, name, 3, rng(7)).tobytes() == first.tobytes()


@pytest.mark.parametrize("name", RANDOM)
def test_different_seeds_differ(name: str) -> None:
    for image in (structured(28, rgb=False), structured(32, rgb=True)):
        for severity in (3, 5):
            assert not np.array_equal(
                corrupt(image, name, severity, rng(1)), corrupt(image, name, severity, rng(2))
            )


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_corruptions_ignore_the_seed(name: str) -> None:
    image = structured(32, rgb=True)
    assert np.array_equal(corrupt(image, name, 4, rng(1)), corrupt(image, name, 4, rng(2)))


def severity_curve(name: str, size: int, rgb: bool, measure=mad, samples: int = 8) -> list[float]:
    """measure(corrupted, clean) per severity, averaged over `samples` (image, seed) pairs; each
    pair uses the same seed at every severity (common random numbers: e.g. motion blur's
    severities 3 and 4 differ only in a radius that cuts off negligible weights, so with
    independent draws only the random angle would tell them apart)."""
    images = [structured(size, rgb, k) for k in range(samples)]
    return [
        float(np.mean([measure(corrupt(im, name, s, rng(k)), im) for k, im in enumerate(images)]))
        for s in SEVERITIES
    ]


def non_decreasing(values: list[float], rel_tol: float = 0.03) -> bool:
    tol = rel_tol * max(abs(v) for v in values) + 0.05
    return all(b >= a - tol for a, b in itertools.pairwise(values))


def plane_residual(out: np.ndarray) -> float:
    """Mean distance of the interior of `out` from its least-squares plane (0 for any affine
    warp of a linear ramp, so this isolates the non-affine part of a warp)."""
    size, b = out.shape[0], out.shape[0] // 4
    y, x = np.mgrid[b : size - b, b : size - b]
    values = out[b : size - b, b : size - b].reshape(y.size, -1).mean(axis=1)
    design = np.c_[x.ravel(), y.ravel(), np.ones(y.size)]
    coef = np.linalg.lstsq(design, values, rcond=None)[0]
    return float(np.abs(values - design @ coef).mean())


def anticorrelation(out: np.ndarray, clean: np.ndarray) -> float:
    return 1 - float(np.corrcoef(out.ravel().astype(float), clean.ravel().astype(float))[0, 1])


SPECIAL = ("glass_blur", "frost", "elastic_transform", "spatter", "saturate")


@pytest.mark.parametrize("rgb", [False, True])
@pytest.mark.parametrize("name", [c for c in CORRUPTIONS if c not in SPECIAL])
def test_severity_is_monotone_on_average(name: str, rgb: bool) -> None:
    # the fog fractal varies a lot from draw to draw, and how pixelate's box grid (e.g. 24 or 20
    # cells over 32 px) meets the shapes' edges varies from image to image: average more of them
    samples = {"fog": 64, "pixelate": 32}.get(name, 8)
    curve = severity_curve(name, 32 if rgb else 28, rgb, samples=samples)
    assert non_decreasing(curve), curve
    assert curve[4] > curve[0], curve


@pytest.mark.parametrize("rgb", [False, True])
def test_glass_blur_severity(rgb: bool) -> None:
    # CIFAR-10-C rows: (sigma, max_delta, iterations) = (.05,1,1) (.25,1,1) (.4,1,1) (.25,1,2)
    # (.4,1,2). Within one iteration count only the blur sigma grows, and a wider blur smooths
    # the shuffle noise that dominates the pixel difference, so that difference is flat there;
    # the step that is true is from one shuffling pass (1-3) to two (4-5).
    curve = severity_curve("glass_blur", 32 if rgb else 28, rgb)
    assert min(curve[3:]) > max(curve[:3]), curve


@pytest.mark.parametrize("rgb", [False, True])
def test_frost_severity(rgb: bool) -> None:
    # image weight c0 falls (darkening) while the frost weight c1 rises (brightening), so the
    # mean pixel difference is not monotone; the share of the clean image is, which shows as a
    # falling correlation with it.
    curve = severity_curve("frost", 32 if rgb else 28, rgb, measure=anticorrelation)
    assert non_decreasing(curve, rel_tol=0.1), curve
    # on black the result is c1 * texture: its mean follows the table's frost weights
    black = np.zeros((32, 32, 3) if rgb else (28, 28), np.uint8)
    means = [
        np.mean([corrupt(black, "frost", s, rng(k)).mean() for k in range(8)]) for s in SEVERITIES
    ]
    weights = np.array([0.2, 0.3, 0.4, 0.4, 0.45])
    ratios = np.array(means) / weights
    assert np.all(np.abs(ratios / ratios.mean() - 1) < 0.1), ratios


@pytest.mark.parametrize("rgb", [False, True])
def test_elastic_severity(rgb: bool) -> None:
    # CIFAR-10-C trades a random affine that shrinks with severity (max shift 2.56 .. 0.96 px)
    # for an elastic field that grows (alpha/sigma 0 .. 3.3), so the pixel difference falls;
    # what grows is the non-affine part, seen as the departure of a warped ramp from a plane.
    size = 32 if rgb else 28
    y, x = np.mgrid[0:size, 0:size]
    ramp = ((0.6 * x + 0.4 * y) / size * 255).astype(np.uint8)
    ramp = np.repeat(ramp[..., None], 3, axis=2) if rgb else ramp
    curve = [
        np.mean([plane_residual(corrupt(ramp, "elastic_transform", s, rng(k))) for k in range(8)])
        for s in SEVERITIES
    ]
    assert non_decreasing(curve), curve
    assert curve[4] > 3 * curve[0], curve


@pytest.mark.parametrize("rgb", [False, True])
def test_spatter_severity(rgb: bool) -> None:
    # severities 1-3 are water drops, 4-5 mud: two different effects, each monotone
    curve = severity_curve("spatter", 32 if rgb else 28, rgb)
    assert non_decreasing(curve[:3]) and non_decreasing(curve[3:]), curve


def test_saturate_severity() -> None:
    # CIFAR-10-C multiplies saturation by .3, .1 (washing out), then 1.5, 2, 2.5 (+0, .1, .2):
    # each direction is monotone, but the two directions are not comparable
    curve = severity_curve("saturate", 32, rgb=True)
    assert curve[0] < curve[1] and curve[2] < curve[3] < curve[4], curve
    # grey has no saturation: unchanged at 1-3, darkened (luminance of the reddened grey) at 4-5
    gray = structured(28, rgb=False)
    assert all(np.array_equal(corrupt(gray, "saturate", s, rng()), gray) for s in (1, 2, 3))
    expected = np.rint(gray * (1 - 0.701 * 0.1)).astype(np.uint8)
    assert np.abs(corrupt(gray, "saturate", 4, rng()).astype(int) - expected).max() <= 1


@pytest.mark.parametrize("rgb", [False, True])
@pytest.mark.parametrize("name", BLURS)
def test_blurs_leave_a_constant_image_alone(name: str, rgb: bool) -> None:
    image = np.full((30, 30, 3) if rgb else (30, 30), 141, np.uint8)
    for severity in SEVERITIES:
        assert np.array_equal(corrupt(image, name, severity, rng(severity)), image)


def test_brightness_closed_form() -> None:
    gray = np.full((28, 28), 100, np.uint8)
    for severity, c in zip(SEVERITIES, (0.05, 0.1, 0.15, 0.2, 0.3), strict=True):
        expected = round(min(100 / 255 + c, 1) * 255)
        assert np.all(corrupt(gray, "brightness", severity, rng()) == expected)
    # RGB: HSV value + c keeps hue and saturation, i.e. scales every channel by V'/V
    colour = np.broadcast_to(np.array([200, 100, 50], np.uint8), (32, 32, 3)).copy()
    factor = (200 / 255 + 0.15) / (200 / 255)
    expected = np.rint(np.array([200, 100, 50]) * factor)
    assert np.array_equal(corrupt(colour, "brightness", 3, rng())[5, 5], expected)


@pytest.mark.parametrize("name", ["brightness", "saturate"])
def test_hsv_corruptions_match_colorsys(name: str) -> None:
    image = rng(3).integers(0, 256, (72, 72, 3), np.uint8)  # > 64 px: ImageNet-C table
    image[0, :8] = np.arange(8)[:, None] * 30  # grey pixels: hue 0 (red) in skimage/colorsys
    table = {"brightness": (0.1, 0.2, 0.3, 0.4, 0.5), "saturate": (0.3, 0.1, 2, 5, 20)}
    offsets = {"brightness": (0,) * 5, "saturate": (0, 0, 0, 0.1, 0.2)}
    pixels = [(0, j) for j in range(8)] + [tuple(p) for p in rng(4).integers(0, 72, (40, 2))]
    for severity in SEVERITIES:
        c, b = table[name][severity - 1], offsets[name][severity - 1]
        out = corrupt(image, name, severity, rng())
        for r, q in pixels:
            h, s, v = colorsys.rgb_to_hsv(*(image[r, q] / 255))
            if name == "brightness":
                v = min(v + c, 1)
            else:
                s = min(max(s * c + b, 0), 1)
            expected = np.rint(np.array(colorsys.hsv_to_rgb(h, s, v)) * 255)
            assert np.abs(out[r, q] - expected).max() <= 1, (severity, r, q)


def test_contrast_closed_form() -> None:
    image = np.zeros((32, 32, 3), np.uint8)
    image[:, :16] = (50, 80, 110)
    image[:, 16:] = (200, 160, 120)
    for severity, c in zip(SEVERITIES, (0.75, 0.5, 0.4, 0.3, 0.15), strict=True):
        means = image.reshape(-1, 3).mean(axis=0) / 255
        expected = np.rint(((image / 255 - means) * c + means) * 255)
        assert np.abs(corrupt(image, "contrast", severity, rng()) - expected).max() <= 1


def binomial_close(count: int, n: int, p: float) -> bool:
    return abs(count - n * p) < 4 * np.sqrt(n * p * (1 - p))


@pytest.mark.parametrize(
    ("size", "sigmas"),
    [(64, (0.04, 0.06, 0.08, 0.09, 0.10)), (160, (0.08, 0.12, 0.18))],  # CIFAR, ImageNet tables
)
def test_gaussian_noise_std(size: int, sigmas: tuple[float, ...]) -> None:
    grey = np.full((size, size, 3), 128, np.uint8)  # far from 0 and 255: clipping is negligible
    for severity, sigma in enumerate(sigmas, start=1):
        noise = (corrupt(grey, "gaussian_noise", severity, rng(severity)).astype(float) - 128) / 255
        assert abs(noise.mean()) < 0.05 * sigma
        assert abs(noise.std() / sigma - 1) < 0.04, (severity, noise.std())


def test_shot_and_speckle_noise_std() -> None:
    grey = np.full((64, 64, 3), 128, np.uint8)
    x = 128 / 255
    for severity, lam in zip(SEVERITIES, (500, 250, 100, 75, 50), strict=True):
        out = corrupt(grey, "shot_noise", severity, rng(severity)) / 255
        assert abs(out.std() / np.sqrt(x / lam) - 1) < 0.05  # Poisson(x * lam) / lam
    for severity, c in zip(SEVERITIES, (0.06, 0.1, 0.12, 0.16, 0.2), strict=True):
        out = corrupt(grey, "speckle_noise", severity, rng(severity)) / 255
        assert abs(out.std() / (x * c) - 1) < 0.05  # x + x * N(0, c)


@pytest.mark.parametrize(
    ("size", "amounts"),
    [(64, (0.01, 0.02, 0.03, 0.05, 0.07)), (128, (0.03, 0.06, 0.09, 0.17, 0.27))],
)
def test_impulse_noise_fraction(size: int, amounts: tuple[float, ...]) -> None:
    grey = np.full((size, size, 3), 128, np.uint8)
    for severity, amount in enumerate(amounts, start=1):
        out = corrupt(grey, "impulse_noise", severity, rng(severity))
        changed = out != 128
        assert binomial_close(int(changed.sum()), grey.size, amount), (severity, changed.mean())
        assert set(np.unique(out[changed])) <= {0, 255}
        assert binomial_close(int((out[changed] == 255).sum()), int(changed.sum()), 0.5)


def test_pixelate_constant_is_a_no_op() -> None:
    for shape in ((28, 28), (32, 32, 3), (100, 90, 3)):
        image = np.full(shape, 173, np.uint8)
        for severity in SEVERITIES:
            assert np.array_equal(corrupt(image, "pixelate", severity, rng()), image)


@pytest.mark.parametrize(
    ("size", "rgb", "qualities"),
    [
        (28, False, (80, 65, 58, 50, 40)),
        (32, True, (80, 65, 58, 50, 40)),
        (96, True, (25, 18, 15, 10, 7)),
    ],
)
def test_jpeg_is_pil_jpeg_of_table_quality(
    size: int, rgb: bool, qualities: tuple[int, ...]
) -> None:
    image = structured(size, rgb)
    for severity, quality in zip(SEVERITIES, qualities, strict=True):
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="JPEG", quality=quality)
        expected = np.asarray(Image.open(buf))
        assert np.array_equal(corrupt(image, "jpeg_compression", severity, rng()), expected)


def test_glass_blur_equals_the_original_pixel_loop() -> None:
    """The vectorised passes reproduce the original nested loop, draw for draw. On an (H, W, C)
    array its tuple "swap" assigns through views, so the visited pixel copies its neighbour."""
    for image, severity, (sigma, delta, iterations) in (
        (structured(32, rgb=True), 5, (0.4, 1, 2)),
        (structured(28, rgb=False), 4, (0.25 * 28 / 32, 1, 2)),
        (structured(80, rgb=True), 5, (1.5 * 80 / 224, round(4 * 80 / 224), 2)),  # delta 1
        (structured(120, rgb=False), 5, (1.5 * 120 / 224, round(4 * 120 / 224), 2)),  # delta 2
        (structured(224, rgb=True), 4, (1.1, 3, 2)),
    ):
        x = image.reshape(image.shape[0], image.shape[1], -1) / 255
        x = ndimage.gaussian_filter(x, (sigma, sigma, 0), mode="nearest")
        h, w = x.shape[:2]
        draws = rng(5)
        n = len(range(h - delta, delta, -1)) * len(range(w - delta, delta, -1))
        for _ in range(iterations):
            dxs, dys = draws.integers(-delta, delta, size=(2, n)).tolist()
            k = 0
            for r in range(h - delta, delta, -1):
                for q in range(w - delta, delta, -1):
                    r2, q2 = r + dys[k], q + dxs[k]
                    x[r, q], x[r2, q2] = x[r2, q2], x[r, q]
                    k += 1
        x = ndimage.gaussian_filter(x, (sigma, sigma, 0), mode="nearest")
        expected = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8).reshape(image.shape)
        assert np.array_equal(corrupt(image, "glass_blur", severity, rng(5)), expected)


def test_motion_blur_runs_along_the_random_angle() -> None:
    # angles are drawn in [-45, 45] degrees: mostly horizontal, so vertical edges smear more
    vertical = np.zeros((32, 32), np.uint8)
    vertical[:, 14:18] = 255
    horizontal = vertical.T.copy()
    for severity in SEVERITIES:
        v, h = (
            np.mean([mad(corrupt(im, "motion_blur", severity, rng(k)), im) for k in range(6)])
            for im in (vertical, horizontal)
        )
        assert v > h, (severity, v, h)


def test_numpy_integer_severity_is_accepted() -> None:
    image = structured(28, rgb=False)
    assert np.array_equal(
        corrupt(image, "fog", np.int64(3), rng()), corrupt(image, "fog", 3, rng())
    )


@pytest.mark.parametrize(
    ("image", "name", "severity", "message"),
    [
        (np.zeros((28, 28), np.uint8), "rain", 1, "unknown corruption"),
        (np.zeros((28, 28), np.uint8), ["fog"], 1, "unknown corruption"),
        (np.zeros((28, 28), np.uint8), "fog", 0, "severity"),
        (np.zeros((28, 28), np.uint8), "fog", 6, "severity"),
        (np.zeros((28, 28), np.uint8), "fog", 2.0, "severity"),
        (np.zeros((28, 28), np.uint8), "fog", True, "severity"),
        (np.zeros((28, 28), np.float32), "fog", 1, "uint8"),
        (np.zeros((28, 28), np.int16), "fog", 1, "uint8"),
        ([[0] * 28] * 28, "fog", 1, "uint8"),
        (np.zeros((28, 28, 4), np.uint8), "fog", 1, "shape"),
        (np.zeros((28, 28, 1), np.uint8), "fog", 1, "shape"),
        (np.zeros((7, 28), np.uint8), "fog", 1, "shape"),
        (np.zeros(28, np.uint8), "fog", 1, "shape"),
    ],
)
def test_bad_arguments_raise(image, name: str, severity, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        corrupt(image, name, severity, rng())
