"""Per-class impact: Welch t-tests of normalised recall, dense vs each variant population.

For every model and class, normalised recall = the class's top-1 recall minus the mean top-1
of the model's population (view `class_recall`); view `class_recall_stats` summarises it per
(population, class): models, mean and standard deviation. From those this module computes the
two-sided Welch t-test (unequal variances) the reference calls,
`ttest_ind(baseline, variant, equal_var=False)`, so t > 0 when the class LOSES normalised recall
under pruning; delta_norm_recall = variant mean minus baseline mean normalised recall (negative
for such a class) gives the plain reading. Benjamini-Hochberg q-values over the population's
classes and Hedges' g (same sign as t) are reported beside. A class is significant at
p <= alpha with no multiple-testing correction (the reference), or at q <= alpha on request.
A class with zero variance in both populations has no test (t, p, q, g null; not significant).
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy import special

from analytics.config import SIGNIFICANCE_ON


def benjamini_hochberg(p: np.ndarray) -> np.ndarray:
    """BH q-values; NaN p-values (degenerate tests) stay NaN and do not count."""
    q = np.full(len(p), np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    if len(finite) == 0:
        return q
    order = finite[np.argsort(p[finite], kind="stable")]
    m = len(order)
    scaled = p[order] * m / np.arange(1, m + 1)
    q[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return q


def welch(
    mean_b: np.ndarray,
    std_b: np.ndarray,
    n_b: np.ndarray,
    mean_v: np.ndarray,
    std_v: np.ndarray,
    n_v: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Welch's t (baseline minus variant), its degrees of freedom, the two-sided p-value and
    Hedges' g, element-wise from summary statistics (sample standard deviations)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        vb, vv = std_b**2 / n_b, std_v**2 / n_v
        se = np.sqrt(vb + vv)
        t = (mean_b - mean_v) / se
        df = (vb + vv) ** 2 / (vb**2 / (n_b - 1) + vv**2 / (n_v - 1))
        p = 2 * special.stdtr(df, -np.abs(t))
        pooled = np.sqrt(((n_b - 1) * std_b**2 + (n_v - 1) * std_v**2) / (n_b + n_v - 2))
        g = (mean_b - mean_v) / pooled * (1 - 3 / (4 * (n_b + n_v) - 9))
    undefined = ~(se > 0)  # 0/0: identical constant samples
    for a in (t, df, p, g):
        a[undefined] = np.nan
    return t, df, p, g


def welch_columns(
    stats: pl.DataFrame,
    mean: str,
    std: str,
    groups: list[str],
    alpha: float,
    significance_on: str = "p",
) -> pl.DataFrame:
    """`stats` plus the Welch test of `baseline_<mean>` against `variant_<mean>` (sample
    standard deviations `baseline_<std>`, `variant_<std>`; sizes `baseline_n`, `variant_n`):
    t_stat (baseline minus variant), welch_df, p_value, q_value (BH within each `groups`
    partition), hedges_g and `significant` at `alpha` on p or q. Undefined tests are null."""
    if significance_on not in SIGNIFICANCE_ON:
        raise ValueError(f"significance_on must be 'p' or 'q', got {significance_on!r}")

    def col(name: str) -> np.ndarray:
        return stats[name].cast(pl.Float64).fill_null(np.nan).to_numpy()

    t, df, p, g = welch(
        col(f"baseline_{mean}"),
        col(f"baseline_{std}"),
        col("baseline_n"),
        col(f"variant_{mean}"),
        col(f"variant_{std}"),
        col("variant_n"),
    )
    q = np.full(len(p), np.nan)
    for rows in stats.with_row_index("row").group_by(groups).agg("row")["row"]:
        rows = rows.to_numpy()
        q[rows] = benjamini_hochberg(p[rows])
    tested = q if significance_on == "q" else p
    with np.errstate(invalid="ignore"):
        significant = np.isfinite(tested) & (tested <= alpha)
    out = stats.with_columns(
        t_stat=pl.Series(t),
        welch_df=pl.Series(df),
        p_value=pl.Series(p),
        q_value=pl.Series(q),
        hedges_g=pl.Series(g),
        significant=pl.Series(significant),
        significance_on=pl.lit(significance_on),
        alpha=pl.lit(alpha, pl.Float64),
    )
    return out.with_columns(
        pl.col(c).fill_nan(None) for c in ("t_stat", "welch_df", "p_value", "q_value", "hedges_g")
    )


def class_tstats(stats: pl.DataFrame, alpha: float, significance_on: str = "p") -> pl.DataFrame:
    """`stats`: rows of view `class_recall_stats`. Returns rows of table `class_tstats`."""
    if significance_on not in SIGNIFICANCE_ON:
        raise ValueError(f"significance_on must be 'p' or 'q', got {significance_on!r}")
    if stats.is_empty():
        return pl.DataFrame()
    stats = stats.sort("dataset", "experiment", "method", "sparsity", "class_id")
    keys = ["dataset", "experiment", "method", "sparsity"]
    out = welch_columns(stats, "mean_normalized", "std_recall", keys, alpha, significance_on)
    return out.with_columns(
        pl.col("baseline_n", "variant_n", "class_id").cast(pl.Int32),
        delta_norm_recall=pl.col("variant_mean_normalized") - pl.col("baseline_mean_normalized"),
    )
