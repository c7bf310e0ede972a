"""The prediction sink: Parquet parts written by the ranks, loaded by rank 0, briefly.

A part holds one rank's share of one (model, dataset) pair: `<model>__<dataset>.<rank>-of-
<world>.parquet`, written as `.tmp` and renamed when complete. Its metadata says which pair and
what it was made from (`Fingerprint`: the checkpoint's sha256 and the dataset's content hash),
the model's experiment, the preprocessing, the seconds taken and the images that could not be
decoded. A pair is loadable when the parts of every rank are there with the same fingerprint.

`load_pair` replaces the pair in one transaction: its old predictions are deleted, the new ones
inserted, the `class_tstats` rows of (experiment, dataset) and the `robustness_tstats` rows of
the experiment (its q-values are over all its datasets) deleted (they described the old
predictions: rerun `pie analyze`), its `inference_runs` row replaced and its decode errors
recorded. A pair is therefore complete or absent, never mixed; the parts are deleted after the
commit, and a part whose pair is already stored from the same fingerprint and preprocessing
(`inference_runs.preprocess`, compared as JSON) is simply dropped.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pie import provenance, relations, store
from pie.paths import WorkRoot

ERROR_COLUMNS = ("dataset", "key", "error")


@dataclass(frozen=True)
class Fingerprint:
    """What a pair's predictions were made from."""

    checkpoint_sha256: str | None
    dataset_hash: str | None


@dataclass(frozen=True)
class PartInfo:
    path: Path
    model_id: str
    dataset: str
    experiment: str | None  # None: unknown (its dataset's class_tstats rows, every experiment)
    fingerprint: Fingerprint
    rank: int
    world: int
    preprocess: str | None  # JSON: the Preprocess and the rule
    seconds: float
    errors: list[tuple[str, str]]  # (key, why) of the images of this share left out


def part_path(root: WorkRoot, model_id: str, dataset: str, rank: int = 0, world: int = 1) -> Path:
    return root.parts("predictions") / f"{model_id}__{dataset}.{rank}-of-{world}.parquet"


def part_meta(
    model_id: str,
    dataset: str,
    experiment: str,
    fingerprint: Fingerprint,
    rank: int,
    world: int,
    preprocess: str,
) -> dict[str, str]:
    return {
        "model_id": model_id,
        "dataset": dataset,
        "experiment": experiment,
        "checkpoint_sha256": fingerprint.checkpoint_sha256 or "",
        "dataset_hash": fingerprint.dataset_hash or "",
        "rank": str(rank),
        "world": str(world),
        "preprocess": preprocess,
    }


def closing_meta(seconds: float, errors: list[tuple[str, str]]) -> dict[str, str]:
    return {"seconds": f"{seconds:.3f}", "errors": json.dumps(errors)}


def read_part_info(path: Path) -> PartInfo:
    meta = {k.decode(): v.decode() for k, v in (pq.read_metadata(path).metadata or {}).items()}
    return PartInfo(
        path,
        meta["model_id"],
        meta["dataset"],
        meta.get("experiment") or None,
        Fingerprint(meta.get("checkpoint_sha256") or None, meta.get("dataset_hash") or None),
        int(meta.get("rank", "0")),
        int(meta.get("world", "1")),
        meta.get("preprocess") or None,
        float(meta.get("seconds", "nan")),
        [tuple(e) for e in json.loads(meta.get("errors", "[]"))],
    )


def read_leftovers(paths: list[Path]) -> tuple[list[PartInfo], int]:
    """The PartInfo of each readable part, and how many were not: a part that Parquet cannot
    open or that lacks pie's metadata (zero-length or cut short by a crash, say) is deleted."""
    infos, dropped = [], 0
    for path in paths:
        try:
            infos.append(read_part_info(path))
        except (pa.ArrowException, OSError, KeyError, ValueError):
            path.unlink()
            dropped += 1
    return infos, dropped


def complete_pairs(parts: list[PartInfo]) -> tuple[list[list[PartInfo]], list[PartInfo]]:
    """Leftover parts as (complete pairs: every rank's part, one fingerprint; the rest)."""
    by_pair: dict[tuple, list[PartInfo]] = defaultdict(list)
    for info in parts:
        by_pair[(info.model_id, info.dataset, info.world, info.fingerprint)].append(info)
    complete, rest = [], []
    for infos in by_pair.values():
        if sorted(i.rank for i in infos) == list(range(infos[0].world)):
            complete.append(sorted(infos, key=lambda i: i.rank))
        else:
            rest.extend(infos)
    return complete, rest


def load_pair(
    con: duckdb.DuckDBPyConnection, parts: list[PartInfo], replace_errors: bool = False
) -> int:
    """Load one pair from its parts (one per rank) and delete them; returns the rows loaded (0
    if the pair is already stored from the same fingerprint and preprocessing). replace_errors:
    the dataset was decoded again in this run, so its old `decode_errors` rows go in the same
    transaction."""
    info = parts[0]
    pair = [info.model_id, info.dataset]
    stored = store.rows(
        con,
        "select checkpoint_sha256, dataset_hash, preprocess from inference_runs"
        " where model_id = ? and dataset = ?",
        pair,
    )
    paths = [str(p.path) for p in parts]
    errors = [(info.dataset, key, why) for p in parts for key, why in p.errors]
    n = 0
    made_from = (info.fingerprint, json.loads(info.preprocess or "{}"))
    if not stored or (Fingerprint(*stored[0][:2]), json.loads(stored[0][2] or "{}")) != made_from:
        with store.transaction(con):
            store.delete_predictions(con, "model_id = ? and dataset = ?", pair)
            store.insert_predictions(
                con, "select ? as model_id, ? as dataset, * from read_parquet(?)", [*pair, paths]
            )
            if info.experiment is None:
                con.execute("delete from class_tstats where dataset = ?", [info.dataset])
                con.execute("delete from robustness_tstats")
            else:
                con.execute(
                    "delete from class_tstats where dataset = ? and experiment = ?",
                    [info.dataset, info.experiment],
                )
                # q-values are over an experiment's datasets: every row of it is stale
                con.execute("delete from robustness_tstats where experiment = ?", [info.experiment])
            con.execute("delete from inference_runs where model_id = ? and dataset = ?", pair)
            run = {
                "model_id": info.model_id,
                "dataset": info.dataset,
                "checkpoint_sha256": info.fingerprint.checkpoint_sha256,
                "dataset_hash": info.fingerprint.dataset_hash,
                "preprocess": info.preprocess,
                "seconds": max(p.seconds for p in parts),
                "pie_version": provenance.version(),
                "pie_commit": provenance.commit(),
                "paths": paths,
            }
            n = con.execute(
                "insert into inference_runs by name"
                f" {relations.step('pair_run')} returning n_images",
                run,
            ).fetchall()[0][0]
            if replace_errors:
                con.execute("delete from decode_errors where dataset = ?", [info.dataset])
            if errors:
                frame = pa.table({c: [e[i] for e in errors] for i, c in enumerate(ERROR_COLUMNS)})
                con.register("_decode_errors", frame)
                con.execute(
                    "insert or replace into decode_errors (dataset, key, error)"
                    " select dataset, key, error from _decode_errors"
                )
                con.unregister("_decode_errors")
    for p in parts:
        p.path.unlink()
    return n
