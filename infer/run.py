"""`pie infer`: evaluate every model on every evaluation dataset whose predictions are missing
or stale.

A pair's predictions are pinned to a fingerprint (`inference_runs.checkpoint_sha256`, the
models row's sha256, and `inference_runs.dataset_hash`, pie.shards.dataset_hash of its shards).
A pair never evaluated, or evaluated from another checkpoint or another packing of the dataset,
is pending; evaluating it again replaces its rows in one transaction (infer.sink), which also
deletes the `class_tstats` rows of the model's experiment on that dataset: they described the
old predictions, and `pie analyze` must be run again to get them back.

Each dataset is decoded once per preprocessing spec and rule (pie.images cache; the rule,
resize-then-crop or center crop only, comes from the dataset's row) in this process; an image
that cannot be decoded is skipped and recorded in `decode_errors`. Worker processes evaluate
pairs into Parquet parts, and this process, the only database writer, loads them. At the start
of a run, `.tmp` parts (a worker killed mid-write) are removed, complete leftover parts are
loaded, or dropped if their pair's checkpoint or dataset has changed since. Interrupt it at any
point and rerun: finished pairs stay, nothing is duplicated.
"""

from __future__ import annotations

import time
from datetime import datetime

import duckdb
import pyarrow as pa

from infer.config import InferConfig
from infer.predict import run_pair
from infer.sink import Fingerprint, load_part, read_part_info
from pie import catalog, checkpoints, console, store
from pie.config import to_dict
from pie.errors import PieError
from pie.images import Preprocess, center_crop_only, load_cached
from pie.parallel import run_tasks
from pie.paths import WorkRoot
from pie.shards import INDEX, dataset_hash


def main(root: WorkRoot, cfg: InferConfig) -> int:
    """Returns the number of (model, dataset) pairs evaluated."""
    started = datetime.now()
    t0 = time.time()
    with store.connect(root) as con:
        staging = root.parts("predictions")
        for tmp in staging.glob("*.tmp"):  # a worker killed mid-write: never complete
            tmp.unlink()
        models = {m.model_id: m for m in catalog.model_rows(con)}

        def current(model_id: str, dataset: str) -> Fingerprint | None:
            """The pair's fingerprint now; None if the model or the dataset is gone."""
            shards = root.shards(dataset)
            if model_id not in models or not (shards / INDEX).exists():
                return None
            return Fingerprint(models[model_id].sha256, dataset_hash(shards))

        # complete parts left by an interrupted run: load them if still current
        rows, dropped = 0, 0
        leftovers = sorted(staging.glob("*.parquet"))
        for part in leftovers:
            info = read_part_info(part)
            if info.fingerprint == current(info.model_id, info.dataset):
                rows += load_part(con, part)
            else:
                part.unlink()
                dropped += 1

        if not models:
            raise PieError("no models yet: run `pie train` first")
        datasets = (
            [catalog.dataset(con, name) for name in cfg.datasets]
            if cfg.datasets
            else catalog.eval_datasets(con)
        )
        stored = {
            (m, d): Fingerprint(sha, h)
            for m, d, sha, h in store.rows(
                con, "select model_id, dataset, checkpoint_sha256, dataset_hash from inference_runs"
            )
        }
        pending, done, stale = [], 0, 0
        for d in datasets:
            content = dataset_hash(root.shards(d["name"]))
            for m in models.values():
                if m.label_space != d["label_space"]:
                    continue
                now = Fingerprint(m.sha256, content)
                if stored.get((m.model_id, d["name"])) == now:
                    done += 1
                    continue
                stale += int((m.model_id, d["name"]) in stored)
                pending.append((m, d, now))

        # decode each dataset once per preprocessing spec and rule, before the workers map it
        specs = {
            m.model_id: Preprocess.from_dict(
                checkpoints.read_sidecar(root.checkpoint(m.model_id)).preprocess
            )
            for m in {m.model_id: m for m, _, _ in pending}.values()
        }
        needed = {(d["name"], specs[m.model_id], center_crop_only(d)) for m, d, _ in pending}
        errors: dict[str, dict[str, str]] = {}
        with console.progress("decoding datasets", None) as advance:
            for name, pre, crop_only in sorted(needed, key=lambda x: (x[0], x[1].spec, x[2])):
                data = load_cached(
                    root, name, pre, advance, center_crop_only=crop_only, strict=False
                )
                if not len(data):
                    key, error = data.errors[0]
                    raise PieError(
                        f"dataset {name}: no image can be decoded (first: {key}: {error})"
                    )
                for key, error in data.errors:
                    errors.setdefault(name, {}).setdefault(key, error)
        record_decode_errors(con, {name for name, _, _ in needed}, errors)

        tasks = [
            (
                root,
                m.model_id,
                m.experiment,
                m.sha256,
                d["name"],
                center_crop_only(d),
                d["class_subset"],
                cfg.batch_size,
                cfg.device,
                cfg.threads,
            )
            for m, d, _ in pending
        ]
        expected = {(m.model_id, d["name"]): now for m, d, now in pending}
        with console.progress(f"evaluating {len(pending)} pairs", len(pending)) as advance:
            for part in run_tasks(run_pair, tasks, cfg.workers):
                info = read_part_info(part)
                if info.fingerprint == expected[(info.model_id, info.dataset)]:
                    rows += load_part(con, part)
                else:  # the dataset was re-packed while this run decoded it: next run
                    part.unlink()
                    dropped += 1
                advance(1)

        summary = (
            f"infer: {len(pending)} (model, dataset) pairs evaluated ({stale} again: checkpoint"
            f" or dataset changed), {rows} predictions written in {time.time() - t0:.0f}s;"
            f" {done} pairs were already done"
        )
        skipped = sum(len(keys) for keys in errors.values())
        if skipped:
            summary += f"; {skipped} images skipped (cannot be decoded: see table decode_errors)"
        if dropped:
            summary += f"; {dropped} stale staged parts dropped"
        if pending or leftovers:
            store.record_run(con, "infer", None, to_dict(cfg), summary, started)
    console.say(summary)
    return len(pending)


def record_decode_errors(
    con: duckdb.DuckDBPyConnection, datasets: set[str], errors: dict[str, dict[str, str]]
) -> None:
    """Replace the `decode_errors` rows of the datasets decoded in this run."""
    found = [(name, key, error) for name in sorted(errors) for key, error in errors[name].items()]
    with store.transaction(con):
        for name in sorted(datasets):
            con.execute("delete from decode_errors where dataset = ?", [name])
        store.append(
            con,
            "decode_errors",
            pa.table(
                {
                    "dataset": pa.array([f[0] for f in found], pa.string()),
                    "key": pa.array([f[1] for f in found], pa.string()),
                    "error": pa.array([f[2] for f in found], pa.string()),
                }
            ),
        )
