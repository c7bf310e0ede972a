"""Sources and packing on tiny fixtures: IDX files, folder trees of JPEGs, a CSV manifest."""

from __future__ import annotations

import gzip
import io

import numpy as np
import pytest
from conftest import write_idx
from PIL import Image

from ingest import pack, sources
from ingest.config import IngestConfig
from pie import catalog, store
from pie.errors import PieError
from pie.paths import open_root
from pie.shards import read_shards, shard_paths

CFG = IngestConfig(shard_max_count=4)


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
    """Two ImageNet classes (wnids of classes 0 and 1), a corrupt file, an unknown class."""
    val = tmp_path / "val"
    files = {}
    for c, wnid in enumerate(("n01440764", "n01443537")):
        (val / wnid).mkdir(parents=True)
        for j in range(2):
            data = jpeg(10 * c + j)
            (val / wnid / f"ILSVRC2012_val_{c}{j}.JPEG").write_bytes(data)
            files[f"{wnid}/ILSVRC2012_val_{c}{j}"] = data
    (val / "n01440764" / "broken.JPEG").write_bytes(b"not a jpeg")
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
    errors = sorted(e for (e,) in con.execute("select error from ingest_errors").fetchall())
    con.close()
    assert len(errors) == 2
    assert "not in the label space" in errors[0] and "unreadable image" in errors[1]


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
    assert packed == ["imagenet-val-fog-1", "imagenet-val-fog-3"]
    con = store.connect(root, read_only=True)
    unmatched = con.execute(
        "select count(*) from images c anti join images p on p.key = c.key"
        " and p.dataset = 'imagenet-val' where c.dataset like 'imagenet-val-fog-%'"
    ).fetchall()
    meta = con.execute(
        "select kind, parent, corruption, severity from datasets where name = 'imagenet-val-fog-3'"
    ).fetchall()
    con.close()
    assert unmatched == [(0,)]
    assert meta == [("corrupted", "imagenet-val", "fog", 3)]


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
