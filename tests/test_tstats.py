"""class_tstats against scipy on hand-made recalls (summarised by view class_recall_stats), BH
q-values against a hand computation and scipy, Hedges' g against its formula."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from conftest import add_model, add_predictions
from scipy import stats

from analytics.tstats import benjamini_hochberg, class_tstats
from pie import store


def tstats_of(recall: pl.DataFrame, alpha: float = 0.05, on: str = "p") -> pl.DataFrame:
    """class_tstats of hand-made class_recall rows: the frame stands in for the view."""
    con = store.memory()
    con.register("class_recall", recall.to_arrow())
    class_tstats(con, alpha, on)
    out = pl.from_arrow(con.sql("select * from class_tstats order by class_id").to_arrow_table())
    con.close()
    return out


def test_benjamini_hochberg_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.20, np.nan])
    # sorted: .01 .03 .04 .20 (m = 4): p*m/rank = .04 .06 .0533 .20, then running minimum
    # from the top: .04, .0533, .0533, .20
    expected = np.array([0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.20, np.nan])
    np.testing.assert_allclose(benjamini_hochberg(p), expected, equal_nan=True)


def recall_rows(values: dict[str, dict[int, float]], sparsity: float, top1: dict[str, float]):
    rows = []
    pop = np.mean(list(top1.values()))
    for model, per_class in values.items():
        for c, r in per_class.items():
            rows.append(
                {
                    "model_id": model,
                    "dataset": "d",
                    "class_id": c,
                    "experiment": "e",
                    "method": "dense" if sparsity == 0 else "magnitude",
                    "level": sparsity,
                    "sparsity": sparsity,
                    "recall": r,
                    "population_top1": pop,
                    "normalized_recall": r - pop,
                }
            )
    return rows


def test_class_tstats_matches_scipy_welch_on_normalised_recall():
    """The reference's call: ttest_ind(baseline, variant, equal_var=False)."""
    dense = {"d1": {0: 0.9, 1: 0.8}, "d2": {0: 0.7, 1: 0.9}, "d3": {0: 0.8, 1: 0.85}}
    dense_top1 = {"d1": 0.85, "d2": 0.80, "d3": 0.83}
    variant = {"v1": {0: 0.5, 1: 0.8}, "v2": {0: 0.6, 1: 0.7}}
    variant_top1 = {"v1": 0.70, "v2": 0.66}
    df = pl.DataFrame(recall_rows(dense, 0.0, dense_top1) + recall_rows(variant, 0.9, variant_top1))
    out = tstats_of(df).sort("class_id")
    assert out.height == 2
    for c in (0, 1):
        base = [dense[m][c] - np.mean(list(dense_top1.values())) for m in dense]
        var = [variant[m][c] - np.mean(list(variant_top1.values())) for m in variant]
        t, p = stats.ttest_ind(base, var, equal_var=False)
        row = out.row(c, named=True)
        assert row["t_stat"] == pytest.approx(t) and row["p_value"] == pytest.approx(p)
        assert row["significant"] == (p <= 0.05)
        assert row["baseline_mean_recall"] == pytest.approx(np.mean([dense[m][c] for m in dense]))
        assert row["variant_mean_normalized"] == pytest.approx(np.mean(var))
        assert row["delta_norm_recall"] == pytest.approx(np.mean(var) - np.mean(base))
        assert (row["baseline_n"], row["variant_n"]) == (3, 2)
    q = benjamini_hochberg(out["p_value"].to_numpy())
    np.testing.assert_allclose(out["q_value"].to_numpy(), q)


def test_a_class_that_loses_recall_has_positive_t_and_negative_delta():
    """Class 0 falls from ~.9 to ~.3 recall while the population top-1 falls only from .7 to .6:
    class 0 loses normalised recall, class 1 (~.5 -> ~.9) gains it."""
    dense = {"d1": {0: 0.90, 1: 0.50}, "d2": {0: 0.88, 1: 0.52}, "d3": {0: 0.92, 1: 0.48}}
    variant = {"v1": {0: 0.30, 1: 0.90}, "v2": {0: 0.32, 1: 0.88}, "v3": {0: 0.28, 1: 0.92}}
    top1 = 0.7
    df = pl.DataFrame(
        recall_rows(dense, 0.0, dict.fromkeys(dense, top1))
        + recall_rows(variant, 0.9, dict.fromkeys(variant, top1 - 0.1))
    )
    out = tstats_of(df).sort("class_id")
    lost, gained = out.row(0, named=True), out.row(1, named=True)
    # normalised: dense class 0 = .9 - .7 = .2, pruned .3 - .6 = -.3: a loss of .5
    assert lost["delta_norm_recall"] == pytest.approx(-0.5)
    assert lost["t_stat"] > 0 and lost["significant"]
    assert gained["delta_norm_recall"] == pytest.approx(0.5)  # .9 - .6 minus (.5 - .7)
    assert gained["t_stat"] < 0


