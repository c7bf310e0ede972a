"""Ingest at scale: bytes independent of the worker count, a seeded order for training sets,
shard boundaries by count and bytes, shards read by URL (`pipe:`, `file:`), the flat ImageNet
validation folder with its label file."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ingest import pack, sources
from ingest.config import IngestConfig
from pie import store
from pie.catalog import imagenet1k
from pie.errors import PieError
from pie.shards import (
    SAMPLE_OVERHEAD,
    Sample,
    read_shards,
    shard_bounds,
    shard_paths,
    shards,
    write_shards,
)

WNIDS = ("n01440764", "n01443537", "n01484850")  # ImageNet-1k classes 0, 1, 2


def jpeg(seed: int, size: tuple[int, int] = (40, 48)) -> bytes:
    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.fixture
def tree(tmp_path) -> Path:
    """Three classes of four JPEGs each, of different sizes."""
    for c, wnid in enumerate(WNIDS):
        (tmp_path / "tree" / wnid).mkdir(parents=True)
        for j in range(4):
            data = jpeg(10 * c + j, (16 + 8 * j, 24))
            (tmp_path / "tree" / wnid / f"img_{c}{j}.JPEG").write_bytes(data)
    return tmp_path / "tree"


def digests(directory: Path) -> list[str]:
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in shard_paths(directory)]


def rows(root, sql: str) -> list[tuple]:
    con = store.connect(root, read_only=True)
    try:
        return store.rows(con, sql)
    finally:
        con.close()


def test_shard_bounds_by_hand():
    o = SAMPLE_OVERHEAD
    assert shard_bounds([], 3, 10**9) == []
    assert shard_bounds([1] * 7, 3, 10**9) == [0, 3, 6]  # by count
    # by bytes: a shard takes samples while their bytes (plus the overhead) fit
    assert shard_bounds([100, 100, 100, 100], 10, 2 * (100 + o)) == [0, 2]
    assert shard_bounds([100, 100, 100], 10, 2 * (100 + o) - 1) == [0, 1, 2]
    # a sample larger than the bound gets a shard of its own
    assert shard_bounds([10, 10**6, 10], 10, 1000 + o) == [0, 1, 2]


@pytest.mark.parametrize("limits", [dict(shard_max_count=5), dict(shard_max_size=3 * 2600)])
def test_bytes_do_not_depend_on_the_number_of_workers(tmp_path, tree, limits):
    results = []
    for workers in (1, 2):
        root = pack_tree(tmp_path / f"w{workers}", tree, "train", workers=workers, **limits)
        index = (root.shards("t") / "index.json").read_bytes()
        results.append((digests(root.shards("t")), index))
    assert len(results[0][0]) >= 3  # several shards, so the workers share them
    assert results[0] == results[1]


def pack_tree(path: Path, tree: Path, split: str, **cfg) -> object:
    from pie.paths import open_root

    root = open_root(path)
    pack.main(root, IngestConfig(**cfg), [sources.image_folder(tree, "t", "imagenet1k", split)])
    return root


def test_a_training_set_is_written_in_a_seeded_order(tmp_path, tree):
    listed = sorted(f"{p.parent.name}/{p.stem}" for p in tree.rglob("*.JPEG"))
    for seed in (0, 5):
        root = pack_tree(
            tmp_path / f"s{seed}", tree, "train", seed=seed, shard_max_count=5, workers=1
        )
        keys = [r["__key__"] for r in read_shards(root.shards("t"))]
        assert keys == [listed[i] for i in np.random.default_rng(seed).permutation(len(listed))]
        counts = [s.n for s in shards(root.shards("t"))]
        assert counts == [5, 5, 2]  # the index knows an epoch's length
        (settings,) = rows(root, "select settings from datasets")[0]
        assert json.loads(settings)["shuffle_seed"] == seed
    root = pack_tree(tmp_path / "eval", tree, "eval")
    assert [r["__key__"] for r in read_shards(root.shards("t"))] == listed  # sorted
    (settings,) = rows(root, "select settings from datasets")[0]
    assert json.loads(settings)["shuffle_seed"] is None
    # a rerun with another seed is refused, naming it
    with pytest.raises(PieError, match="shuffle_seed=5; this run asks shuffle_seed=6"):
        pack_tree(tmp_path / "s5", tree, "train", seed=6, shard_max_count=5, workers=1)


def test_shards_are_read_by_pipe_and_file_urls(tmp_path):
    samples = [Sample(f"k{i}", i, jpeg(i), "jpg", {"i": i}) for i in range(7)]
    directory = tmp_path / "ds"
    write_shards(samples, directory, "ds", max_count=3)
    local = [r["jpg"] for r in read_shards(directory)]
    index = json.loads((directory / "index.json").read_text())
    moved = tmp_path / "bucket"
    moved.mkdir()
    for i, shard in enumerate(index["shardlist"]):
        (directory / shard["url"]).rename(moved / shard["url"])
        target = moved / shard["url"]
        shard["url"] = f"pipe:cat {target}" if i % 2 == 0 else target.as_uri()
    (directory / "index.json").write_text(json.dumps(index))
    found = shards(directory)
    assert [s.n for s in found] == [3, 3, 1]
    assert found[0].url.startswith("pipe:cat ") and found[1].url.startswith("file:")
    assert found[0].path is None and found[1].path == str(moved / "ds-000001.tar")
    back = list(read_shards(directory))
    assert [r["__key__"] for r in back] == [s.key for s in samples]
    assert [r["jpg"] for r in back] == local == [s.data for s in samples]
    assert [r["cls"] for r in back] == list(range(7))


@pytest.fixture
def val(tmp_path) -> tuple[Path, dict[str, str]]:
    """A flat validation folder: five JPEGs; their classes in a mapping written by the test."""
    folder = tmp_path / "val"
    folder.mkdir()
    wnid_of = {}
    for i in range(5):
        stem = f"ILSVRC2012_val_{i + 1:08d}"
        (folder / f"{stem}.JPEG").write_bytes(jpeg(i))
        wnid_of[stem] = WNIDS[i % 3]
    return folder, wnid_of


@pytest.mark.parametrize("form", ["loc", "plain", "plain-no-header"])
def test_imagenet_val_with_a_label_file(root, tmp_path, val, form):
    folder, wnid_of = val
    labels = tmp_path / "labels.csv"
    stems = sorted(wnid_of)
    mapping = {s: wnid_of[s] for s in stems[:4]}  # the fifth file is not named
    mapping["ILSVRC2012_val_00000099"] = WNIDS[0]  # named, missing
    if form == "loc":
        lines = ["ImageId,PredictionString"]
        lines += [f"{s},{w} 1 2 30 40 {w} 5 6 7 8" for s, w in mapping.items()]
    else:
        lines = ["filename,wnid"] if form == "plain" else []
        lines += [f"{s}.JPEG,{w}" for s, w in mapping.items()]
    lines.append(f"{stems[3]},n99999999" if form == "loc" else f"{stems[3]}.JPEG,n99999999")
    labels.write_text("\n".join(lines) + "\n")  # the last line overrides stem 4: unknown wnid
    pack.main(root, IngestConfig(workers=1), [sources.imagenet_val(folder, labels, "iv")])
    back = {r["__key__"]: r for r in read_shards(root.shards("iv"))}
    ids = imagenet1k().id_of_wnid()
    expected = {f"{wnid_of[s]}/{s}": ids[wnid_of[s]] for s in stems[:3]}
    assert {k: r["cls"] for k, r in back.items()} == expected
    for key, raw in back.items():
        assert raw["jpg"] == (folder / f"{key.split('/')[1]}.JPEG").read_bytes()
    errors = dict(rows(root, "select source, error from ingest_errors"))
    assert {Path(s).name: e for s, e in errors.items()} == {
        f"{stems[3]}.JPEG": "unknown wnid 'n99999999' (not an ImageNet-1k class)",
        f"{stems[4]}.JPEG": "not named in labels.csv",
        "ILSVRC2012_val_00000099": f"named in labels.csv but not found in {folder}",
    }


def test_imagenet_val_keys_match_an_imagefolder_tree_of_the_same_images(tmp_path, val):
    folder, wnid_of = val
    labels = tmp_path / "l.csv"
    labels.write_text("".join(f"{s},{w}\n" for s, w in wnid_of.items()))
    tree = tmp_path / "tree"
    for stem, wnid in wnid_of.items():
        (tree / wnid).mkdir(parents=True, exist_ok=True)
        (tree / wnid / f"{stem}.JPEG").write_bytes((folder / f"{stem}.JPEG").read_bytes())
    flat = sources.imagenet_val(folder, labels, "a")
    nested = sources.image_folder(tree, "b", "imagenet1k")
    from pie.paths import open_root

    root = open_root(tmp_path / "w")
    pack.main(root, IngestConfig(workers=1), [flat, nested])
    a = [(r["__key__"], r["cls"], r["jpg"]) for r in read_shards(root.shards("a"))]
    b = [(r["__key__"], r["cls"], r["jpg"]) for r in read_shards(root.shards("b"))]
    assert sorted(a) == sorted(b) and len(a) == 5  # the flat folder is in file order


def test_a_label_file_of_another_form_is_one_line(root, tmp_path, val):
    folder, _ = val
    (tmp_path / "bad.csv").write_text("just-one-column\n")
    with pytest.raises(PieError, match=r"neither LOC_val_solution\.csv"):
        pack.main(root, IngestConfig(), [sources.imagenet_val(folder, tmp_path / "bad.csv", "x")])
    with pytest.raises(PieError, match=r"labels file .* not found"):
        pack.main(root, IngestConfig(), [sources.imagenet_val(folder, tmp_path / "no.csv", "x")])
    assert rows(root, "select count(*) from datasets") == [(0,)]
    assert not root.shards("x").exists()


def test_an_empty_directory_is_one_line_and_nothing_is_registered(root, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(PieError, match="no image for dataset e in the class directories of"):
        pack.main(
            root, IngestConfig(), [sources.image_folder(tmp_path / "empty", "e", "imagenet1k")]
        )
    assert rows(root, "select count(*) from datasets") == [(0,)]
    assert not root.shards("e").exists() and not root.shards("e.partial").exists()


def test_cli_refuses_a_seed_for_an_evaluation_set_and_packs_the_flat_val_folder(tmp_path, val):
    from conftest import assert_one_line_error, pie

    folder, wnid_of = val
    work = str(tmp_path / "work")
    result = pie("ingest", "imagefolder", str(folder), "--name", "x", "--seed", "3",
                 "--root", work, ok=False)  # fmt: skip
    assert_one_line_error(result, "--seed orders a training set")
    labels = tmp_path / "l.csv"
    labels.write_text("".join(f"{s}.JPEG,{w}\n" for s, w in wnid_of.items()))
    pie("ingest", "imagenet-val", str(folder), "--labels", str(labels), "--workers", "1",
        "--root", work)  # fmt: skip
    from pie.paths import open_root

    keys = [r["__key__"] for r in read_shards(open_root(Path(work)).shards("imagenet-val"))]
    assert keys == [f"{wnid_of[s]}/{s}" for s in sorted(wnid_of)]
