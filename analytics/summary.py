"""`pie summary`: the study's headline numbers for one clean dataset, one row per population
(experiment, method, level: view `population_summary`), every compression side by side with the
dense population it is compared with and what it buys (parameters, bytes on disk), and where
everything is."""

from __future__ import annotations

import duckdb
from rich.table import Table

from analytics import population
from analytics.config import AnalyzeConfig
from pie import catalog, console, store
from pie import materialised as materialise
from pie.errors import PieError
from pie.paths import WorkRoot


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


N_BENCHMARK = 15  # the ImageNet-C benchmark corruptions an mCE averages over


def num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def count(value: float | None) -> str:
    """11_200_000 -> '11.2M'."""
    if value is None:
        return "-"
    for size, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:.0f}"


def bytes_text(value: float | None) -> str:
    """44_900_000 -> '44.9MB'."""
    return "-" if value is None else f"{count(value)}B"


def relative(text: str, ratio: float | None) -> str:
    """A size and its ratio to the dense population's: '1.12M x0.10'."""
    return text if ratio is None or text == "-" else f"{text} x{ratio:.2f}"


def corruption_cell(r: dict) -> str:
    """The corruption error vs dense of the released corrupted variants, else the generated: the
    mCE when all 15 are there at all 5 severities, else `~` and the mean CE over those present."""
    origin = "released" if r["released_n_corruptions"] else "generated"
    mce, present = r[f"{origin}_mce_vs_dense"], r[f"{origin}_mean_ce_vs_dense_present"]
    if mce is not None:
        return num(mce)
    return "-" if present is None else f"~{num(present)}"


def headline_table(title: str, rows: list[dict]) -> Table:
    """Every population side by side: its harm (top-1, impacted classes, PIEs or CIEs, the dense
    top-1 on them, corruption error where corrupted variants were evaluated) beside what the
    compression buys (parameters, non-zero parameters, bytes on disk, each x the dense ones)."""
    with_corruptions = any(
        r["released_n_corruptions"] or r["generated_n_corruptions"] for r in rows
    )
    table = Table(title=title)
    columns = [
        "level",
        "method",
        "models",
        "top-1\nmean ± std",
        "impacted\nclasses",
        "PIEs /\nCIEs",
        "by a\ntie",
        "dense top-1\nPIE / rest",
    ]
    columns += ["CE vs\ndense"] if with_corruptions else []
    columns += ["params", "non-zero\nx dense", "on disk\nx dense"]
    for column in columns:  # a row on one line, the headers on two: 12 columns fit 170
        table.add_column(column, justify="right", no_wrap=True)
    for r in rows:
        impacted = (
            "-"
            if r["n_significant_classes"] is None
            else f"{r['n_significant_classes']} / {r['n_classes_tested']}"
        )
        pies = "-" if r["n_pie"] is None else f"{r['n_pie']} ({pct(r['pie_fraction'])}%)"
        ties = "-" if r["n_pie"] is None else str(r["n_pie_tie_decided"])
        dense_on = (
            "-"
            if r["dense_top1_on_pie"] is None and r["dense_top1_on_nonpie"] is None
            else f"{pct(r['dense_top1_on_pie'])} / {pct(r['dense_top1_on_nonpie'])}"
        )
        cells = [
            population.level_text(r["level"], r["quantised"]),
            r["method"],
            str(r["n_models"]),
            f"{pct(r['mean_top1'])} ± {pct(r['std_top1'])}",
            impacted,
            pies,
            ties,
            dense_on,
        ]
        cells += [corruption_cell(r)] if with_corruptions else []
        cells += [
            count(r["mean_params"]),
            relative(count(r["mean_nonzero_params"]), r["nonzero_params_vs_dense"]),
            relative(bytes_text(r["mean_size_bytes"]), r["size_vs_dense"]),
        ]
        table.add_row(*cells)
    return table


