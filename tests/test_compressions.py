"""Every compression in one analysis: a dense, a pruned (magnitude 0.5) and a quantised
population (int8_full at 8 bits, target sparsity 0, derived from the dense models) on one work
root. The quantised population is a variant compared with the dense one, not a second dense
population because its sparsity is 0; its PIEs (CIEs) are counted against a NumPy count here;
`pie summary` lists all three with the sizes of their models rows; `pie export` and
`pie robustness` choose it by method and level."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import add_predictions, assert_one_line_error, pie

from analytics import analyze, export, robustness, summary
from analytics.config import AnalyzeConfig, ExportConfig
from pie import materialised, store
from pie.catalog import DatasetSpec, record_dataset
from pie.errors import PieError
from pie.shards import Sample, read_shards, write_shards

N_CLASSES, N_KEYS, N_MODELS = 3, 12, 3
KEYS = [f"k{i:02d}" for i in range(N_KEYS)]
LABELS = np.random.default_rng(7).integers(0, N_CLASSES, N_KEYS)
# (method, level, target sparsity, quantised, params, non-zero params, bytes on disk): per model
POPULATIONS = {
    "dense": (0.0, 0.0, False, 1000, 1000, 4000),
    "magnitude": (0.5, 0.5, False, 1000, 500, 4000),
    "int8_full": (8.0, 0.0, True, 1000, 990, 1100),
}


def predictions(method: str) -> np.ndarray:
    """(models, keys) predicted labels, drawn per population: mostly the label, sometimes not."""
    rng = np.random.default_rng(list(POPULATIONS).index(method))
    wrong = rng.random((N_MODELS, N_KEYS)) < 0.4
    return np.where(wrong, rng.integers(0, N_CLASSES, (N_MODELS, N_KEYS)), LABELS)


def modes(preds: np.ndarray) -> np.ndarray:
    """Each key's modal label, a tie to the largest class id (the reference's rule)."""
    counts = np.stack([np.bincount(p, minlength=N_CLASSES) for p in preds.T])
    return N_CLASSES - 1 - np.argmax(counts[:, ::-1], axis=1)


def add_models(con) -> None:
    for method, (level, sparsity, quantised, params, nonzero, size) in POPULATIONS.items():
        compression = {"bits": 8, "calibration": "d"} if quantised else {}
        for i in range(N_MODELS):
            parent = f"dense-{i}" if quantised else None
            con.execute(
                "insert into models (model_id, experiment, arch, label_space, method,"
                " target_sparsity, achieved_sparsity, seed, train_dataset, path, sha256, config,"
                " level, parent_id, params, nonzero_params, size_bytes) values (?, 'exp',"
                " 'small_cnn', 'ls', ?, ?, ?, ?, 'train', '', '', ?, ?, ?, ?, ?, ?)",
                [
                    f"{method}-{i}",
                    method,
                    sparsity,
                    1 - nonzero / params,
                    i,
                    json.dumps({"compression": compression}),
                    level,
                    parent,
                    params,
                    nonzero + i,  # means: nonzero + 1
                    size,
                ],
            )
            rows = [
                (k, int(y), int(p))
                for k, y, p in zip(KEYS, LABELS, predictions(method)[i], strict=True)
            ]
            add_predictions(con, f"{method}-{i}", "d", rows)


@pytest.fixture
def analysed(root):
    samples = [
        Sample(k, int(y), f"image {k}".encode(), "png") for k, y in zip(KEYS, LABELS, strict=True)
    ]
    directory = root.shards("d")
    con = store.connect(root)
    spec = DatasetSpec("d", "ls", "clean", "eval", "test")
    record_dataset(con, spec, directory, write_shards(samples, directory, "d"))
    add_models(con)
    con.close()
    analyze.main(root, AnalyzeConfig(experiment="exp", dataset="d"))
    return root


def expected_pies(method: str) -> set[str]:
    dense = modes(predictions("dense"))
    return {k for k, a, b in zip(KEYS, dense, modes(predictions(method)), strict=True) if a != b}


def test_the_fixture_has_pies_in_both_variants():
    assert expected_pies("magnitude") and expected_pies("int8_full")
    assert expected_pies("magnitude") != expected_pies("int8_full")


def test_a_quantised_population_is_a_variant_compared_with_dense(analysed):
    con = store.connect(analysed, read_only=True)
    assert materialised.attach(con)
    populations = store.rows(
        con,
        "select method, level, sparsity, quantised, population_id = dense_population_id"
        " from populations order by method",
    )
    assert populations == [
        ("dense", 0.0, 0.0, False, True),
        ("int8_full", 8.0, 0.0, True, False),
        ("magnitude", 0.5, 0.5, False, False),
    ]
    for method in ("magnitude", "int8_full"):
        got = store.rows(
            con,
            "select key from pie where method = ? and is_pie order by key",
            [method],
        )
        assert {k for (k,) in got} == expected_pies(method), method
    # one PIE row per image and variant; the dense population has none
    counts = store.rows(con, "select method, level, count(*) from pie group by all order by 1")
    assert counts == [("int8_full", 8.0, N_KEYS), ("magnitude", 0.5, N_KEYS)]
    # the t-tests: a row per class and per dataset for each variant, dense vs it
    for table, n in (("class_tstats", N_CLASSES), ("robustness_tstats", 1)):
        tested = store.rows(con, f"select method, level, count(*) from {table} group by all")
        assert sorted(tested) == [("int8_full", 8.0, n), ("magnitude", 0.5, n)], table
    con.close()


def test_summary_lists_every_population_with_the_sizes_of_its_models(analysed, capsys):
    rows = summary.main(analysed, AnalyzeConfig(experiment="exp", dataset="d"))
    out = capsys.readouterr().out
    by_method = {r["method"]: r for r in rows}
    assert [r["method"] for r in rows] == ["dense", "int8_full", "magnitude"]
    dense_top1 = (predictions("dense") == LABELS).mean()
    for method, (level, sparsity, quantised, params, nonzero, size) in POPULATIONS.items():
        r = by_method[method]
        assert (r["level"], r["sparsity"], r["quantised"]) == (level, sparsity, quantised)
        assert r["mean_top1"] == pytest.approx((predictions(method) == LABELS).mean())
        assert (r["mean_params"], r["mean_nonzero_params"]) == (params, nonzero + 1)
        assert r["mean_size_bytes"] == size
        assert r["size_vs_dense"] == pytest.approx(size / 4000)
        assert r["nonzero_params_vs_dense"] == pytest.approx((nonzero + 1) / 1001)
        if method != "dense":
            pies = expected_pies(method)
            assert r["n_pie"] == len(pies) and r["pie_fraction"] == len(pies) / N_KEYS
            on_pies = [KEYS.index(k) for k in sorted(pies)]
            dense_right = predictions("dense")[:, on_pies] == LABELS[on_pies]
            assert r["dense_top1_on_pie"] == pytest.approx(dense_right.mean())
    assert by_method["dense"]["n_pie"] is None
    assert by_method["dense"]["mean_top1"] == pytest.approx(dense_top1)
    lines = {c[1]: c for c in table_cells(out)}
    assert lines["int8_full"][0] == "8-bit" and lines["magnitude"][0] == "0.5"
    assert lines["int8_full"][-1] == "1.1kB x0.28"  # 1100 bytes, 1100 / 4000 of dense
    assert "CIEs: the compression identified exemplars" in out


def table_cells(out: str) -> list[list[str]]:
    return [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if "│" in line]


def test_summary_and_robustness_choose_a_population_by_method_and_level(analysed, capsys):
    cfg = AnalyzeConfig(experiment="exp", dataset="d")
    rows = summary.main(analysed, cfg, method="int8_full", level=8)
    assert [(r["method"], r["level"]) for r in rows] == [("dense", 0.0), ("int8_full", 8.0)]
    with pytest.raises(PieError, match="no population int8_full 4 of exp on d"):
        summary.main(analysed, cfg, method="int8_full", level=4)
    chosen = robustness.main(analysed, "exp", "d", method="int8_full", level=8)
    assert [(r["method"], r["level"], r["sparsity"]) for r in chosen] == [("int8_full", 8.0, 0.0)]
    assert "int8_full 8-bit" in capsys.readouterr().out
    pruned = robustness.main(analysed, "exp", "d", sparsity=0.5)  # a pruning method's level
    assert [(r["method"], r["level"]) for r in pruned] == [("magnitude", 0.5)]
    root = ["--root", str(analysed.path), "-d", "d"]
    result = pie("robustness", *root, "--level", "4", "--sparsity", "0.5", ok=False)
    assert_one_line_error(result, "--level 4 and --sparsity 0.5 disagree")


def test_export_of_the_quantised_population(analysed):
    cfg = ExportConfig(experiment="exp", dataset="d", method="int8_full", level=8)
    out = export.main(analysed, cfg)
    got = {s["__key__"]: s["json"] for s in read_shards(out)}
    assert set(got) == expected_pies("int8_full")
    meta = next(iter(got.values()))
    assert meta["pruning_fraction"] == 0.0 and meta["pie"]["level"] == 8.0
    assert meta["pie"]["method"] == "int8_full" and meta["is_pie"] is True
    con = store.connect(analysed, read_only=True)
    assert store.rows(
        con, "select kind, n_images from datasets where name = 'd-int8_full-8-pie'"
    ) == [("export", len(expected_pies("int8_full")))]
    con.close()
    with pytest.raises(PieError, match="no PIE data for d / exp / int8_full at level 4"):
        export.main(
            analysed, ExportConfig(experiment="exp", dataset="d", method="int8_full", level=4)
        )


def test_a_t_test_table_of_an_older_pie_is_made_again_keyed_by_level():
    """class_tstats as an older pie made it (keyed by sparsity, no level): bringing the schema up
    to date makes it again, so two levels of one method at one sparsity are two rows."""
    con = store.memory()
    con.execute("drop table class_tstats")
    con.execute(
        "create table class_tstats (dataset varchar, experiment varchar, method varchar,"
        " sparsity double, class_id integer, primary key (dataset, experiment, method, sparsity,"
        " class_id))"
    )
    store.create_schema(con)
    for level in (4.0, 8.0):
        con.execute(
            "insert into class_tstats (dataset, experiment, method, level, sparsity, class_id,"
            " baseline_n, variant_n, significant) values ('d', 'e', 'gptq', ?, 0, 0, 2, 2, false)",
            [level],
        )
    assert store.rows(con, "select level from class_tstats order by level") == [(4.0,), (8.0,)]
    con.close()
