"""`pie infer`: evaluate every model on every evaluation dataset it has not seen yet.

Each dataset is decoded once per preprocessing spec (pie.images cache) in this process;
worker processes evaluate (model, dataset) pairs into Parquet parts, and this process, the
only database writer, loads each part in one transaction with its `inference_runs` row.
Interrupt it at any point and rerun: finished pairs stay, nothing is duplicated.
"""

from __future__ import annotations

import time
from datetime import datetime

from infer.config import InferConfig
from infer.predict import run_pair
from infer.sink import load_part
from pie import catalog, checkpoints, console, store
from pie.config import to_dict
from pie.errors import PieError
from pie.images import Preprocess, load_cached
from pie.parallel import run_tasks
from pie.paths import WorkRoot


def main(root: WorkRoot, cfg: InferConfig) -> int:
    """Returns the number of (model, dataset) pairs evaluated."""
    started = datetime.now()
    t0 = time.time()
    with store.connect(root) as con:
        # parts left by an interrupted run are complete (renamed into place): load them first
        leftovers = sorted(root.parts("predictions").glob("*.parquet"))
        for part in leftovers:
            load_part(con, part)

        models = catalog.models(con)
        if not models:
            raise PieError("no models yet: run `pie train` first")
        done = set(store.rows(con, "select model_id, dataset from inference_runs"))
        datasets = (
            [catalog.dataset(con, name) for name in cfg.datasets]
            if cfg.datasets
            else catalog.eval_datasets(con)
        )
        pending = [
            (model_id, d)
            for d in datasets
            for model_id, space in models
            if space == d["label_space"] and (model_id, d["name"]) not in done
        ]

        # decode each dataset once per preprocessing spec, before the workers map it
        specs: dict[str, Preprocess] = {}
        for model_id, _ in models:
            spec = checkpoints.read_sidecar(root.checkpoint(model_id)).preprocess
            specs[model_id] = Preprocess.from_dict(spec)
        needed = {(d["name"], specs[m]) for m, d in pending}
        with console.progress("decoding datasets", None) as advance:
            for name, pre in sorted(needed, key=lambda x: (x[0], x[1].spec)):
                load_cached(root, name, pre, advance)

        rows = 0
        tasks = [
            (root, m, d["name"], d["class_subset"], cfg.batch_size, cfg.device, cfg.threads)
            for m, d in pending
        ]
        with console.progress(f"evaluating {len(pending)} pairs", len(pending)) as advance:
            for part in run_tasks(run_pair, tasks, cfg.workers):
                rows += load_part(con, part)
                advance(1)

        summary = (
            f"infer: {len(pending)} (model, dataset) pairs evaluated, {rows} predictions written "
            f"in {time.time() - t0:.0f}s; {len(done)} pairs were already done"
        )
        if pending or leftovers:
            store.record_run(con, "infer", None, to_dict(cfg), summary, started)
    console.say(summary)
    return len(pending)
