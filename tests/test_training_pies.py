"""PIEs on a training set, end to end through the CLI: ingest a training split, train tiny
dense and pruned models, `pie infer --dataset <train set>`, `pie analyze`, `pie export` of its
PIE and non-PIE subsets. The exported keys are checked against the PIEs counted by hand from the
predictions table (numpy, the reference's rule: modal top-1 per population, ties to the largest
class id), never against pie's own `pie` view."""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile

import numpy as np
import polars as pl
import pytest
from conftest import assert_one_line_error, pie, write_idx

from pie import store
from pie.paths import open_root

TRAIN = "fmnist-train"

CONFIG = """
name = "t"
[ingest]
fashion_mnist_dir = "{idx}"
[train]
arch = "tiny_cnn"
sparsities = [0.0, 0.9]
seeds = 3
epochs = 3
batch_size = 16
prune_start_epoch = 0.5
prune_end_epoch = 2
prune_frequency = 1
workers = 1
device = "cpu"
[infer]
workers = 0
device = "cpu"
[export]
dataset = "{train}"
"""


def learnable_idx(directory, rng) -> None:
    """Fashion-MNIST-shaped IDX files whose classes a tiny CNN half learns in a few steps: class
    c is a bright 7x7 patch at one of ten places, over noise (96 train, 30 test images)."""
    for stem, n in (("train", 96), ("t10k", 30)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 120, (n, 28, 28))
        for i, c in enumerate(labels):
            row, col = divmod(int(c), 4)
            images[i, 7 * row : 7 * row + 7, 7 * col : 7 * col + 7] += 120
        write_idx(directory / f"{stem}-images-idx3-ubyte.gz", images)
        write_idx(directory / f"{stem}-labels-idx1-ubyte.gz", labels)


def query(root, sql: str, params=()) -> list[tuple]:
    with store.connect(root, read_only=True) as con:
        return store.rows(con, sql, params)


def snapshot(root, dataset: str) -> dict[str, list[tuple]]:
    """What the analysis says about an evaluation set: its t-tests and its PIE rows."""
    return {
        "class_tstats": query(
            root,
            "select * from class_tstats where dataset = ? order by method, sparsity, class_id",
            [dataset],
        ),
        "robustness_tstats": query(
            root,
            "select * from robustness_tstats where dataset = ? order by method, sparsity",
            [dataset],
        ),
        "pie": query(
            root,
            "select key, method, sparsity, is_pie from pie where dataset = ?"
            " order by key, method, sparsity",
            [dataset],
        ),
    }


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Ingest, train, infer (default datasets), analyze; then infer the training set, analyze,
    export its PIEs and non-PIEs. Returns the work root, the config and what the default infer
    and the first analysis left."""
    tmp = tmp_path_factory.mktemp("trainpie")
    learnable_idx(tmp, np.random.default_rng(0))
    cfg = tmp / "t.toml"
    cfg.write_text(CONFIG.format(idx=tmp, train=TRAIN))
    work = tmp / "work"
    args = ("--config", str(cfg), "--root", str(work))
    for stage in (["ingest", "fashion-mnist"], ["train"], ["infer"], ["analyze"]):
        pie(*stage, *args)
    root = open_root(work)
    by_default = {r[0] for r in query(root, "select distinct dataset from inference_runs")}
    before = snapshot(root, "fmnist-test")
    for stage in (
        ["infer", "--dataset", TRAIN],
        ["analyze"],
        ["export"],
        ["export", "--non-pie"],
    ):
        pie(*stage, *args)
    return root, args, by_default, before


def modes(frame: pl.DataFrame) -> dict[str, int]:
    """key -> the modal prediction of the models in `frame`, ties to the largest class id."""
    out = {}
    for key, group in frame.group_by("key"):
        counts = np.bincount(group["pred"].to_numpy(), minlength=10)
        out[key[0]] = int(np.flatnonzero(counts == counts.max()).max())
    return out


def hand_count(root) -> tuple[set[str], set[str]]:
    """(PIE keys, non-PIE keys) of the training set at 0.9, from the raw predictions."""
    rows = query(
        root,
        "select p.key, p.pred, m.method from predictions as p"
        " join models as m using (model_id) where p.dataset = ?",
        [TRAIN],
    )
    frame = pl.DataFrame(rows, schema=["key", "pred", "method"], orient="row")
    dense = modes(frame.filter(pl.col("method") == "dense"))
    pruned = modes(frame.filter(pl.col("method") == "magnitude"))
    assert dense.keys() == pruned.keys()
    pies = {k for k in dense if dense[k] != pruned[k]}
    return pies, set(dense) - pies


def shard_keys(directory) -> list[str]:
    """The sample keys in a directory's tar shards, read with tarfile (not pie.shards)."""
    keys = []
    for shard in sorted(directory.glob("*.tar")):
        with tarfile.open(shard) as tar:
            keys += sorted({m.name.split(".", 1)[0] for m in tar.getmembers()})
    return keys


