"""`pie ingest parquet`: Parquet files written here with pyarrow (plain binary images, the
`datasets` layout with its metadata, string labels, several files and row groups), packed and
read back against the tables they were written from."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import assert_one_line_error, pie
from PIL import Image

from ingest import pack
from ingest import parquet as parquet_source
from ingest.config import IngestConfig
from ingest.parquet import parquet
from pie import store
from pie.catalog import imagenet1k
from pie.shards import read_shards

CFG = IngestConfig(shard_max_count=4, workers=1)
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def encoded(seed: int, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def packed(root, name: str) -> dict[str, tuple[int, str, bytes, dict]]:
    """key -> (label, image extension, image bytes, json) of a packed dataset's samples."""
    out = {}
    for r in read_shards(root.shards(name)):
        ext = next(f for f in ("jpg", "png", "webp") if f in r)
        out[r["__key__"]] = (r["cls"], ext, r[ext], r["json"])
    return out


def rows(root, sql: str) -> list[tuple]:
    con = store.connect(root, read_only=True)
    try:
        return store.rows(con, sql)
    finally:
        con.close()


def test_plain_binary_images_stream_by_row_group(root, tmp_path, monkeypatch):
    """A binary column not named `image` (the only binary one), integer labels, 7 rows in row
    groups of 3 read 2 rows at a time, one row of bytes that are no image, one PNG among
    JPEGs."""
    images = [encoded(i) for i in range(7)]
    images[2] = encoded(2, "PNG")
    images[4] = b"GIF-ish, not an image"
    labels = [0, 2, 1, 1, 0, 2, 2]
    table = pa.table({"photo": images, "label": labels, "width": [10] * 7})
    pq.write_table(table, tmp_path / "flat.parquet", row_group_size=3)
    assert pq.ParquetFile(tmp_path / "flat.parquet").metadata.num_row_groups == 3

    def whole_file(*args, **kwargs):
        raise AssertionError("the whole file was read at once")

    monkeypatch.setattr(parquet_source, "ROWS", 2)
    monkeypatch.setattr(pq, "read_table", whole_file)
    monkeypatch.setattr(pq.ParquetFile, "read", whole_file)
    pack.main(root, CFG, [parquet(str(tmp_path / "flat.parquet"), "flat", "flat")])
    expected = {
        f"flat-{i:06d}": (labels[i], "png" if i == 2 else "jpg", images[i])
        for i in range(7)
        if i != 4
    }
    back = packed(root, "flat")
    assert {k: v[:3] for k, v in back.items()} == expected  # bytes untouched, format from bytes
    assert back["flat-000002"][3] == {"source": f"{tmp_path / 'flat.parquet'} row 2"}
    assert rows(root, "select source, error from ingest_errors") == [
        (
            f"{tmp_path / 'flat.parquet'} row 4",
            "not a readable image: unknown format or corrupt header",
        )
    ]
    # integer labels without metadata: classes 0..max, named by their number
    assert rows(root, "select class_id, name from classes order by class_id") == [
        (0, "0"),
        (1, "1"),
        (2, "2"),
    ]
    assert rows(root, "select n_images, label_space from datasets") == [(6, "flat")]


def datasets_file(path, rows_: list[tuple[bytes | None, str, int]], names: list[str]) -> None:
    """A file as `datasets` writes it: an Image struct column, a ClassLabel column and the
    features in the schema metadata."""
    features = {
        "image": {"decode": True, "id": None, "_type": "Image"},
        "label": {"names": names, "id": None, "_type": "ClassLabel"},
    }
    images = pa.array(
        [None if data is None else {"bytes": data, "path": p} for data, p, _ in rows_], IMAGE
    )
    table = pa.table({"image": images, "label": pa.array([r[2] for r in rows_], pa.int64())})
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    pq.write_table(table.replace_schema_metadata(meta), path, row_group_size=2)


