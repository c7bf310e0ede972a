"""`pie corrupt` as a stage: per-image noise seeds, settings-checked reruns, refused options."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from ingest import corrupt, pack, sources
from ingest.config import CorruptConfig, IngestConfig
from ingest.corruptions import corrupt as corrupt_image
from pie import store
from pie.cli import app
from pie.errors import PieError
from pie.images import Preprocess, decode
from pie.shards import read_shards

GREY = 128  # every test image is one flat grey: any difference between images is the noise


def write_idx(path: Path, array: np.ndarray) -> None:
    magic = 2048 + array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture
def flat(root, tmp_path):
    """fmnist-test: four flat grey 28x28 images, packed."""
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.full((4, 28, 28), GREY))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(4))
    pack.main(root, IngestConfig(), [sources.fashion_mnist(tmp_path, "test")])
    return root


def cfg(**overrides) -> CorruptConfig:
    base = dict(corruptions=("gaussian_noise",), severities=(3,), seed=7, workers=1)
    return CorruptConfig(**(base | overrides))


def test_each_image_is_seeded_by_64_bits_of_sha256(flat):
    assert corrupt.main(flat, cfg()) == ["fmnist-test-gaussian_noise-3"]
    stored = {
        r["__key__"]: np.asarray(Image.open(io.BytesIO(r["png"])))
        for r in read_shards(flat.shards("fmnist-test-gaussian_noise-3"))
    }
    assert len(stored) == 4
    for key, pixels in stored.items():
        digest = hashlib.sha256(f"7/gaussian_noise/3/{key}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
        grey = np.full((28, 28), GREY, np.uint8)
        np.testing.assert_array_equal(pixels, corrupt_image(grey, "gaussian_noise", 3, rng))
    noises = [p.tobytes() for p in stored.values()]
    assert len(set(noises)) == 4  # same pixels, different keys: different noise
    seeds = {corrupt.noise_seed(7, "gaussian_noise", 3, f"k{i}") for i in range(1000)}
    assert len(seeds) == 1000 and max(seeds) >= 2**32  # beyond crc32's 32 bits


def test_corrupt_rerun_with_other_settings_is_refused(flat):
    corrupt.main(flat, cfg())
    assert corrupt.main(flat, cfg()) == []  # same settings: nothing to do
    with pytest.raises(PieError) as e:
        corrupt.main(flat, cfg(seed=8))
    assert str(e.value).startswith(
        "dataset fmnist-test-gaussian_noise-3 was packed with seed=7; this run asks seed=8: remove "
    )
    with pytest.raises(PieError, match=r"corrupt.image_size = 32 differs from fmnist-test's 28 px"):
        corrupt.main(flat, cfg(image_size=32))  # not the parent's geometry


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-x", "saturate"], "error: saturate on grayscale images (corrupt.channels = 1): it "),
        (["-x", "all"], "error: saturate on grayscale images"),
        (["-x", ""], "error: no corruption given"),
        (["-s", ""], "error: no severity given"),
        (["../x"], "error: invalid dataset name '../x'"),
    ],
)
def test_corrupt_refuses_with_one_line(flat, tmp_path, args, message):
    (tmp_path / "c.toml").write_text('[corrupt]\ndataset = "fmnist-test"\nchannels = 1\n')
    options = ["--root", str(flat.path), "--config", str(tmp_path / "c.toml")]
    result = CliRunner().invoke(app, ["corrupt", *args, *options])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(message) and result.output.count("\n") == 1
    con = store.connect(flat, read_only=True)
    n = con.execute("select count(*) from datasets").fetchall()
    con.close()
    assert n == [(1,)]  # only the parent


def test_saturate_is_the_only_corruption_that_leaves_grey_alone():
    """What COLOUR_ONLY claims, checked on a textured grey image at every severity."""
    from ingest.corruptions import COLOUR_ONLY, CORRUPTIONS

    image = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    unchanged = {
        name
        for name in CORRUPTIONS
        if any(
            np.array_equal(corrupt_image(image, name, s, np.random.default_rng(1)), image)
            for s in range(1, 6)
        )
    }
    assert unchanged == set(COLOUR_ONLY) == {"saturate"}


@pytest.mark.slow  # two spawned workers import torch and scipy: about 10 s on 2 shared cores
def test_corrupt_streams_the_parent_by_shard_whatever_the_worker_count(tmp_path):
    """A parent of 7 images in 3 shards: variants have the same shards, the same bytes with 1
    or 2 workers, and no decoded copy of the parent is written."""
    from pie.paths import open_root
    from pie.shards import shard_paths, shards

    rng = np.random.default_rng(0)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (7, 28, 28)))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(7))
    digests = []
    for workers in (1, 2):
        root = open_root(tmp_path / f"w{workers}")
        ingest = IngestConfig(shard_max_count=3, workers=1)
        pack.main(root, ingest, [sources.fashion_mnist(tmp_path, "test")])
        two = cfg(corruptions=("gaussian_noise", "contrast"), severities=(1,), workers=workers)
        corrupt.main(root, two)
        for name in ("fmnist-test-gaussian_noise-1", "fmnist-test-contrast-1"):
            counts = [s.n for s in shards(root.shards(name))]
            assert counts == [s.n for s in shards(root.shards("fmnist-test"))] == [3, 3, 1]
        digests.append(
            [
                hashlib.sha256(p.read_bytes()).hexdigest()
                for name in ("fmnist-test-gaussian_noise-1", "fmnist-test-contrast-1")
                for p in shard_paths(root.shards(name))
            ]
        )
        assert not (root.path / "cache").exists()  # no decoded copy of the parent
        assert not list((root.path / "shards").glob("*.partial"))
    assert digests[0] == digests[1] and len(digests[0]) == 6


def test_jpeg_quality_85_is_the_released_look(flat):
    import json

    jpeg = cfg(format="jpeg")
    corrupt.main(flat, jpeg)
    stored = {r["__key__"]: r for r in read_shards(flat.shards("fmnist-test-gaussian_noise-3"))}
    assert len(stored) == 4
    for key, raw in stored.items():
        assert "png" not in raw
        digest = hashlib.sha256(f"7/gaussian_noise/3/{key}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
        pixels = corrupt_image(np.full((28, 28), GREY, np.uint8), "gaussian_noise", 3, rng)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=85)
        assert raw["jpg"] == buf.getvalue()
    con = store.connect(flat, read_only=True)
    (settings,) = store.rows(con, "select settings from datasets where kind = 'corrupted'")[0]
    con.close()
    assert json.loads(settings)["format"] == "jpeg"
    assert json.loads(settings)["jpeg_quality"] == 85
    with pytest.raises(PieError, match="format=jpeg, jpeg_quality=85; this run asks format=png"):
        corrupt.main(flat, cfg())


# -- the parent's geometry ---------------------------------------------------------------------

CONFIGS = Path(corrupt.__file__).resolve().parents[1] / "configs"


def folder(directory: Path, classes: list[str], images: list[Image.Image], ext: str) -> Path:
    """An ImageFolder tree: image i in class dir classes[i % len(classes)] as `i.<ext>`."""
    for i, im in enumerate(images):
        (directory / classes[i % len(classes)]).mkdir(parents=True, exist_ok=True)
        im.save(directory / classes[i % len(classes)] / f"{i}.{ext}")
    return directory


def textured(w: int, h: int, seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


def samples(root, name: str) -> dict[str, np.ndarray]:
    return {
        r["__key__"]: np.asarray(Image.open(io.BytesIO(r.get("png") or r["jpg"])))
        for r in read_shards(root.shards(name))
    }


def test_packaged_imagenet_config_corrupts_224_px_rgb_crops(root, tmp_path):
    """RGB photos of 300x260 and 260x320 in the ImageNet-1k label space, corrupted with the
    packaged ImageNet recipe: 224 x 224 x 3 variants, ImageNet-C's crop (shorter side 256,
    centre 224), not the 28 px grayscale of corrupt's defaults."""
    photos = [textured(300, 260, 0), textured(260, 320, 1), textured(300, 260, 2)]
    src = folder(tmp_path / "val", ["n01440764", "n01443537"], photos, "JPEG")
    args = ["--root", str(root.path)]
    run = CliRunner().invoke(
        app, ["ingest", "imagefolder", str(src), "--name", "imagenet-val", *args]
    )
    assert run.exit_code == 0, run.output
    config = ["-c", str(CONFIGS / "imagenet-resnet50.toml"), "-x", "gaussian_noise", "-s", "1"]
    run = CliRunner().invoke(app, ["corrupt", "imagenet-val", *config, *args])
    assert run.exit_code == 0, run.output
    variants = samples(root, "imagenet-val-gaussian_noise-1")
    assert len(variants) == 3 and {v.shape for v in variants.values()} == {(224, 224, 3)}
    # the first image, by hand: 224 px crop of the shorter side resized to 256, noise, JPEG 85
    key, raw = next((r["__key__"], r["jpg"]) for r in read_shards(root.shards("imagenet-val")))
    crop = decode(raw, Preprocess(224, 3, (0.0,) * 3, (1.0,) * 3, crop_fraction=0.875))
    rng = np.random.default_rng(corrupt.noise_seed(0, "gaussian_noise", 1, key))
    noisy = corrupt_image(np.ascontiguousarray(crop.transpose(1, 2, 0)), "gaussian_noise", 1, rng)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, format="JPEG", quality=85)
    stored = {
        r["__key__"]: r["jpg"] for r in read_shards(root.shards("imagenet-val-gaussian_noise-1"))
    }
    assert stored[key] == buf.getvalue()