def test_infer_evaluates_a_training_set_only_when_named(pipeline):
    root, _, by_default, _ = pipeline
    assert by_default == {"fmnist-test"}
    n_models = query(root, "select count(*) from models")[0][0]
    assert query(root, "select count(*) from inference_runs where dataset = ?", [TRAIN]) == [
        (n_models,)
    ]
    assert query(root, "select count(*) from predictions where dataset = ?", [TRAIN]) == [
        (96 * n_models,)
    ]


def test_export_holds_the_hand_counted_pies_and_the_rest(pipeline):
    root, _, _, _ = pipeline
    pies, rest = hand_count(root)
    assert pies and rest, "the fixture must give both PIEs and non-PIEs"
    for subset, expected in (("pie", pies), ("nonpie", rest)):
        name = f"{TRAIN}-magnitude-0.9-{subset}"
        (path, split, parent, n), *_ = query(
            root, "select path, split, parent, n_images from datasets where name = ?", [name]
        )
        keys = shard_keys(root.path / path)
        assert len(keys) == len(set(keys)) == n == len(expected)
        assert set(keys) == expected
        assert (split, parent) == ("train", TRAIN)  # a subset of a training set is one


def test_training_set_is_analysed_like_a_clean_set(pipeline):
    root, _, _, _ = pipeline
    classes = query(
        root,
        "select count(*) from class_tstats where dataset = ? and sparsity = 0.9",
        [TRAIN],
    )[0][0]
    assert classes == len(
        query(root, "select distinct label from images where dataset = ?", [TRAIN])
    )
    assert query(root, "select count(*) from pie where dataset = ?", [TRAIN]) == [(96,)]
    # not a robustness measurement: no robustness test on a training set
    assert query(root, "select count(*) from robustness_tstats where dataset = ?", [TRAIN]) == [
        (0,)
    ]


def test_evaluation_results_do_not_change_when_the_training_set_is_added(pipeline):
    root, _, _, before = pipeline
    after = snapshot(root, "fmnist-test")
    assert before["class_tstats"] and before["robustness_tstats"]
    assert after == before


def test_a_training_set_never_ingested_is_one_line_and_writes_nothing(pipeline, tmp_path):
    root, _, _, _ = pipeline
    copy = tmp_path / "work"
    shutil.copytree(root.path, copy)
    digest = hashlib.sha256((copy / "pie.duckdb").read_bytes()).hexdigest()
    result = pie("infer", "--dataset", "cifar10-train", "--root", str(copy), ok=False)
    assert_one_line_error(result, "unknown dataset 'cifar10-train'")
    assert hashlib.sha256((copy / "pie.duckdb").read_bytes()).hexdigest() == digest
    assert not list((copy / "parts").rglob("*.parquet"))


def test_results_of_the_training_set_match_the_predictions(pipeline, tmp_path):
    """`pie results` on real predictions: top-1 and top-5 counted with polars from the
    predictions table, top1_diff against the same seed's dense model."""
    root, _, _, _ = pipeline
    rows = query(
        root,
        "select model_id, label, pred, list_contains(top5, label) from predictions"
        " where dataset = ?",
        [TRAIN],
    )
    hand = (
        pl.DataFrame(rows, schema=["model", "label", "pred", "in_top5"], orient="row")
        .group_by("model")
        .agg(
            (100 * (pl.col("pred") == pl.col("label")).mean()).alias("top1"),
            (100 * pl.col("in_top5").mean()).alias("top5"),
        )
    )
    hand = {r["model"]: r for r in hand.to_dicts()}
    pie("results", "-d", TRAIN, "-f", "json", "--out", str(tmp_path), "--root", str(root.path))
    written = json.loads((tmp_path / f"results-{TRAIN}.json").read_text())
    assert sorted(r["model"] for r in written) == sorted(hand)
    for r in written:
        assert r["top1"] == pytest.approx(hand[r["model"]]["top1"], abs=5e-4)
        assert r["top5"] == pytest.approx(hand[r["model"]]["top5"], abs=5e-4)
        assert (r["img_size"], r["crop_pct"], r["interpolation"]) == (28, 1.0, "bilinear")
        if r["method"] == "dense":
            assert r["top1_diff"] is None
        else:
            dense = hand[f"t-dense-seed{r['seed']}"]["top1"]
            assert r["top1_diff"] == pytest.approx(hand[r["model"]]["top1"] - dense, abs=1e-3)


def test_a_model_trains_on_the_training_set_without_its_pies(pipeline, tmp_path):
    root, _, _, _ = pipeline
    nonpie = f"{TRAIN}-magnitude-0.9-nonpie"
    cfg = tmp_path / "without.toml"
    text = CONFIG.format(idx=tmp_path, train=TRAIN).replace('name = "t"', 'name = "without"')
    text = text.replace('arch = "tiny_cnn"', f'arch = "tiny_cnn"\ndataset = "{nonpie}"')
    text = text.replace("seeds = 3", "seeds = 1").replace("[0.0, 0.9]", "[0.0]")
    cfg.write_text(text.replace("batch_size = 16", "batch_size = 2"))
    pie("train", "--config", str(cfg), "--root", str(root.path))
    ((dataset,),) = query(root, "select train_dataset from models where experiment = 'without'")
    assert dataset == nonpie