def test_the_datasets_layout_names_classes_and_keys(root, tmp_path):
    names = ["cat", "dog", "bird"]
    cells = [
        (encoded(0), "train/cat_001.jpg", 0),
        (encoded(1, "PNG"), "train/dog_002.jpg", 1),  # a PNG under a .jpg name
        (None, "train/bird_003.jpg", 2),  # no image
        (encoded(3), "train/bird_004.jpg", 7),  # outside the 3 classes
        (encoded(4, "WEBP"), "train/bird_005.webp", 2),
    ]
    datasets_file(tmp_path / "train-00000-of-00001.parquet", cells, names)
    source = parquet(str(tmp_path / "train-*.parquet"), "pets", "pets")
    pack.main(root, CFG, [source])
    back = packed(root, "pets")
    assert {k: v[:3] for k, v in back.items()} == {
        "cat_001": (0, "jpg", cells[0][0]),
        "dog_002": (1, "png", cells[1][0]),
        "bird_005": (2, "webp", cells[4][0]),
    }
    assert back["dog_002"][3]["filename"] == "train/dog_002.jpg"
    assert rows(root, "select class_id, name from classes order by class_id") == [
        (0, "cat"),
        (1, "dog"),
        (2, "bird"),  # the metadata's order, not sorted
    ]
    file = tmp_path / "train-00000-of-00001.parquet"
    assert rows(root, "select source, error from ingest_errors order by source") == [
        (f"{file} row 2", "no image bytes in column 'image'"),
        (f"{file} row 3", "label 7 is outside the 3 classes of pets"),
    ]


def test_string_labels_over_several_files_and_a_stored_label_space(tmp_path):
    """Two files by glob, string labels (sorted distinct names make the classes), a key column,
    a training split whose shuffled shards take rows from several row groups; then a test
    file packed into the same, now stored, label space through the CLI."""
    work = str(tmp_path / "work")
    table = {}
    for f, labels in enumerate((["zebra", "ant", "moth"], ["ant", "zebra", "zebra", "moth"])):
        ids = [f"f{f}-{i}" for i in range(len(labels))]
        images = [encoded(10 * f + i) for i in range(len(labels))]
        table |= dict(zip(ids, zip(labels, images, strict=True), strict=True))
        data = pa.table({"image": images, "text": labels, "id": ids})
        pq.write_table(data, tmp_path / f"part-{f}.parquet", row_group_size=2)
    pq.write_table(pa.table({"x": [1]}), tmp_path / "other.parquet")  # not matched
    pie(
        *("ingest", "parquet", str(tmp_path / "part-*.parquet"), "--name", "zoo-train"),
        *("--label-space", "zoo", "--label-column", "text", "--key-column", "id"),
        *("--split", "train", "--shard-max-count", "3", "--workers", "2", "--root", work),
    )
    classes = ["ant", "moth", "zebra"]
    back = {k: (classes[v[0]], v[2]) for k, v in packed(open_work(work), "zoo-train").items()}
    assert back == table
    order = [r["__key__"] for r in read_shards(open_work(work).shards("zoo-train"))]
    assert order != sorted(order)  # shuffled across row groups and files
    test = pa.table({"image": [encoded(50), encoded(51)], "text": ["moth", "yak"]})
    pq.write_table(test, tmp_path / "test.parquet")
    pie(
        *("ingest", "parquet", str(tmp_path / "test.parquet"), "--name", "zoo-test"),
        *("--label-space", "zoo", "--label-column", "text", "--workers", "1", "--root", work),
    )
    assert {k: v[0] for k, v in packed(open_work(work), "zoo-test").items()} == {"test-000000": 1}
    assert rows(open_work(work), "select error from ingest_errors") == [
        ("unknown label 'yak': not a class of zoo",)
    ]
    assert rows(open_work(work), "select count(*) from label_spaces") == [(1,)]


def open_work(path: str):
    from pie.paths import open_root

    return open_root(path)