def test_identical_samples_give_null_not_significant():
    same = {"m1": {0: 1.0}, "m2": {0: 1.0}}
    df = pl.DataFrame(
        recall_rows(same, 0.0, {"m1": 1.0, "m2": 1.0})
        + recall_rows({"v1": {0: 1.0}, "v2": {0: 1.0}}, 0.5, {"v1": 1.0, "v2": 1.0})
    )
    row = tstats_of(df).row(0, named=True)
    assert row["p_value"] is None and row["significant"] is False


def test_class_tstats_from_the_class_recall_view(con):
    """Through SQL: 2 dense and 2 pruned models, recall counted by the view."""
    for m, preds in {"d1": [0, 0, 1, 1], "d2": [0, 1, 1, 1]}.items():
        add_model(con, m, "dense", 0.0, experiment="e")
        add_predictions(con, m, "d", [(f"k{i}", i // 2, p) for i, p in enumerate(preds)])
    for m, preds in {"v1": [1, 1, 1, 1], "v2": [0, 1, 1, 1]}.items():
        add_model(con, m, "magnitude", 0.5, experiment="e")
        add_predictions(con, m, "d", [(f"k{i}", i // 2, p) for i, p in enumerate(preds)])
    assert class_tstats(con, 0.05) == 2
    out = pl.from_arrow(con.sql("select * from class_tstats order by class_id").to_arrow_table())
    # class 0 recalls: dense 1.0, .5 (top-1 1.0, .75 -> mean .875); pruned 0, .5 (.5, .75)
    base = [1.0 - 0.875, 0.5 - 0.875]
    var = [0.0 - 0.625, 0.5 - 0.625]
    t, p = stats.ttest_ind(base, var, equal_var=False)
    assert out["t_stat"][0] == pytest.approx(t) and out["p_value"][0] == pytest.approx(p)


def test_bh_matches_scipy_and_hedges_g_its_formula():
    rng = np.random.default_rng(1)
    p = rng.random(50) ** 3
    np.testing.assert_allclose(benjamini_hochberg(p), stats.false_discovery_control(p))
    dense = {f"d{i}": {0: 0.8 + 0.05 * rng.standard_normal()} for i in range(5)}
    variant = {f"v{i}": {0: 0.6 + 0.08 * rng.standard_normal()} for i in range(4)}
    df = pl.DataFrame(
        recall_rows(dense, 0.0, dict.fromkeys(dense, 0.7))
        + recall_rows(variant, 0.5, dict.fromkeys(variant, 0.65))
    )
    row = tstats_of(df).row(0, named=True)
    b = np.array([v[0] for v in dense.values()]) - 0.7
    v = np.array([x[0] for x in variant.values()]) - 0.65
    pooled = np.sqrt((4 * b.var(ddof=1) + 3 * v.var(ddof=1)) / 7)
    assert row["hedges_g"] == pytest.approx((b.mean() - v.mean()) / pooled * (1 - 3 / (4 * 9 - 9)))
    assert row["baseline_std_recall"] == pytest.approx(b.std(ddof=1))
    welch = stats.ttest_ind(b, v, equal_var=False)
    assert row["welch_df"] == pytest.approx(welch.df)


def test_significance_on_q_is_stricter_than_on_p():
    """Ten classes; class c's pruned recall falls by c/100: on p more classes pass than on q."""
    rng = np.random.default_rng(2)
    dense = {f"d{i}": {c: 0.8 + 0.05 * rng.standard_normal() for c in range(10)} for i in range(6)}
    variant = {
        f"v{i}": {c: 0.8 - c / 100 + 0.05 * rng.standard_normal() for c in range(10)}
        for i in range(6)
    }
    df = pl.DataFrame(
        recall_rows(dense, 0.0, dict.fromkeys(dense, 0.8))
        + recall_rows(variant, 0.5, dict.fromkeys(variant, 0.8))
    )
    on_p, on_q = tstats_of(df, 0.05, "p"), tstats_of(df, 0.05, "q")
    assert (on_p["significant"] == (on_p["p_value"] <= 0.05)).all()
    assert (on_q["significant"] == (on_q["q_value"] <= 0.05)).all()
    assert on_q["significant"].sum() < on_p["significant"].sum()
    assert set(on_q["significance_on"]) == {"q"} and set(on_q["alpha"]) == {0.05}
