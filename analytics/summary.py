"""`pie summary`: the study's headline numbers for one clean dataset, one row per population
(view `population_summary`), and where everything is."""

from __future__ import annotations

import duckdb
from rich.table import Table

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


def headline_table(title: str, rows: list[dict]) -> Table:
    table = Table(title=title)
    for column in (
        "sparsity",
        "method",
        "models",
        "top-1 mean ± std",
        "impacted classes",
        "PIEs",
        "PIEs decided by a tie",
        "dense top-1 PIE / rest",
    ):
        table.add_column(column, justify="right")
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
        table.add_row(
            f"{r['sparsity']:g}",
            r["method"],
            str(r["n_models"]),
            f"{pct(r['mean_top1'])} ± {pct(r['std_top1'])}",
            impacted,
            pies,
            ties,
            dense_on,
        )
    return table


def corruption_table(title: str, rows: list[dict]) -> Table:
    """One row per (population, origin) of `mean_corruption_error`."""
    with_alexnet = any(r["mce_vs_alexnet"] is not None for r in rows)
    table = Table(title=title)
    columns = [
        "sparsity",
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
            f"{r['sparsity']:g}",
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


def main(root: WorkRoot, cfg: AnalyzeConfig) -> list[dict]:
    """Print the headline table (`population_summary`) and, when the dataset has corrupted
    variants, their corruption errors (`mean_corruption_error`); returns the headline rows
    (one dict per population). Reads the materialised tables only (no polars: starts fast)."""
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
            " order by sparsity, method",
            [cfg.dataset, cfg.experiment],
        )
        corruption = records(
            con,
            "select * from mean_corruption_error where parent = ? and experiment = ?"
            " and n_corruptions > 0 order by origin, sparsity, method",
            [cfg.dataset, cfg.experiment],
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
    console.out.print(headline_table(f"{cfg.experiment} on {cfg.dataset} (top-1 in %)", headline))
    if corruption:
        console.out.print(
            corruption_table(f"{cfg.experiment}: corrupted variants of {cfg.dataset}", corruption)
        )
        if not all(r["complete"] for r in corruption):
            console.say(
                f"mCE needs all {N_BENCHMARK} benchmark corruptions at severities 1-5; "
                "a mean over fewer is not an mCE"
            )
    console.say(f'database: {root.db}   (try: pie sql "select * from population_summary")')
    console.say(f"shards:   {root.path / 'shards'}")
    console.say(f"models:   {root.checkpoints}")
    for (path,) in exports:
        console.say(f"export:   {path}")
    return headline