@pytest.fixture
def cifar(root, tmp_path):
    """cifar10-test: six 32x32 RGB PNGs in a label space of its own (cat, dog)."""
    images = [textured(32, 32, i) for i in range(6)]
    src = folder(tmp_path / "test", ["cat", "dog"], images, "png")
    args = ["--root", str(root.path)]
    ingest = [
        "ingest",
        "imagefolder",
        str(src),
        "--name",
        "cifar10-test",
        "--label-space",
        "cifar10",
    ]
    run = CliRunner().invoke(app, ingest + args)
    assert run.exit_code == 0, run.output
    return root


def test_packaged_cifar_config_corrupts_the_32_px_rgb_images_as_they_are(cifar):
    args = ["-c", str(CONFIGS / "cifar-resnet.toml"), "-x", "gaussian_noise", "-s", "2"]
    run = CliRunner().invoke(app, ["corrupt", "cifar10-test", *args, "--root", str(cifar.path)])
    assert run.exit_code == 0, run.output
    parent = samples(cifar, "cifar10-test")
    variants = samples(cifar, "cifar10-test-gaussian_noise-2")
    assert variants.keys() == parent.keys() and len(parent) == 6
    for key, pixels in parent.items():
        assert pixels.shape == (32, 32, 3)
        rng = np.random.default_rng(corrupt.noise_seed(0, "gaussian_noise", 2, key))
        np.testing.assert_array_equal(
            variants[key], corrupt_image(pixels, "gaussian_noise", 2, rng)
        )


