"""`pie analyze`: compute and store the whole analysis, for every experiment and dataset.

1. The analysis settings (tie rule, alpha, significance on p or q) go into `settings`, where the
   views read them (through view `analysis_settings`).
2. When the inputs (view `analysis_inputs`) changed since the last run, or `force`: the heavy
   relations are materialised (pie.materialised), `class_tstats` is rewritten from view
   `class_recall_stats`, `robustness_tstats` from view `robustness_stats` and
   `annotation_tests` from view `annotation_counts` (scipy gives the p-values), and the run
   is recorded in `runs`, with the pie that ran it (pie.provenance).
   Otherwise nothing is recomputed. All of it is one transaction: a reader sees the analysis
   before or after, never half of it.

`pie infer` deletes the `class_tstats` rows of what it re-evaluated in its load transaction and
changes the fingerprint, so readers ask for `pie analyze` until it has run again.
"""

from __future__ import annotations

import importlib
import threading
import time
from datetime import datetime
from typing import TYPE_CHECKING

from analytics.config import AnalyzeConfig
from pie import console, store
from pie import materialised as materialise
from pie.config import to_dict
from pie.errors import PieError
from pie.paths import WorkRoot

if TYPE_CHECKING:
    import duckdb

SETTINGS = {
    "mode_tie_break": "mode_tie_break",
    "alpha": "alpha",
    "significance_on": "significance_on",
}


def write_settings(con, cfg: AnalyzeConfig) -> None:
    for name, field in SETTINGS.items():
        con.execute(
            "insert or replace into settings values (?, ?)", [name, str(getattr(cfg, field))]
        )


def rebuild(con: duckdb.DuckDBPyConnection, cfg: AnalyzeConfig, started: datetime) -> str:
    """Materialise the analysis and write the t-test tables and the run record (inside the
    caller's transaction); returns the one-line summary."""
    # scipy (0.3 s to import) only now, the up-to-date path starts without it; and in a second
    # thread, on the core DuckDB leaves idle in the single-threaded parts of the build
    scipy = threading.Thread(target=importlib.import_module, args=("analytics.tstats",))
    scipy.start()
    counts = materialise.build(con)
    scipy.join()
    from analytics.annotation_tests import annotation_tests
    from analytics.robustness import robustness_tstats
    from analytics.tstats import class_tstats

    for name, write in (
        ("class_tstats", class_tstats),
        ("robustness_tstats", robustness_tstats),
        ("annotation_tests", annotation_tests),
    ):
        start = time.perf_counter()
        con.execute(f"delete from {name}")
        counts[name] = write(con, cfg.alpha, cfg.significance_on)
        materialise.record(con, name, counts[name], time.perf_counter() - start)
    n_pop, n_sig = store.rows(
        con,
        "select count(distinct (dataset, experiment, method, level)),"
        " count(*) filter (where significant) from class_tstats",
    )[0]
    summary = (
        f"analyze: {counts['pie_unranked']:,} PIE rows,"
        f" {counts['model_accuracy']:,} (model, dataset) pairs, class_tstats for {n_pop}"
        f" (dataset, population) pairs with {n_sig}"
        f" significant class rows at {cfg.significance_on} <= {cfg.alpha:g},"
        f" robustness_tstats for {counts['robustness_tstats']} (dataset, population) pairs"
        f" (ties: {cfg.mode_tie_break})"
    )
    store.record_run(con, "analyze", cfg.experiment, to_dict(cfg), summary, started)
    return summary


def main(root: WorkRoot, cfg: AnalyzeConfig, force: bool = False) -> bool:
    """Bring the materialised analysis up to date; returns whether anything was recomputed."""
    started = datetime.now()
    # the work root's one writer while it runs: beside a running `pie infer` or `pie train` it
    # stops at once, naming it, rather than analyse predictions that are still arriving
    with store.writer_lock(root, "pie analyze"), store.connect(root) as con:
        store.configure(con, cfg.memory_limit, cfg.threads)
        if not store.rows(con, "select count(*) from predictions")[0][0]:
            raise PieError("no predictions: run `pie infer` first")
        with store.transaction(con):  # one commit: settings, tables, tests and the run record
            write_settings(con, cfg)
            if materialise.is_fresh(con) and not force:
                summary = None
            else:
                summary = rebuild(con, cfg, started)
    if summary is None:
        console.say("analyze: up to date (no new predictions or settings; --force recomputes)")
        return False
    console.say(f"{summary} in {(datetime.now() - started).total_seconds():.1f} s")
    return True
