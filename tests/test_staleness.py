"""Nothing stale: checkpoints replaced behind pie's back (train and infer), predictions replaced
(the analysis, class_tstats, robustness_tstats, the `pie sql` note), exports whose PIE set
changed. (Variants of a re-packed parent: test_corrupt_stage.)

Expected predictions are computed here from the checkpoint on disk and the PNG bytes
(test_infer's helpers), never from pie's earlier output."""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest
import torch
from conftest import TINY_TRAIN, add_dataset, add_predictions, assert_one_line_error, pie
from test_analytics import votes
from test_export import pie_root
from test_infer import (  # world: fmnist-train and -test packed, M0 and M1 trained
    CFG,
    JOBS,
    assert_same,
    expected,
    images,
    query,
    stored,
    world,  # noqa: F401
)
from test_train_infer import write_parts

from analytics import analyze, export
from analytics.config import AnalyzeConfig, ExportConfig
from infer.run import main as infer
from infer.sink import load_pair
from pie import catalog, checkpoints, materialised, store
from pie.errors import PieError
from pie.shards import read_shards, sha256_file
from train import population
from train.trainer import train_one

TINY = replace(TINY_TRAIN, epochs=2, prune_end_epoch=1.5)
M0, M1 = (j.model_id for j in JOBS)


@pytest.fixture
def analysed(root):
    """test_analytics' votes on dataset d (dense d0-d2, magnitude 0.5 v0-v2), analysed."""
    with store.connect(root) as con:
        add_dataset(con, "d")
        votes(con)
    analyze.main(root, AnalyzeConfig(experiment="exp", dataset="d"))
    return root


def registered_sha(root, model_id: str) -> str:
    return query(root, "select sha256 from models where model_id = ?", [model_id])[0][0]


def run_sha(root, model_id: str) -> str:
    return query(
        root, "select checkpoint_sha256 from inference_runs where model_id = ?", [model_id]
    )[0][0]


def other_weights(root, tmp_path) -> tuple:
    """M0's checkpoint as another machine made it (same config, other weights: a consistent
    pair of weights and sidecar), written under tmp_path; returns (directory, sha256)."""
    source = root.checkpoint(M0)
    state = torch.load(source / checkpoints.WEIGHTS, weights_only=True)
    state["fc.bias"] = state["fc.bias"] + 0.5
    out = tmp_path / "elsewhere"
    out.mkdir()
    torch.save(state, out / checkpoints.WEIGHTS)
    sha = sha256_file(out / checkpoints.WEIGHTS)
    sidecar = checkpoints.read_sidecar(source)
    (out / checkpoints.SIDECAR).write_text(replace(sidecar, sha256=sha).to_json())
    return out, sha


def test_infer_evaluates_a_checkpoint_copied_in_with_its_sidecar_again(world, tmp_path):  # noqa: F811
    root = world
    assert infer(root, CFG) == 2
    old_sha = run_sha(root, M0)
    elsewhere, new_sha = other_weights(root, tmp_path)
    assert new_sha != old_sha
    for name in (checkpoints.WEIGHTS, checkpoints.SIDECAR):  # copied in, mtimes kept
        shutil.copy2(elsewhere / name, root.checkpoint(M0) / name)

    assert infer(root, CFG) == 1  # only M0's pair: registered again, evaluated again
    assert registered_sha(root, M0) == new_sha and run_sha(root, M0) == new_sha
    keys, pixels = images(root, "fmnist-test")
    assert_same(stored(root, M0, "fmnist-test"), expected(root, M0, keys, pixels))
    assert query(root, "select count(*) from predictions") == [(40,)]
    assert infer(root, CFG) == 0


def test_infer_refuses_weights_copied_in_without_their_sidecar(world, monkeypatch):  # noqa: F811
    """Another model's weights (same arch: same size) under M0's id, mtime kept: the size and
    mtime check sees a change, the hash against the sidecar refuses; an unchanged checkpoint is
    not hashed again."""
    root = world
    assert infer(root, CFG) == 2
    before = stored(root, M0, "fmnist-test")
    weights = root.checkpoint(M0) / checkpoints.WEIGHTS
    other = root.checkpoint(M1) / checkpoints.WEIGHTS
    assert weights.stat().st_size == other.stat().st_size
    shutil.copy2(other, weights)
    with pytest.raises(PieError, match=r"model\.pt has sha256 .* its model\.json says"):
        infer(root, CFG)
    assert stored(root, M0, "fmnist-test") == before  # nothing replaced
    result = pie("infer", "--root", str(root.path), "--device", "cpu", ok=False)
    assert_one_line_error(result, "weights replaced without their sidecar?")

    shutil.copy2(root.checkpoint(M1) / checkpoints.SIDECAR, root.checkpoint(M0))
    with pytest.raises(PieError, match=f"holds the sidecar of model {M1}, not {M0}"):
        infer(root, CFG)

    hashed = []
    real = checkpoints.sha256_file
    monkeypatch.setattr(checkpoints, "sha256_file", lambda p: hashed.append(p) or real(p))
    train_one(root, TINY, JOBS[0], 10, "fashion-mnist")  # M0's own pair back, a new mtime
    hashed.clear()  # (save hashed it)
    assert infer(root, CFG) == 0  # the same sha256 as registered: nothing to evaluate
    assert [p.parent.name for p in hashed] == [M0]  # hashed once: its mtime changed
    hashed.clear()
    assert infer(root, CFG) == 0
    assert hashed == []  # size and mtime as recorded: no hashing


def train_cfg(**overrides):
    return replace(TINY, sparsities=(0.0,), seeds=2, workers=1, **overrides)