def test_dropping_the_colour_of_an_rgb_parent_is_refused_in_one_line(cifar, tmp_path):
    (tmp_path / "c.toml").write_text('[corrupt]\ndataset = "cifar10-test"\nchannels = 1\n')
    options = ["--root", str(cifar.path), "--config", str(tmp_path / "c.toml")]
    result = CliRunner().invoke(app, ["corrupt", "-x", "gaussian_noise", "-s", "1", *options])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: corrupt.channels = 1 would drop the colour of")
    assert result.output.count("\n") == 1
    assert not cifar.shards("cifar10-test-gaussian_noise-1").exists()


def encoded(images: list[Image.Image]) -> list[bytes]:
    out = []
    for im in images:
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def geometry(*args) -> tuple:
    found = corrupt.parent_geometry(*args)
    return found.size, found.channels, found.crop_fraction


def test_parent_geometry_rule():
    """One square size: as it is; ImageNet-1k photos of many sizes: 224 px crops; a few
    grayscale images among colour ones: still 3 channels; other photos: no size."""
    grey = [textured(28, 28, i, "L") for i in range(3)]
    assert geometry("fashion-mnist", encoded(grey)) == (28, 1, 1.0)
    photos = [textured(300, 200, 0), textured(200, 300, 1, "L"), textured(320, 240, 2)]
    assert geometry("imagenet1k", encoded(photos)) == (224, 3, 0.875)
    assert geometry("mine", encoded(photos)) == (None, 3, None)
    with pytest.raises(PieError, match="the parent has no images"):
        corrupt.parent_geometry("mine", [])
    assert geometry("imagenet1k", []) == (224, 3, 0.875)  # the label space alone tells


def test_repacked_parent_makes_its_variants_again(flat, tmp_path):
    """fmnist-test re-packed with other images (grey 60, not 128): the variant records the
    parent's hash, so corrupt makes it again from the new images."""
    corrupt.main(flat, cfg())
    again = tmp_path / "again"  # (the IDX files are read once per directory and process)
    again.mkdir()
    write_idx(again / "t10k-images-idx3-ubyte.gz", np.full((4, 28, 28), 60))
    write_idx(again / "t10k-labels-idx1-ubyte.gz", np.arange(4))
    pack.pack(flat, sources.fashion_mnist(again, "test"), IngestConfig())
    assert corrupt.main(flat, cfg()) == ["fmnist-test-gaussian_noise-3"]
    for r in read_shards(flat.shards("fmnist-test-gaussian_noise-3")):
        digest = hashlib.sha256(f"7/gaussian_noise/3/{r['__key__']}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "big"))
        want = corrupt_image(np.full((28, 28), 60, np.uint8), "gaussian_noise", 3, rng)
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(r["png"]))), want)
    assert corrupt.main(flat, cfg()) == []  # made from the parent as it is now


def test_photos_outside_imagenet_need_an_explicit_size_which_is_recorded(root, tmp_path):
    """Photos of two sizes in a label space of their own: the parent does not tell the size,
    so corrupt refuses in one line until corrupt.image_size gives it; then that size is used
    and recorded with the variant."""
    photos = [textured(90, 60, 0), textured(60, 80, 1)]
    src = folder(tmp_path / "photos", ["a", "b"], photos, "png")
    args = ["--root", str(root.path)]
    ingest = ["ingest", "imagefolder", str(src), "--name", "mine", "--label-space", "mine"]
    assert CliRunner().invoke(app, ingest + args).exit_code == 0
    mine = cfg(dataset="mine")
    with pytest.raises(
        PieError,
        match=r"mine does not tell the size to corrupt it at \(its images are 60x80, 90x60 px",
    ):
        corrupt.main(root, mine)
    assert corrupt.main(root, replace(mine, image_size=48)) == ["mine-gaussian_noise-3"]
    assert {v.shape for v in samples(root, "mine-gaussian_noise-3").values()} == {(48, 48, 3)}
    with store.connect(root, read_only=True) as con:
        (settings,) = store.rows(con, "select settings from datasets where name like 'mine-%'")[0]
    assert json.loads(settings)["image_size"] == 48
