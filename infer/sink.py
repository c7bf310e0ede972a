"""The prediction sink: load a staged Parquet part into `predictions` and mark the pair done
in `inference_runs`, in one transaction. A pair is therefore either complete or absent, and a
part left by an interrupted run is loaded by the next one (or dropped if its pair is done).
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow.parquet as pq

from pie import store


def load_part(con: duckdb.DuckDBPyConnection, path: Path) -> int:
    """Returns the rows loaded (0 if the pair was already done)."""
    meta = pq.read_schema(path).metadata or {}
    seconds = float(meta.get(b"seconds", b"nan"))
    pair = store.rows(con, "select distinct model_id, dataset from read_parquet(?)", [str(path)])
    if len(pair) != 1:
        raise ValueError(f"part {path} must hold exactly one (model, dataset) pair")
    model_id, dataset = pair[0]
    done = store.rows(
        con,
        "select count(*) from inference_runs where model_id = ? and dataset = ?",
        [model_id, dataset],
    )[0][0]
    n = 0
    if not done:
        with store.transaction(con):
            con.execute(
                "insert into predictions by name select * from read_parquet(?)", [str(path)]
            )
            n = store.rows(
                con,
                "insert into inference_runs (model_id, dataset, n_images, status, top1, seconds)"
                " select any_value(model_id), any_value(dataset), count(*), 'done',"
                " avg((pred = label)::double), ? from read_parquet(?) returning n_images",
                [seconds, str(path)],
            )[0][0]
    path.unlink()
    return n