def test_imagenet_labels_get_wnid_keys(root, tmp_path):
    wnids = {cid: wnid for cid, wnid, _ in imagenet1k().classes}
    labels = [0, 999, -1, 1000]  # the last two: HF's unlabelled -1 and one past the classes
    cells = [(encoded(i), f"ILSVRC2012_val_{i:08d}.JPEG", label) for i, label in enumerate(labels)]
    datasets_file(tmp_path / "val.parquet", cells, [f"c{i}" for i in range(1000)])
    pack.main(root, CFG, [parquet(str(tmp_path / "val.parquet"), "inval", imagenet1k())])
    back = packed(root, "inval")
    assert {k: v[:3] for k, v in back.items()} == {
        f"{wnids[0]}/ILSVRC2012_val_00000000": (0, "jpg", cells[0][0]),
        f"{wnids[999]}/ILSVRC2012_val_00000001": (999, "jpg", cells[1][0]),
    }
    errors = [e for (e,) in rows(root, "select error from ingest_errors order by source")]
    assert errors == [
        "label -1 is outside the 1000 classes of imagenet1k",
        "label 1000 is outside the 1000 classes of imagenet1k",
    ]


def test_duplicate_path_stems_fall_back_to_row_keys(root, tmp_path):
    cells = [(encoded(i), f"{d}/img.png", 0) for i, d in enumerate("ab")]
    datasets_file(tmp_path / "d.parquet", cells, ["only"])
    pack.main(root, CFG, [parquet(str(tmp_path / "d.parquet"), "dup", "dup")])
    assert sorted(packed(root, "dup")) == ["d-000000", "d-000001"]


def test_rows_without_a_key_are_rejected(root, tmp_path):
    table = pa.table({"image": [encoded(0), encoded(1)], "label": [0, 0], "id": ["a", None]})
    pq.write_table(table, tmp_path / "k.parquet")
    pack.main(root, CFG, [parquet(str(tmp_path / "k.parquet"), "k", "k", key="id")])
    assert sorted(packed(root, "k")) == ["a"]
    assert rows(root, "select error from ingest_errors") == [("no key in column 'id'",)]


@pytest.mark.parametrize(
    ("columns", "args", "message"),
    [
        (
            {"label": [1], "text": ["a"]},
            [],
            "has no image column 'image' (columns: label, text): name it with --image-column",
        ),
        (
            {"a": [b"x"], "b": [b"y"], "label": [1]},
            [],
            "has no image column 'image' (columns: a, b, label): 2 columns hold images",
        ),
        ({"image": [b"x"], "y": [1]}, [], "has no label column 'label' (columns: image, y)"),
        ({"image": [b"x"], "label": [1.5]}, [], "label column 'label' is double"),
        ({"image": [1], "label": [1]}, ["--image-column", "image"], "'image' is int64, not"),
    ],
)
def test_unusable_files_are_one_error_line_and_write_nothing(tmp_path, columns, args, message):
    pq.write_table(pa.table(columns), tmp_path / "x.parquet")
    before = sorted(tmp_path.rglob("*"))
    result = pie(
        *("ingest", "parquet", str(tmp_path / "*.parquet"), "--name", "x", *args),
        *("--root", str(tmp_path / "work")),
        ok=False,
    )
    assert_one_line_error(result, message)
    assert sorted(tmp_path.rglob("*")) == before  # no work root, no shards, no rows


def test_no_matching_file_and_a_file_that_is_not_parquet(tmp_path):
    (tmp_path / "fake.parquet").write_bytes(b"not parquet")
    args = ("--name", "x", "--root", str(tmp_path / "work"))
    result = pie("ingest", "parquet", str(tmp_path / "none-*.parquet"), *args, ok=False)
    assert_one_line_error(result, "no Parquet file matches")
    result = pie("ingest", "parquet", str(tmp_path / "fake.parquet"), *args, ok=False)
    assert_one_line_error(result, "fake.parquet is not a Parquet file")
    assert not (tmp_path / "work").exists()


def test_help_states_the_key_rule():
    text = " ".join(pie("ingest", "parquet", "--help").output.replace("│", " ").split())
    assert "the image path's stem" in text and "else <file stem>-<row>" in text
