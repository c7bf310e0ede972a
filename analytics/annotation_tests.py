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

from analytics.tstats import insert_tests
from pie import store

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
    columns = ["n_pie_with_value", "n_pie", "n_non_pie_with_value", "n_non_pie"]

    def test(n: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        a, c = n["n_pie_with_value"], n["n_non_pie_with_value"]
        odds, p = fisher(a, n["n_pie"] - a, c, n["n_non_pie"] - c)
        return {"odds_ratio": odds}, p

    return insert_tests(con, SOURCE, TABLE, columns, test, GROUPS, alpha, significance_on)


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