def corruption_table(title: str, rows: list[dict]) -> Table:
    """One row per (population, origin) of `mean_corruption_error`."""
    with_alexnet = any(r["mce_vs_alexnet"] is not None for r in rows)
    table = Table(title=title)
    columns = [
        "level",
        "method",
        "origin",
        f"benchmark corruptions (of {N_BENCHMARK})",
        "mCE vs dense",
        "CE vs dense, mean over those present",
    ]
    columns += ["mCE vs AlexNet", "relative mCE vs AlexNet"] if with_alexnet else []
    for column in columns:
        table.add_column(column, justify="right")
    for r in rows:
        cells = [
            population.level_text(r["level"], r["quantised"]),
            r["method"],
            r["origin"],
            str(r["n_corruptions"]),
            num(r["mce_vs_dense"]),
            num(r["mean_ce_vs_dense_present"]),
        ]
        cells += (
            [num(r["mce_vs_alexnet"]), num(r["relative_mce_vs_alexnet"])] if with_alexnet else []
        )
        table.add_row(*cells)
    return table


def records(con: duckdb.DuckDBPyConnection, sql: str, params: list) -> list[dict]:
    result = con.execute(sql, params)
    columns = [d[0] for d in result.description]
    return [dict(zip(columns, row, strict=True)) for row in result.fetchall()]


def main(
    root: WorkRoot, cfg: AnalyzeConfig, method: str | None = None, level: float | None = None
) -> list[dict]:
    """Print the headline table (`population_summary`) and, when the dataset has corrupted
    variants, their corruption errors (`mean_corruption_error`); returns the headline rows
    (one dict per population; `method`, `level`: only those populations, and the dense one they
    are compared with). Reads the materialised tables only (no polars: starts fast)."""
    chosen = (
        "(? is null or method = ? or (method = 'dense' and level = 0))"
        " and (? is null or level = ? or (method = 'dense' and level = 0))"
    )
    choice = [method, method, level, level]
    with store.connect(root, read_only=True) as con:
        store.configure(con, cfg.memory_limit, cfg.threads)
        catalog.dataset(con, cfg.dataset)
        if not materialise.attach(con):
            raise PieError(
                "the analysis is out of date (predictions, models or analysis settings changed"
                " since the last `pie analyze`, or it never ran): run `pie analyze`"
            )
        headline = records(
            con,
            "select * from population_summary where dataset = ? and experiment = ?"
            f" and {chosen} order by method <> 'dense', method, level",
            [cfg.dataset, cfg.experiment, *choice],
        )
        corruption = records(
            con,
            "select e.*, p.quantised from mean_corruption_error as e"
            " inner join populations as p using (experiment, method, level)"
            f" where e.parent = ? and e.experiment = ? and e.n_corruptions > 0 and {chosen}"
            " order by e.origin, e.method <> 'dense', e.method, e.level",
            [cfg.dataset, cfg.experiment, *choice],
        )
        exports = store.rows(
            con,
            "select path from datasets where kind = 'export' and parent = ? order by name",
            [cfg.dataset],
        )
    if not headline:
        raise PieError(
            f"no results for {cfg.dataset} / {cfg.experiment}: run train, infer and analyze first"
        )
    if (method is not None or level is not None) and all(map(population.is_dense, headline)):
        asked = " ".join(x for x in (method, level is not None and f"{level:g}") if x)
        raise PieError(f"no population {asked} of {cfg.experiment} on {cfg.dataset}")
    console.out.print(headline_table(f"{cfg.experiment} on {cfg.dataset} (top-1 in %)", headline))
    if any(r["quantised"] for r in headline):
        console.say(
            "CIEs: the compression identified exemplars of a quantised population (level: bits),"
            " found by the PIE rule"
        )
    if corruption:
        console.out.print(
            corruption_table(f"{cfg.experiment}: corrupted variants of {cfg.dataset}", corruption)
        )
        if not all(r["complete"] for r in corruption):
            console.say(
                f"mCE needs all {N_BENCHMARK} benchmark corruptions at severities 1-5; "
                "a mean over fewer is not an mCE (~ in the first table)"
            )
    console.say(f'database: {root.db}   (try: pie sql "select * from population_summary")')
    console.say(f"shards:   {root.path / 'shards'}")
    console.say(f"models:   {root.checkpoints}")
    for (path,) in exports:
        console.say(f"export:   {path}")
    return headline
