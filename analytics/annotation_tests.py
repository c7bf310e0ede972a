"""Are a population's PIEs richer in an annotation value than its other images?

For every (dataset, variant population, annotation source, name, value) of view
annotation_counts, Fisher's exact test (scipy.stats.fisher_exact, two-sided) of the 2x2 table

    [[PIE with the value,     PIE with another value],
     [non-PIE with the value, non-PIE with another value]]

among the population's images annotated for (source, name), its sample odds ratio, and
Benjamini-Hochberg q-values across the values of each (dataset, population, source, name).
A value is significant at p <= alpha, or q <= alpha, as the per-class tests are (the analysis
settings). Written to table annotation_tests by `pie analyze` and by `pie annotate`; view
pie_annotations adds the shares.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from analytics.config import SIGNIFICANCE_ON
from analytics.tstats import benjamini_hochberg
from pie import relations, store

if TYPE_CHECKING:
    import duckdb

SOURCE = "annotation_counts"
TABLE = "annotation_tests"
GROUPS = ("dataset", "experiment", "method", "level", "source", "name")


def fisher(
    a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Odds ratio and two-sided p-value of each table [[a, b], [c, d]] (scipy's fisher_exact);
    an odds ratio of 0/0 is NaN."""
    from scipy.stats import fisher_exact  # only when there is something to test

    odds, p = np.empty(len(a)), np.empty(len(a))
    for i, table in enumerate(zip(a, b, c, d, strict=True)):
        w, x, y, z = (int(n) for n in table)
        result = fisher_exact([[w, x], [y, z]])
        odds[i], p[i] = result.statistic, result.pvalue
    return odds, p


def annotation_tests(
    con: duckdb.DuckDBPyConnection, alpha: float, significance_on: str = "p"
) -> int:
    """Write table annotation_tests from view annotation_counts (the caller deletes the old rows
    first, in its transaction); returns the rows written."""
    if significance_on not in SIGNIFICANCE_ON:
        raise ValueError(f"significance_on must be 'p' or 'q', got {significance_on!r}")
    order = ", ".join(relations.relation(SOURCE).keys)
    con.execute(
        "create or replace temp table _fisher_in as select row_number() over () as _row,"
        f" dense_rank() over (order by {', '.join(GROUPS)}) as _group,"
        f" * from (select * from {SOURCE} order by {order})"
    )
    try:
        counts = con.sql(
            "select _row, _group, n_pie_with_value, n_pie, n_non_pie_with_value, n_non_pie"
            " from _fisher_in order by _row"
        ).fetchnumpy()
        if len(counts["_row"]) == 0:
            return 0
        a, c = counts["n_pie_with_value"], counts["n_non_pie_with_value"]
        odds, p = fisher(a, counts["n_pie"] - a, c, counts["n_non_pie"] - c)
        q = np.full(len(p), np.nan)
        group = np.asarray(counts["_group"])
        for k in np.unique(group):
            rows = np.flatnonzero(group == k)
            q[rows] = benjamini_hochberg(p[rows])
        tested = q if significance_on == "q" else p
        with np.errstate(invalid="ignore"):
            significant = np.isfinite(tested) & (tested <= alpha)
        tests = {  # NaN arrives as null
            "_row": np.asarray(counts["_row"]),
            "odds_ratio": odds,
            "p_value": p,
            "q_value": q,
            "significant": significant,
        }
        con.register("_fisher_out", tests)
        con.execute(
            f"insert into {TABLE} by name select i.* exclude (_row, _group), o.* exclude (_row),"
            " ? as significance_on, ? as alpha"
            " from _fisher_in as i inner join _fisher_out as o using (_row)",
            [significance_on, alpha],
        )
        con.unregister("_fisher_out")
        return len(p)
    finally:
        con.execute("drop table if exists _fisher_in")


def settings(con: duckdb.DuckDBPyConnection) -> tuple[float, str]:
    """(alpha, significance_on) as the last `pie analyze` stored them (else the defaults)."""
    from analytics.config import AnalyzeConfig

    stored = dict(
        store.rows(
            con, "select name, value from settings where name in ('alpha', 'significance_on')"
        )
    )
    default = AnalyzeConfig()
    alpha = float(stored.get("alpha", default.alpha))
    return alpha, stored.get("significance_on", default.significance_on)
