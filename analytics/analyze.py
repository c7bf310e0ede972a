"""`pie analyze`: materialise `class_tstats` for the experiment and store the analysis settings
the views read. The counting happens in SQL (`class_recall`); scipy does the tests.

Staleness: `class_tstats` never describes predictions that have changed since it was written.
Whenever `pie infer` adds or replaces a (model, dataset) pair, the same transaction deletes the
`class_tstats` rows of that model's experiment on that dataset (infer.sink.load_part), so those
rows are absent, not stale, until `pie analyze` is run again; rows of other experiments and
datasets stay."""

from __future__ import annotations

from datetime import datetime

import polars as pl

from analytics.config import AnalyzeConfig
from analytics.tstats import class_tstats
from pie import console, store
from pie.config import to_dict
from pie.errors import PieError
from pie.paths import WorkRoot


def main(root: WorkRoot, cfg: AnalyzeConfig) -> pl.DataFrame:
    """Returns the `class_tstats` rows written."""
    started = datetime.now()
    with store.connect(root, read_only=True) as con:
        recall = store.frame(
            con, "select * from class_recall where experiment = ?", [cfg.experiment]
        )
    if recall.is_empty():
        raise PieError(f"no predictions for experiment {cfg.experiment!r}: run `pie infer` first")
    tstats = class_tstats(recall, cfg.alpha)

    with store.connect(root) as con:
        with store.transaction(con):
            con.execute(
                "insert or replace into settings values ('mode_tie_break', ?)", [cfg.mode_tie_break]
            )
            con.execute("delete from class_tstats where experiment = ?", [cfg.experiment])
            store.append(con, "class_tstats", tstats)
        n_pop = tstats.select("dataset", "method", "sparsity").n_unique() if len(tstats) else 0
        summary = (
            f"analyze: class_tstats for {n_pop} (dataset, population) pairs, "
            f"{int(tstats['significant'].sum()) if len(tstats) else 0} significant class rows "
            f"at p <= {cfg.alpha:g}"
        )
        store.record_run(con, "analyze", cfg.experiment, to_dict(cfg), summary, started)
    console.say(summary)
    return tstats