def test_train_refuses_weights_without_their_sidecar_and_registers_a_consistent_pair_again(
    packed, tmp_path, capsys
):
    root = packed
    cfg = train_cfg()
    population.main(root, cfg)
    old_sha = registered_sha(root, M0)
    weights = root.checkpoint(M0) / checkpoints.WEIGHTS
    saved = weights.read_bytes()
    shutil.copy2(root.checkpoint(M1) / checkpoints.WEIGHTS, weights)
    with pytest.raises(PieError, match="weights replaced without their sidecar"):
        population.main(root, cfg)
    weights.write_bytes(saved)

    elsewhere, new_sha = other_weights(root, tmp_path)
    assert new_sha != old_sha
    for name in (checkpoints.WEIGHTS, checkpoints.SIDECAR):
        shutil.copy2(elsewhere / name, root.checkpoint(M0) / name)
    capsys.readouterr()
    assert population.main(root, cfg) == []  # nothing trained ...
    out = " ".join(capsys.readouterr().out.split())
    assert "2 already there (1 replaced on disk since registered: registered again" in out
    assert registered_sha(root, M0) == new_sha  # ... but registered with its new sha256
    with store.connect(root) as con:
        assert catalog.checkpoint_file(con, M0).sha256 == new_sha


# -- the analysis: predictions replaced, robustness_tstats, the `pie sql` note -----------------


def test_predictions_replaced_by_as_many_rows_make_the_analysis_stale(analysed):
    """v0's predictions on d replaced by 4 others (a: 2 -> 0): the row count is the same, the
    analysis is stale; `pie sql` over class_tstats and robustness_tstats says so in one line
    naming `pie analyze`; after it, no note, and a is no PIE any more (pruned votes 0, 2, 0:
    mode 0, the dense mode)."""
    args = ["--root", str(analysed.path)]
    for table in ("class_tstats", "robustness_tstats"):
        assert pie("sql", f"select * from {table}", *args).stderr == ""
    with store.connect(analysed) as con:
        n = store.rows(con, "select count(*) from predictions")
        store.delete_predictions(con, "model_id = 'v0' and dataset = 'd'")
        add_predictions(con, "v0", "d", [("a", 0, 0), ("b", 0, 0), ("c", 1, 2), ("e", 1, 1)])
        assert store.rows(con, "select count(*) from predictions") == n
        assert not materialised.is_fresh(con)
    for table in ("class_tstats", "robustness_tstats"):
        note = pie("sql", f"select * from {table}", *args).stderr.strip().splitlines()
        assert len(note) == 1 and note[0].startswith(f"note: {table} was computed from other")
        assert note[0].endswith("run `pie analyze`")
    both = pie("sql", "select * from class_tstats, robustness_tstats", *args).stderr
    assert "class_tstats and robustness_tstats were computed" in both
    stored = pie("sql", "select * from materialised.pie_unranked", *args).stderr
    assert stored.startswith("note: materialised.pie_unranked was computed from other")
    view = pie("sql", "select * from pie_unranked", *args).stderr
    assert view.startswith("note: the analysis is not materialised or out of date")
    assert analyze.main(analysed, AnalyzeConfig(experiment="exp", dataset="d")) is True
    assert pie("sql", "select * from class_tstats", *args).stderr == ""
    with store.connect(analysed, read_only=True) as con:
        assert materialised.attach(con)
        assert dict(store.rows(con, "select key, is_pie from pie"))["a"] is False


def test_replaced_predictions_delete_the_experiments_robustness_tstats(root, con):
    """A pair of experiment e on a corrupted variant is replaced: every robustness_tstats row of
    e goes (its q-values are over all its datasets), other experiments' stay."""
    for dataset, experiment in (("d", "e"), ("d-gaussian_noise-1", "e"), ("d", "other")):
        con.execute(
            "insert into robustness_tstats (dataset, experiment, method, level, sparsity, kind,"
            " baseline_n, variant_n, significant, significance_on, alpha)"
            " values (?, ?, 'magnitude', 0.9, 0.9, 'clean', 2, 2, false, 'p', 0.05)",
            [dataset, experiment],
        )
    assert load_pair(con, write_parts(root, dataset="d-gaussian_noise-1")) == 3
    assert store.rows(con, "select dataset, experiment from robustness_tstats") == [("d", "other")]


# -- exports -----------------------------------------------------------------------------------


def exported_keys(directory) -> list[str]:
    return sorted(s["__key__"] for s in read_shards(directory))


def test_export_is_written_again_when_its_pie_set_changed(root, capsys):
    """test_export's root: PIEs k0, k1. Asked again unchanged: already there. After v1 and v2
    also say 1 for k2 (same row count), k2 is a PIE too: the export is rewritten with k0-k2;
    asked with a CSV manifest, rewritten with one."""
    pie_root(root).close()
    cfg = ExportConfig(experiment="exp", dataset="d", sparsity=0.9)
    out = export.main(root, cfg)
    assert exported_keys(out) == ["k0", "k1"]
    capsys.readouterr()
    export.main(root, cfg)
    assert "already there" in capsys.readouterr().out
    with store.connect(root) as con:
        for m in ("v1", "v2"):
            store.delete_predictions(con, "model_id = ?", [m])
            add_predictions(con, m, "d", [(f"k{i}", 0, int(i < 3)) for i in range(5)], 0.25)
    assert export.main(root, cfg) == out
    assert "rewritten" in " ".join(capsys.readouterr().out.split())
    assert exported_keys(out) == ["k0", "k1", "k2"]
    assert query(root, "select n_images from datasets where name = 'd-magnitude-0.9-pie'") == [(3,)]
    export.main(root, replace(cfg, manifest="csv"))
    assert sorted(p.name for p in out.glob("manifest.*")) == ["manifest.csv"]
