"""Per-class impact: Welch t-tests of normalised recall, dense vs each variant population
(experiment, method, level).

For every model and class, normalised recall = the class's top-1 recall minus the mean top-1
of the model's population (view `class_recall`); view `class_recall_stats` summarises it per
(population, class): models, mean and standard deviation. From those this module computes the
two-sided Welch t-test (unequal variances) the reference calls,
`ttest_ind(baseline, variant, equal_var=False)`, so t > 0 when the class LOSES normalised recall
under compression (pruning or quantisation: every population of the experiment but the dense one
is a variant); delta_norm_recall = variant mean minus baseline mean normalised recall (negative
for such a class) gives the plain reading. Benjamini-Hochberg q-values over the population's
classes and Hedges' g (same sign as t) are reported beside. A class is significant at
p <= alpha with no multiple-testing correction (the reference), or at q <= alpha on request.
A class with zero variance in both populations has no test (t, p, q, g null; not significant).

The statistics are read from DuckDB as NumPy arrays and written back by DuckDB (no data frame
library on this path: `pie analyze` starts faster without one); scipy gives the p-values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
from scipy import special

from analytics.config import SIGNIFICANCE_ON
from pie import relations

if TYPE_CHECKING:
    import duckdb


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


def insert_tests(
    con: duckdb.DuckDBPyConnection,
    source: str,
    table: str,
    columns: list[str],
    test: Callable[[dict[str, np.ndarray]], tuple[dict[str, np.ndarray], np.ndarray]],
    groups: Sequence[str],
    alpha: float,
    significance_on: str = "p",
) -> int:
    """Insert into `table`, by column name, the rows of relation `source` (in the order of its
    keys) with what `test` computes from their `columns` (as float arrays, null -> NaN): its
    output columns, the p-value, q_value (BH within each partition by `groups`) and
    `significant` at `alpha` on p or q. Returns the number of rows inserted."""
    if significance_on not in SIGNIFICANCE_ON:
        raise ValueError(f"significance_on must be 'p' or 'q', got {significance_on!r}")
    order = ", ".join(relations.relation(source).keys)
    con.execute(
        "create or replace temp table _tests_in as select row_number() over () as _row,"
        f" dense_rank() over (order by {', '.join(groups)}) as _group,"
        f" * from (select * from {source} order by {order})"
    )
    try:
        arrays = con.sql(
            f"select _row, _group, {', '.join(f'{c}::double as {c}' for c in columns)}"
            " from _tests_in order by _row"
        ).fetchnumpy()
        if len(arrays["_row"]) == 0:
            return 0
        out, p = test({c: np.ma.filled(arrays[c], np.nan) for c in columns})
        q = np.full(len(p), np.nan)
        group = np.asarray(arrays["_group"])
        for k in np.unique(group):
            rows = np.flatnonzero(group == k)
            q[rows] = benjamini_hochberg(p[rows])
        tested = q if significance_on == "q" else p
        with np.errstate(invalid="ignore"):
            significant = np.isfinite(tested) & (tested <= alpha)
        # NaN arrives as null (DuckDB reads a dict of NumPy arrays without a data frame library)
        tests = {"_row": np.asarray(arrays["_row"]), **out, "p_value": p, "q_value": q}
        con.register("_tests_out", tests | {"significant": significant})
        con.execute(
            f"insert into {table} by name select i.* exclude (_row, _group),"
            " o.* exclude (_row), ? as significance_on, ? as alpha"
            " from _tests_in as i inner join _tests_out as o using (_row)",
            [significance_on, alpha],
        )
        con.unregister("_tests_out")
        return len(p)
    finally:
        con.execute("drop table if exists _tests_in")


def insert_welch_tests(
    con: duckdb.DuckDBPyConnection,
    source: str,
    table: str,
    mean: str,
    std: str,
    groups: list[str],
    alpha: float,
    significance_on: str = "p",
) -> int:
    """`insert_tests` with the Welch test of `baseline_<mean>` against `variant_<mean>` (sample
    standard deviations `baseline_<std>`, `variant_<std>`; sizes `baseline_n`, `variant_n`):
    t_stat (baseline minus variant), welch_df, p_value, hedges_g. Undefined tests are null."""
    columns = [f"{side}_{c}" for side in ("baseline", "variant") for c in (mean, std, "n")]

    def test(values: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        t, df, p, g = welch(*(values[c] for c in columns))
        return {"t_stat": t, "welch_df": df, "hedges_g": g}, p

    return insert_tests(con, source, table, columns, test, groups, alpha, significance_on)


def class_tstats(con: duckdb.DuckDBPyConnection, alpha: float, significance_on: str = "p") -> int:
    """Write table `class_tstats` from view `class_recall_stats` (the caller deletes the old rows
    first, in its transaction); returns the rows written."""
    return insert_welch_tests(
        con,
        "class_recall_stats",
        "class_tstats",
        "mean_normalized",
        "std_recall",
        ["dataset", "experiment", "method", "level"],
        alpha,
        significance_on,
    )
