"""Per-class impact: Welch t-tests of normalised recall, dense vs each variant population.

For every model and class, normalised recall = the class's top-1 recall minus the mean top-1
of the model's population (view `class_recall`). Per (dataset, experiment), each variant
population (method, sparsity > 0) is compared class by class with the dense one (sparsity 0):
two-sided Welch t-test (unequal variances) called as the reference calls it,
`ttest_ind(baseline, variant, equal_var=False)`, so t > 0 when the class LOSES normalised recall
under pruning; delta_norm_recall = variant mean minus baseline mean normalised recall (negative
for such a class) gives the plain reading. A class is significant at p <= alpha with no
multiple-testing correction (the reference); Benjamini-Hochberg q-values over the population's
classes are reported beside.
"""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl
from scipy import stats


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """BH q-values; NaN p-values (degenerate tests) stay NaN and do not count."""
    q = np.full_like(p, np.nan, dtype=float)
    finite = np.isfinite(p)
    if finite.any():
        q[finite] = stats.false_discovery_control(p[finite], method="bh")
    return q


def recall_matrix(rows: pl.DataFrame, column: str, classes: list[int]) -> np.ndarray:
    """(models x classes) matrix of `column`, classes in the given order."""
    wide = rows.pivot(on="class_id", index="model_id", values=column).sort("model_id")
    return wide.select([str(c) for c in classes]).to_numpy().astype(float)


def class_tstats(recall: pl.DataFrame, alpha: float) -> pl.DataFrame:
    """`recall`: rows of the `class_recall` view. Returns rows of table `class_tstats`."""
    out = []
    for (dataset, experiment), group in recall.group_by(["dataset", "experiment"]):
        dense = group.filter(pl.col("sparsity") == 0)
        if dense.is_empty():
            continue
        variants = group.filter(pl.col("sparsity") > 0)
        for (method, sparsity), variant in variants.group_by(["method", "sparsity"]):
            classes = sorted(set(dense["class_id"].to_list()) & set(variant["class_id"].to_list()))
            b_norm = recall_matrix(dense, "normalized_recall", classes)
            v_norm = recall_matrix(variant, "normalized_recall", classes)
            with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
                # identical samples (a class every model gets right) give NaN: not significant
                warnings.simplefilter("ignore", RuntimeWarning)
                t, p = stats.ttest_ind(b_norm, v_norm, axis=0, equal_var=False)
            t, p = np.atleast_1d(t), np.atleast_1d(p)
            out.append(
                pl.DataFrame(
                    {
                        "dataset": dataset,
                        "experiment": experiment,
                        "method": method,
                        "sparsity": sparsity,
                        "class_id": classes,
                        "baseline_n": len(b_norm),
                        "variant_n": len(v_norm),
                        "baseline_mean_recall": recall_matrix(dense, "recall", classes).mean(0),
                        "variant_mean_recall": recall_matrix(variant, "recall", classes).mean(0),
                        "baseline_mean_normalized": b_norm.mean(0),
                        "variant_mean_normalized": v_norm.mean(0),
                        "delta_norm_recall": v_norm.mean(0) - b_norm.mean(0),
                        "t_stat": t,
                        "p_value": p,
                        "q_value": benjamini_hochberg(p),
                        "significant": np.isfinite(p) & (p <= alpha),
                    },
                    schema_overrides={
                        "class_id": pl.Int32,
                        "baseline_n": pl.Int32,
                        "variant_n": pl.Int32,
                    },
                )
            )
    if not out:
        return pl.DataFrame()
    return pl.concat(out).with_columns(
        pl.col(c).fill_nan(None) for c in ("t_stat", "p_value", "q_value")
    )
