"""The prediction sink: Parquet parts staged by workers, loaded by the one writing process.

A part holds one (model, dataset) pair's predictions; its schema metadata says what they were
made from (`Fingerprint`: the checkpoint's sha256 and the dataset's content hash), the model's
experiment and the seconds taken. Workers write it as `.tmp` and rename it, so a `.parquet` part
is complete. `load_part` replaces the pair in one transaction: its old predictions are deleted,
the new ones inserted, the `class_tstats` rows of (experiment, dataset) deleted (they described
the old predictions: rerun `pie analyze`), and its `inference_runs` row replaced. A pair is
therefore complete or absent, never mixed, and an interrupted load is redone by the next run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pie import store


@dataclass(frozen=True)
class Fingerprint:
    """What a pair's predictions were made from."""

    checkpoint_sha256: str | None
    dataset_hash: str | None


@dataclass(frozen=True)
class PartInfo:
    model_id: str
    dataset: str
    experiment: str | None  # None: a part that does not say (its dataset's rows, every experiment)
    fingerprint: Fingerprint
    seconds: float


def write_part(
    path: Path, table: pa.Table, experiment: str, fingerprint: Fingerprint, seconds: float
) -> Path:
    """Stage one pair's predictions: `.tmp` first, renamed when complete."""
    meta = {
        "experiment": experiment,
        "checkpoint_sha256": fingerprint.checkpoint_sha256 or "",
        "dataset_hash": fingerprint.dataset_hash or "",
        "seconds": f"{seconds:.3f}",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(table.replace_schema_metadata(meta), tmp)
    tmp.rename(path)
    return path


def read_part_info(path: Path) -> PartInfo:
    meta = {k.decode(): v.decode() for k, v in (pq.read_schema(path).metadata or {}).items()}
    pairs = pq.read_table(path, columns=["model_id", "dataset"]).group_by(["model_id", "dataset"])
    pair = pairs.aggregate([]).to_pylist()
    if len(pair) != 1:
        raise ValueError(f"part {path} must hold exactly one (model, dataset) pair")
    return PartInfo(
        pair[0]["model_id"],
        pair[0]["dataset"],
        meta.get("experiment") or None,
        Fingerprint(meta.get("checkpoint_sha256") or None, meta.get("dataset_hash") or None),
        float(meta.get("seconds", "nan")),
    )


def load_part(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    """Load a part and delete it; returns the rows loaded (0 if its pair is already stored from
    the same fingerprint). The caller drops parts made from a stale checkpoint or dataset."""
    info = read_part_info(path)
    pair = [info.model_id, info.dataset]
    stored = store.rows(
        con,
        "select checkpoint_sha256, dataset_hash from inference_runs"
        " where model_id = ? and dataset = ?",
        pair,
    )
    n = 0
    if not stored or Fingerprint(*stored[0]) != info.fingerprint:
        with store.transaction(con):
            con.execute("delete from predictions where model_id = ? and dataset = ?", pair)
            con.execute(
                "insert into predictions by name select * from read_parquet(?)", [str(path)]
            )
            if info.experiment is None:
                con.execute("delete from class_tstats where dataset = ?", [info.dataset])
            else:
                con.execute(
                    "delete from class_tstats where dataset = ? and experiment = ?",
                    [info.dataset, info.experiment],
                )
            con.execute("delete from inference_runs where model_id = ? and dataset = ?", pair)
            n = store.rows(
                con,
                "insert into inference_runs (model_id, dataset, n_images, status,"
                " checkpoint_sha256, dataset_hash, top1, seconds)"
                " select any_value(model_id), any_value(dataset), count(*), 'done', ?, ?,"
                " avg((pred = label)::double), ? from read_parquet(?) returning n_images",
                [
                    info.fingerprint.checkpoint_sha256,
                    info.fingerprint.dataset_hash,
                    info.seconds,
                    str(path),
                ],
            )[0][0]
    path.unlink()
    return n
