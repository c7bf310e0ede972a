"""Sources and packing on tiny fixtures: IDX files, folder trees of JPEGs, a CSV manifest."""

from __future__ import annotations

import gzip
import io
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import write_idx
from PIL import Image
from typer.testing import CliRunner

from ingest import corrupt, pack, sources
from ingest.config import CorruptConfig, IngestConfig
from pie import catalog, store
from pie.cli import app
from pie.errors import PieError
from pie.paths import open_root
from pie.shards import read_shards, shard_paths

CFG = IngestConfig(shard_max_count=4, workers=1)


@pytest.fixture
def idx_dir(tmp_path):
    rng = np.random.default_rng(0)
    for stem, n in (("train", 6), ("t10k", 5)):
        write_idx(tmp_path / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{stem}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return tmp_path


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_read_idx_by_hand(tmp_path):
    a = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", a)
    np.testing.assert_array_equal(sources.read_idx(tmp_path / "x.gz"), a)
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x00\x00\x09\x99" + b"\x00" * 8))
    with pytest.raises(PieError, match="not an IDX"):
        sources.read_idx(tmp_path / "bad.gz")


def test_fashion_mnist_packs_png_with_readable_keys(root, idx_dir):
    found = [sources.fashion_mnist(idx_dir, s) for s in ("train", "test")]
    assert pack.main(root, CFG, found) == ["fmnist-train", "fmnist-test"]
    con = store.connect(root, read_only=True)
    assert con.execute("select name, split, n_images from datasets order by name").fetchall() == [
        ("fmnist-test", "eval", 5),
        ("fmnist-train", "train", 6),
    ]
    assert con.execute("select count(*) from classes").fetchall() == [(10,)]
    rows = con.execute(
        "select key, label, shard from images where dataset = 'fmnist-test' order by key"
    ).fetchall()
    con.close()
    assert rows[0] == ("fmnist-test-00000", 0, "fmnist-test-000000.tar")
    assert rows[4] == ("fmnist-test-00004", 4, "fmnist-test-000001.tar")  # 4 per shard
    images = sources.read_idx(idx_dir / "t10k-images-idx3-ubyte.gz")
    for i, raw in enumerate(read_shards(root.shards("fmnist-test"))):
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(raw["png"]))), images[i])
        assert raw["json"]["class_name"] == catalog.FASHION_MNIST.classes[i][2]
    # a rerun packs nothing
    assert pack.main(root, CFG, [sources.fashion_mnist(idx_dir, "test")]) == []


def test_packing_twice_gives_identical_bytes(tmp_path, idx_dir):
    digests = []
    for name in ("a", "b"):
        root = open_root(tmp_path / name)
        pack.main(root, CFG, [sources.fashion_mnist(idx_dir, "train")])
        digests.append([p.read_bytes() for p in shard_paths(root.shards("fmnist-train"))])
    assert len(digests[0]) == 2 and digests[0] == digests[1]


def test_missing_fashion_mnist_is_a_user_error(root, tmp_path):
    with pytest.raises(PieError, match="dataset-fashion-mnist"):
        pack.main(root, CFG, [sources.fashion_mnist(tmp_path / "nowhere", "test")])
    assert not root.shards("fmnist-test").exists()


