"""`pie.images.decode` gives torchvision.transforms.v2's pixels: `Resize(256)` + `CenterCrop(224)`
(bilinear, antialiased) for resize-then-crop, `CenterCrop(224)` alone for the crop-only rule,
`Resize(28)` + `CenterCrop(28)` for small inputs, on random JPEG and PNG content of 300+
geometries: 500 x s and s x 500 for s in 200..500, squares, tiny and exact-size images, RGB and
grayscale. The reference is torchvision's transforms applied here to the PIL image."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image
from torchvision.transforms import v2

from pie.images import DECODE_VERSION, Preprocess, decode

IMAGENET = Preprocess(224, 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
FMNIST = Preprocess(28, 1, (0.286,), (0.353,))
RESIZE_CROP = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224)])
SMALL = v2.Compose([v2.Resize(28, antialias=True), v2.CenterCrop(28)])
CROP = v2.CenterCrop(224)

# (width, height): 301 landscape 500 x s, portrait s x 500 every 10th, squares, tiny, exact
WIDE = [(500, s) for s in range(200, 501)]
TALL = [(s, 500) for s in range(200, 500, 10)]
OTHER = [(1, 1), (2, 3), (7, 5), (31, 17), (100, 224), (224, 224), (225, 224), (256, 256)]
OTHER += [(227, 231), (299, 299), (333, 250), (640, 480), (480, 640), (1000, 229)]


def encoded(width: int, height: int, seed: int, mode: str) -> bytes:
    """Random pixels as PNG (every fourth seed; stored uncompressed, for speed) or JPEG."""
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    pixels = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    buf = io.BytesIO()
    if seed % 4:
        Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    else:
        Image.fromarray(pixels).save(buf, format="PNG", compress_level=0)
    return buf.getvalue()


def reference(data: bytes, transform, mode: str) -> np.ndarray:
    pixels = np.asarray(transform(Image.open(io.BytesIO(data)).convert(mode)))
    return pixels[None] if mode == "L" else pixels.transpose(2, 0, 1)


def test_resize_then_crop_is_torchvisions_on_300_geometries():
    geometries = WIDE + TALL + OTHER
    assert len(set(geometries)) >= 300
    for i, (w, h) in enumerate(geometries):
        data = encoded(w, h, i, "RGB")
        got = decode(data, IMAGENET)
        assert got.shape == (3, 224, 224)
        np.testing.assert_array_equal(got, reference(data, RESIZE_CROP, "RGB"), err_msg=f"{w}x{h}")


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_center_crop_only_is_torchvisions(mode):
    pre = IMAGENET if mode == "RGB" else Preprocess.pixels_only(224, 1)
    for i, (w, h) in enumerate([(224, 224), (225, 227), (227, 230), (500, 375), (231, 500)]):
        data = encoded(w, h, i, mode)
        got = decode(data, replace(pre, rule="center_crop_only"))
        np.testing.assert_array_equal(got, reference(data, CROP, mode), err_msg=f"{w}x{h}")


def test_grayscale_and_small_inputs_are_torchvisions():
    for i, (w, h) in enumerate([(28, 28), (30, 30), (28, 35), (41, 29), (3, 2), (500, 333)]):
        data = encoded(w, h, i, "L")
        np.testing.assert_array_equal(
            decode(data, FMNIST), reference(data, SMALL, "L"), err_msg=f"{w}x{h}"
        )
    for i, (w, h) in enumerate([(300, 250), (250, 301), (500, 231)]):
        data = encoded(w, h, i, "L")
        gray = Preprocess(224, 1, (0.5,), (0.5,))
        np.testing.assert_array_equal(
            decode(data, gray), reference(data, RESIZE_CROP, "L"), err_msg=f"{w}x{h}"
        )


def test_predictions_of_another_decoding_are_evaluated_again(packed, capsys):
    """Rows whose `inference_runs.preprocess` lacks today's DECODE_VERSION (made by the decoding
    before this one) are pending; a rerun replaces them and records the version."""
    from test_infer_budget import add_models

    from infer.config import InferConfig
    from infer.run import main as infer
    from pie import store

    root = packed
    add_models(root, 2)
    cfg = InferConfig(workers=0, device="cpu", batch_size=10)
    assert infer(root, cfg) == 2
    assert infer(root, cfg) == 0
    with store.connect(root) as con:  # as stored by the former decoding: no "decode" key
        con.execute("update inference_runs set preprocess = json_remove(preprocess, '$.decode')")
    capsys.readouterr()
    assert infer(root, cfg) == 2
    assert "2 again" in capsys.readouterr().out
    with store.connect(root, read_only=True) as con:
        stored = store.rows(con, "select preprocess from inference_runs")
    assert [json.loads(p)["decode"] for (p,) in stored] == [DECODE_VERSION] * 2
