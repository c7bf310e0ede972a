"""`pie summary`: the study's headline numbers for one clean dataset, one row per population
(view `population_summary`), and where everything is."""

from __future__ import annotations

import polars as pl
from rich.table import Table

from analytics.config import AnalyzeConfig
from pie import catalog, console, store
from pie.errors import PieError
from pie.paths import WorkRoot


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def main(root: WorkRoot, cfg: AnalyzeConfig) -> pl.DataFrame:
    with store.connect(root, read_only=True) as con:
        catalog.dataset(con, cfg.dataset)
        df = store.frame(
            con,
            "select * from population_summary where dataset = ? and experiment = ?"
            " order by sparsity, method",
            [cfg.dataset, cfg.experiment],
        )
        n_variants = store.rows(
            con,
            "select count(*) from datasets where parent = ? and kind = 'corrupted'",
            [cfg.dataset],
        )[0][0]
        exports = store.rows(
            con,
            "select path from datasets where kind = 'export' and parent = ? order by name",
            [cfg.dataset],
        )
    if df.is_empty():
        raise PieError(
            f"no results for {cfg.dataset} / {cfg.experiment}: run train, infer and analyze first"
        )

    table = Table(title=f"{cfg.experiment} on {cfg.dataset} (top-1 in %)")
    for column in (
        "sparsity",
        "method",
        "models",
        "top-1 mean ± std",
        "impacted classes",
        "PIEs",
        "dense top-1 PIE / non-PIE",
        f"CE vs dense ({n_variants} sets)",
    ):
        table.add_column(column, justify="right")
    for r in df.iter_rows(named=True):
        impacted = (
            "-"
            if r["n_significant_classes"] is None
            else f"{r['n_significant_classes']} / {r['n_classes_tested']}"
        )
        pies = "-" if r["n_pie"] is None else f"{r['n_pie']} ({pct(r['pie_fraction'])}%)"
        dense_on = (
            "-"
            if r["dense_top1_on_pie"] is None and r["dense_top1_on_nonpie"] is None
            else f"{pct(r['dense_top1_on_pie'])} / {pct(r['dense_top1_on_nonpie'])}"
        )
        ce = "-" if r["mean_ce_vs_dense"] is None else f"{r['mean_ce_vs_dense']:.3f}"
        table.add_row(
            f"{r['sparsity']:g}",
            r["method"],
            str(r["n_models"]),
            f"{pct(r['mean_top1'])} ± {pct(r['std_top1'])}",
            impacted,
            pies,
            dense_on,
            ce,
        )
    console.out.print(table)
    console.say(f'database: {root.db}   (try: pie sql "select * from population_summary")')
    console.say(f"shards:   {root.path / 'shards'}")
    console.say(f"models:   {root.checkpoints}")
    for (path,) in exports:
        console.say(f"export:   {path}")
    return df
