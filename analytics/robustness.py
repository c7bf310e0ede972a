"""Robustness of compressed populations (pruned, quantised: every population of an experiment but
its dense one): per dataset (clean, each corruption at each severity, ImageNet-A/R), the dense and
the compressed population's top-1 (mean and standard deviation over
the models) and a Welch t-test between them (table `robustness_tstats`, written by
`pie analyze`); `pie robustness` prints the corruption x severity table in wide form.

ImageNet-A/R rows are as `pie infer` scored them: among the logits of the dataset's class subset
(the subset protocol), so their top-1 is the published one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from analytics import population
from pie import catalog, console, store
from pie import materialised as materialise
from pie.errors import PieError
from pie.paths import WorkRoot

if TYPE_CHECKING:
    import duckdb

BENCHMARK_ORDER = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
    "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
    "elastic_transform", "pixelate", "jpeg_compression",
    "speckle_noise", "gaussian_blur", "spatter", "saturate",
)  # fmt: skip


def robustness_tstats(
    con: duckdb.DuckDBPyConnection, alpha: float, significance_on: str = "p"
) -> int:
    """Write table `robustness_tstats` from view `robustness_stats` (q over each population's
    datasets; the caller deletes the old rows first, in its transaction); returns the rows."""
    from analytics.tstats import insert_welch_tests

    return insert_welch_tests(
        con,
        "robustness_stats",
        "robustness_tstats",
        "mean_top1",
        "std_top1",
        ["experiment", "method", "level"],
        alpha,
        significance_on,
    )


def records(con: duckdb.DuckDBPyConnection, sql: str, params: list) -> list[dict]:
    result = con.execute(sql, params)
    columns = [d[0] for d in result.description]
    return [dict(zip(columns, row, strict=True)) for row in result.fetchall()]


def cell(row: dict | None) -> str:
    """Compressed top-1 in %, the change vs dense in points, * when significant."""
    if row is None:
        return "-"
    mark = "*" if row["significant"] else ""
    return f"{100 * row['variant_mean_top1']:.1f} ({100 * row['delta_top1']:+.1f}{mark})"


def corruption_order(name: str) -> tuple[int, str]:
    return (BENCHMARK_ORDER.index(name) if name in BENCHMARK_ORDER else len(BENCHMARK_ORDER), name)


def wide_table(title: str, rows: list[dict]) -> Table:
    """Rows: corruptions; columns: severities, then the mean over them (pruned and dense)."""
    severities = sorted({r["severity"] for r in rows})
    table = Table(title=title)
    table.add_column("corruption")
    for s in severities:
        table.add_column(f"s{s}", justify="right")
    table.add_column("mean compressed / dense", justify="right")
    for corruption in sorted({r["corruption"] for r in rows}, key=corruption_order):
        mine = {r["severity"]: r for r in rows if r["corruption"] == corruption}
        pruned = sum(r["variant_mean_top1"] for r in mine.values()) / len(mine)
        dense = sum(r["baseline_mean_top1"] for r in mine.values()) / len(mine)
        table.add_row(
            corruption,
            *(cell(mine.get(s)) for s in severities),
            f"{100 * pruned:.1f} / {100 * dense:.1f}",
        )
    return table


def other_table(title: str, rows: list[dict]) -> Table:
    table = Table(title=title)
    for column in ("dataset", "kind", "dense top-1", "compressed top-1", "change", "t", "p"):
        table.add_column(column, justify="right")
    for r in rows:
        t, p = r["t_stat"], r["p_value"]
        table.add_row(
            r["dataset"],
            r["kind"],
            f"{100 * r['baseline_mean_top1']:.2f} ± {100 * (r['baseline_std_top1'] or 0):.2f}",
            f"{100 * r['variant_mean_top1']:.2f} ± {100 * (r['variant_std_top1'] or 0):.2f}",
            f"{100 * r['delta_top1']:+.2f}{'*' if r['significant'] else ''}",
            "-" if t is None else f"{t:.2f}",
            "-" if p is None else f"{p:.2g}",
        )
    return table


def main(
    root: WorkRoot,
    experiment: str,
    dataset: str,
    sparsity: float | None = None,
    method: str | None = None,
    level: float | None = None,
) -> list[dict]:
    """Print, per variant population (or only those of `method` and `level`; `sparsity` is the
    level of a pruning method), the corruption x severity table of the corrupted variants of
    `dataset` (one per origin), and the other datasets' rows (the clean set, ImageNet-A/R);
    returns the rows printed."""
    level = population.chosen_level(level, sparsity)
    with store.connect(root, read_only=True) as con:
        catalog.dataset(con, dataset)
        if not materialise.attach(con):
            raise PieError("the analysis is out of date (or never ran): run `pie analyze` first")
        rows = records(
            con,
            "select t.*, p.quantised from robustness_tstats as t"
            " inner join populations as p using (experiment, method, level) where t.experiment = ?"
            " and (t.dataset = ? or t.parent = ? or t.kind in ('natural_adversarial', 'rendition'))"
            " and (? is null or t.method = ?) and (? is null or t.level = ?)"
            " order by t.method, t.level, t.dataset",
            [experiment, dataset, dataset, method, method, level, level],
        )
    if not rows:
        named = "sparsity" if sparsity is not None else "level"
        raise PieError(
            f"no robustness rows for {experiment} on {dataset}"
            + (f" of {method}" if method else "")
            + (f" at {named} {level:g}" if level is not None else "")
            + ": evaluate dense and compressed models on it (pie infer) and run `pie analyze`"
        )
    populations = sorted(
        {(r["method"], r["level"], r["quantised"]) for r in rows},
        key=lambda x: population.sort_key({"method": x[0], "level": x[1]}),
    )
    for method_, level_, quantised in populations:
        mine = [r for r in rows if (r["method"], r["level"]) == (method_, level_)]
        name = population.label(method_, level_, quantised)
        alpha, on = mine[0]["alpha"], mine[0]["significance_on"]
        for origin in sorted({r["origin"] for r in mine if r["kind"] == "corrupted"}):
            corrupted = [r for r in mine if r["kind"] == "corrupted" and r["origin"] == origin]
            console.out.print(
                wide_table(
                    f"{experiment}: {name} on {origin} corruptions of"
                    f" {dataset}: top-1 % (change vs dense, * {on} <= {alpha:g})",
                    corrupted,
                )
            )
        others = [r for r in mine if r["kind"] != "corrupted"]
        if others:
            console.out.print(other_table(f"{experiment}: {name}, top-1 %", others))
    return rows
