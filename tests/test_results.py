"""`pie results` on a hand-made work root: timm's columns, values counted by hand, the three
formats, top1_diff against the dense parent (same seed, or `models.parent_id`), and the
one-line errors that write nothing."""

from __future__ import annotations

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import add_dataset, assert_one_line_error, pie

from pie import store

COLUMNS = [
    "model", "top1", "top1_err", "top5", "top5_err", "param_count", "img_size", "crop_pct",
    "interpolation", "top1_diff", "method", "level", "sparsity", "seed",
]  # fmt: skip
LABELS = {"k0": 1, "k1": 2, "k2": 3, "k3": 4}
# model -> (method, sparsity, seed, {key: top-5 best first}); top-1 is the first
MODELS = {
    "r-dense-seed0": ("dense", 0.0, 0, {"k0": [1], "k1": [2], "k2": [3], "k3": [0, 4]}),
    "r-dense-seed1": ("dense", 0.0, 1, {"k0": [1], "k1": [2], "k2": [0, 5], "k3": [0, 4]}),
    "r-magnitude-s0.5-seed0": (
        "magnitude", 0.5, 0, {"k0": [1], "k1": [0, 2], "k2": [0], "k3": [0]},
    ),
    "r-magnitude-s0.5-seed1": ("magnitude", 0.5, 1, {"k0": [0], "k1": [0], "k2": [0], "k3": [4]}),
}  # fmt: skip
# Counted by hand from MODELS: (top1 %, top5 %); resnet18 has 11,689,512 parameters
EXPECTED = {
    "r-dense-seed0": (75.0, 100.0),
    "r-dense-seed1": (50.0, 75.0),
    "r-magnitude-s0.5-seed0": (25.0, 50.0),
    "r-magnitude-s0.5-seed1": (25.0, 25.0),
}
PREPROCESS = {
    "size": 224,
    "channels": 3,
    "crop_fraction": 0.875,
    "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225],
    "rule": "resize_then_crop",
}


@pytest.fixture
def work(root):
    """Dataset 'val' (4 images) with the predictions of MODELS; dataset 'other' without any."""
    con = store.connect(root)
    add_dataset(con, "val", label_space="imagenet1k")
    add_dataset(con, "other", label_space="imagenet1k")
    for model_id, (method, sparsity, seed, top5) in MODELS.items():
        pre = {**PREPROCESS, "interpolation": "bicubic"} if seed else PREPROCESS
        con.execute(
            "insert into models (model_id, experiment, arch, label_space, method, target_sparsity,"
            " achieved_sparsity, seed, train_dataset, path, sha256, config)"
            " values (?, 'r', 'resnet18', 'imagenet1k', ?, ?, ?, ?, 'train', '', '', ?)",
            [model_id, method, sparsity, sparsity, seed, json.dumps({"preprocess": pre})],
        )
        keys = sorted(top5)
        frame = pa.table(
            {
                "model_id": [model_id] * len(keys),
                "dataset": ["val"] * len(keys),
                "key": keys,
                "label": pa.array([LABELS[k] for k in keys], pa.int32()),
                "pred": pa.array([top5[k][0] for k in keys], pa.int32()),
                "top5": pa.array([top5[k] for k in keys], pa.list_(pa.int32())),
                "p_label": pa.array([0.5] * len(keys), pa.float32()),
                "p_pred": pa.array([0.9] * len(keys), pa.float32()),
            }
        )
        con.register("_rows", frame)
        store.insert_predictions(con, "select * from _rows")
        con.unregister("_rows")
    con.close()
    return root


def expected_rows(diffs: dict[str, float | None]) -> list[dict]:
    rows = []
    for model_id, (method, sparsity, seed, _) in MODELS.items():
        top1, top5 = EXPECTED[model_id]
        rows.append(
            {
                "model": model_id,
                "top1": top1,
                "top1_err": 100 - top1,
                "top5": top5,
                "top5_err": 100 - top5,
                "param_count": 11.69,
                "img_size": 224,
                "crop_pct": 0.875,
                "interpolation": "bicubic" if seed else "bilinear",
                "top1_diff": diffs[model_id],
                "method": method,
                "level": sparsity,  # pruned and dense models: the level is the sparsity
                "sparsity": sparsity,
                "seed": seed,
            }
        )
    return sorted(rows, key=lambda r: (-r["top1"], r["model"]))


SAME_SEED = {
    "r-dense-seed0": None,
    "r-dense-seed1": None,
    "r-magnitude-s0.5-seed0": 25.0 - 75.0,
    "r-magnitude-s0.5-seed1": 25.0 - 50.0,
}


def read(path) -> list[dict]:
    if path.suffix == ".csv":
        with path.open() as f:
            rows = list(csv.DictReader(f))
        assert list(rows[0]) == COLUMNS
        typed = {"img_size": int, "seed": int, "model": str, "interpolation": str, "method": str}
        return [
            {k: (typed.get(k, float)(v) if v != "" else None) for k, v in r.items()} for r in rows
        ]
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        assert table.column_names == COLUMNS
        return table.to_pylist()
    rows = json.loads(path.read_text())
    assert all(list(r) == COLUMNS for r in rows)
    return rows


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_results_in_timm_columns_counted_by_hand(work, fmt):
    pie("results", "--format", fmt, "--root", str(work.path))
    path = work.path / "results" / f"results-val.{fmt}"
    assert read(path) == expected_rows(SAME_SEED)
    assert sorted(p.name for p in (work.path / "results").iterdir()) == [path.name]


def test_top1_diff_follows_parent_id_where_it_is_set(work, tmp_path):
    con = store.connect(work)
    con.execute("alter table models add column if not exists parent_id varchar")
    con.execute(
        "update models set parent_id = 'r-dense-seed0' where model_id = 'r-magnitude-s0.5-seed1'"
    )
    con.close()
    out = tmp_path / "elsewhere"
    pie("results", "--dataset", "val", "--out", str(out), "--root", str(work.path))
    diffs = {**SAME_SEED, "r-magnitude-s0.5-seed1": 25.0 - 75.0}
    assert read(out / "results-val.csv") == expected_rows(diffs)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "imagenet-train"], "unknown dataset 'imagenet-train'"),
        (["--dataset", "val", "--dataset", "other"], "no predictions on other"),
        (["--format", "xlsx"], "unknown format 'xlsx'"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(work, args, message):
    result = pie("results", *args, "--root", str(work.path), ok=False)
    assert_one_line_error(result, message)
    assert not (work.path / "results").exists()