@pytest.fixture
def imagenet_tree(tmp_path):
    """Two ImageNet classes (wnids of classes 0 and 1), a corrupt file, a truncated JPEG, a text
    file and an unknown class."""
    val = tmp_path / "val"
    files = {}
    for c, wnid in enumerate(("n01440764", "n01443537")):
        (val / wnid).mkdir(parents=True)
        for j in range(2):
            data = jpeg(10 * c + j)
            (val / wnid / f"ILSVRC2012_val_{c}{j}.JPEG").write_bytes(data)
            files[f"{wnid}/ILSVRC2012_val_{c}{j}"] = data
    (val / "n01440764" / "broken.JPEG").write_bytes(b"not a jpeg")
    whole = jpeg(7)
    (val / "n01440764" / "truncated.JPEG").write_bytes(whole[: len(whole) // 2])
    (val / "n01443537" / "notes.txt").write_text("hello")
    (val / "n99999999").mkdir()
    (val / "n99999999" / "x.JPEG").write_bytes(jpeg(99))
    return val, files


def test_imagefolder_passes_jpeg_bytes_through_and_logs_rejects(root, imagenet_tree):
    val, files = imagenet_tree
    pack.main(root, CFG, [sources.image_folder(val, "imagenet-val", "imagenet1k")])
    back = {raw["__key__"]: raw for raw in read_shards(root.shards("imagenet-val"))}
    assert set(back) == set(files)
    for key, data in files.items():
        assert back[key]["jpg"] == data  # byte for byte, never re-encoded
    assert back["n01443537/ILSVRC2012_val_10"]["cls"] == 1
    con = store.connect(root, read_only=True)
    errors = dict(con.execute("select source, error from ingest_errors").fetchall())
    con.close()
    by_file = {Path(source).name: error for source, error in errors.items()}
    assert by_file == {
        "x.JPEG": "class directory 'n99999999' is not in the label space",
        "broken.JPEG": "not a readable image: unknown format or corrupt header",
        "truncated.JPEG": by_file["truncated.JPEG"],
        "notes.txt": "not an image file: extension '.txt', looked for .jpg .jpeg .png .webp .bmp",
    }
    # PIL's header check passes the truncated JPEG; only the full decode catches it
    with Image.open(val / "n01440764" / "truncated.JPEG") as im:
        im.verify()
    assert by_file["truncated.JPEG"].startswith("truncated or corrupt image: image file is trunc")


def test_imagenet_c_tree_keeps_the_parent_keys(root, imagenet_tree):
    val, files = imagenet_tree
    pack.main(root, CFG, [sources.image_folder(val, "imagenet-val", "imagenet1k")])
    tree = val.parent / "imagenet-c"
    for sev in ("1", "3"):
        for key, data in files.items():
            path = tree / "fog" / sev / f"{key}.JPEG"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    space = catalog.imagenet1k()
    packed = pack.main(root, CFG, sources.imagenet_c(tree, "imagenet-val", space))
    assert packed == ["imagenet-val-released-fog-1", "imagenet-val-released-fog-3"]
    con = store.connect(root, read_only=True)
    unmatched = con.execute(
        "select count(*) from images c anti join images p on p.key = c.key"
        " and p.dataset = 'imagenet-val' where c.dataset like 'imagenet-val-released-fog-%'"
    ).fetchall()
    meta = con.execute(
        "select kind, parent, corruption, severity, origin, n_images from datasets"
        " where name = 'imagenet-val-released-fog-3'"
    ).fetchall()
    con.close()
    assert unmatched == [(0,)]
    assert meta == [("corrupted", "imagenet-val", "fog", 3, "released", 4)]


def test_imagenet_a_is_a_class_subset(root, tmp_path):
    space = catalog.imagenet1k()
    wnids = (catalog.DATA / "imagenet_a_wnids.txt").read_text().split()
    (tmp_path / "a" / wnids[0]).mkdir(parents=True)
    (tmp_path / "a" / wnids[0] / "0.jpg").write_bytes(jpeg(1))
    (tmp_path / "a" / "n01440764").mkdir()  # tench: not one of ImageNet-A's 200
    (tmp_path / "a" / "n01440764" / "1.jpg").write_bytes(jpeg(2))
    pack.main(root, CFG, [sources.imagenet_subset(tmp_path / "a", "imagenet-a", "a")])
    con = store.connect(root, read_only=True)
    kind, subset, n = con.execute("select kind, class_subset, n_images from datasets").fetchall()[0]
    con.close()
    assert kind == "natural_adversarial" and n == 1
    assert len(subset) == 200 and space.id_of_wnid()[wnids[0]] in subset


def test_csv_manifest(root, tmp_path):
    (tmp_path / "img").mkdir()
    for i in range(3):
        (tmp_path / "img" / f"{i}.jpg").write_bytes(jpeg(i))
    (tmp_path / "m.csv").write_text(
        "path,label,key\nimg/0.jpg,0,first\nimg/1.jpg,Trouser,second\nimg/2.jpg,42,third\n"
    )
    pack.main(root, CFG, [sources.csv_manifest(tmp_path / "m.csv", "mine", catalog.FASHION_MNIST)])
    back = [(r["__key__"], r["cls"]) for r in read_shards(root.shards("mine"))]
    assert back == [("first", 0), ("second", 1)]  # label 42 is rejected


def test_imagenet_c_tree_with_unknown_directories_is_refused(tmp_path):
    for rel in ("fog/1/n01440764", "fgo/1/n01440764", "fog/6/n01440764", ".cache/x"):
        (tmp_path / "c" / rel).mkdir(parents=True)
    with pytest.raises(PieError) as e:
        sources.imagenet_c(tmp_path / "c", "imagenet-val", catalog.imagenet1k())
    message = str(e.value)
    assert "fgo/ is not one of the 19 corruptions" in message
    assert "fog/6/ is not a severity 1-5" in message and ".cache" not in message


def test_limit_keeps_the_first_images_of_any_source(root, idx_dir, imagenet_tree):
    val, files = imagenet_tree
    cfg = IngestConfig(limit=3)
    found = [sources.fashion_mnist(idx_dir, "train"), sources.image_folder(val, "v", "imagenet1k")]
    pack.main(root, cfg, found)
    keys = [r["__key__"] for r in read_shards(root.shards("fmnist-train"))]
    # the first three, in the training order: numpy's permutation seeded with ingest.seed
    order = np.random.default_rng(IngestConfig().seed).permutation(3)
    assert keys == [f"fmnist-train-{i:05d}" for i in order] != sorted(keys)
    keys = [r["__key__"] for r in read_shards(root.shards("v"))]
    assert keys == sorted(files)[:3]  # sorted class dirs, then sorted files


def test_rerun_with_other_settings_is_refused(root, idx_dir, tmp_path, imagenet_tree):
    pack.main(root, CFG, [sources.fashion_mnist(idx_dir, "test")])
    assert pack.main(root, CFG, [sources.fashion_mnist(idx_dir, "test")]) == []  # same: skipped
    other = IngestConfig(shard_max_count=4, limit=2)
    with pytest.raises(
        PieError, match=r"fmnist-test was packed with limit=0; this run asks limit=2"
    ):
        pack.main(root, other, [sources.fashion_mnist(idx_dir, "test")])
    # another source directory for the same name
    val, _ = imagenet_tree
    copy = tmp_path / "copy"
    shutil.copytree(val, copy)
    pack.main(root, CFG, [sources.image_folder(val, "v", "imagenet1k")])
    with pytest.raises(
        PieError, match=re.escape(f"packed with source={val}; this run asks source={copy}")
    ):
        pack.main(root, CFG, [sources.image_folder(copy, "v", "imagenet1k")])
    con = store.connect(root, read_only=True)
    n = con.execute("select n_images from datasets where name = 'fmnist-test'").fetchall()
    con.close()
    assert n == [(5,)]  # untouched
    # removing the shards, as the message says, repacks with the new settings
    shutil.rmtree(root.shards("fmnist-test"))
    assert pack.main(root, other, [sources.fashion_mnist(idx_dir, "test")]) == ["fmnist-test"]
    assert len(list(read_shards(root.shards("fmnist-test")))) == 2


def test_a_source_without_images_says_why_and_records_rejects(root, tmp_path):
    (tmp_path / "d" / "n01440764").mkdir(parents=True)
    (tmp_path / "d" / "n01440764" / "a.jpg").write_bytes(b"garbage")
    (tmp_path / "d" / "n01440764" / "b.txt").write_text("text")
    (tmp_path / "d" / "loose.jpg").write_bytes(jpeg(0))  # not in a class directory
    with pytest.raises(PieError) as e:
        pack.main(root, CFG, [sources.image_folder(tmp_path / "d", "empty", "imagenet1k")])
    assert str(e.value) == (
        f"no image for dataset empty in the class directories of {tmp_path / 'd'} "
        "(looked for .jpg .jpeg .png .webp .bmp in <class>/); 2 files rejected, see ingest_errors"
    )
    con = store.connect(root, read_only=True)
    rows = con.execute("select dataset, error from ingest_errors order by source").fetchall()
    datasets = con.execute("select count(*) from datasets").fetchall()
    con.close()
    assert [d for d, _ in rows] == ["empty", "empty"] and datasets == [(0,)]
    assert not any("<" in error or "Error" in error for _, error in rows)
    assert not root.shards("empty").exists()


@pytest.mark.parametrize("name", ["../../x", "/srv/x", ".hidden", "a/b", "-x", ""])
@pytest.mark.parametrize("command", ["imagefolder", "imagenet-a", "imagenet-r", "csv", "c"])
def test_bad_dataset_names_are_refused_before_anything_is_written(tmp_path, name, command):
    (tmp_path / "src").mkdir()
    (tmp_path / "m.csv").write_text("path,label\n")
    args = {
        "imagefolder": ["imagefolder", str(tmp_path / "src"), "--name", name],
        "imagenet-a": ["imagenet-a", str(tmp_path / "src"), "--name", name],
        "imagenet-r": ["imagenet-r", str(tmp_path / "src"), "--name", name],
        "csv": ["csv", str(tmp_path / "m.csv"), "--name", name, "--label-space", "fashion-mnist"],
        "c": ["imagenet-c", str(tmp_path / "src"), "--parent", name],
    }[command]
    before = sorted(tmp_path.rglob("*"))
    result = CliRunner().invoke(app, ["ingest", *args, "--root", str(tmp_path / "work")])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: invalid") and result.output.count("\n") == 1
    assert sorted(tmp_path.rglob("*")) == before  # no work root, nothing outside it


def test_released_and_generated_variants_of_one_parent_coexist(root, imagenet_tree):
    val, files = imagenet_tree
    pack.main(root, CFG, [sources.image_folder(val, "iv", "imagenet1k")])
    tree = val.parent / "imagenet-c"
    for key, data in files.items():
        path = tree / "fog" / "2" / f"{key}.JPEG"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    cfg = CorruptConfig(dataset="iv", corruptions=("fog",), severities=(2,), workers=1)
    assert corrupt.main(root, cfg) == ["iv-fog-2"]
    assert pack.main(root, CFG, sources.imagenet_c(tree, "iv", catalog.imagenet1k())) == [
        "iv-released-fog-2"
    ]
    assert corrupt.main(root, cfg) == []  # still there, not clobbered
    con = store.connect(root, read_only=True)
    rows = con.execute(
        "select name, origin, parent, corruption, severity, n_images from datasets"
        " where kind = 'corrupted' order by name"
    ).fetchall()
    con.close()
    assert rows == [
        ("iv-fog-2", "generated", "iv", "fog", 2, 4),
        ("iv-released-fog-2", "released", "iv", "fog", 2, 4),
    ]
    released = {r["__key__"]: r["jpg"] for r in read_shards(root.shards("iv-released-fog-2"))}
    generated = {r["__key__"]: r["png"] for r in read_shards(root.shards("iv-fog-2"))}
    assert released == files and set(generated) == set(files)
