"""`pie corrupt` as a stage: per-image noise seeds, settings-checked reruns, refused options."""

from __future__ import annotations

import gzip
import hashlib
import io
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
    with pytest.raises(PieError, match="image_size=28; this run asks image_size=32"):
        corrupt.main(flat, cfg(image_size=32))


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
    from pie.shards import shard_paths, shard_urls

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
            counts = [n for _, n in shard_urls(root.shards(name))]
            assert counts == [n for _, n in shard_urls(root.shards("fmnist-test"))] == [3, 3, 1]
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
