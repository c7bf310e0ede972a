"""Writing one (model, dataset) pair of predictions: the sink (Parquet part, one bulk insert
in one transaction) against a row loop (`executemany`), in the same process and database.

    .venv/bin/python bench/sink.py [--rows 50000] [--baseline-rows 2000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from infer.sink import Fingerprint, closing_meta, load_pair, part_meta, part_path, read_part_info
from pie import store
from pie.paths import WorkRoot


def frame(model_id: str, n: int, rng: np.random.Generator) -> pa.Table:
    pred = rng.integers(0, 1000, n).astype(np.int32)
    return pa.table(
        {
            "model_id": [model_id] * n,
            "dataset": ["bench"] * n,
            "key": [f"img-{i:07d}" for i in range(n)],
            "label": rng.integers(0, 1000, n).astype(np.int32),
            "pred": pred,
            "top5": pa.array([[int(p), 1, 2, 3, 4] for p in pred], pa.list_(pa.int32())),
            "p_label": rng.random(n, dtype=np.float32),
            "p_pred": rng.random(n, dtype=np.float32),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--baseline-rows", type=int, default=2_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = WorkRoot(Path(tmp))
        con = store.connect(root)
        table = frame("bulk", args.rows, rng).drop_columns(["model_id", "dataset"])
        path = part_path(root, "bulk", "bench")
        path.parent.mkdir(parents=True)
        meta = part_meta("bulk", "bench", "e", Fingerprint("sha", "hash"), 0, 1, "{}")
        meta.update(closing_meta(0.0, []))
        start = time.perf_counter()
        pq.write_table(table.replace_schema_metadata(meta), path)
        load_pair(con, [read_part_info(path)])
        bulk = args.rows / (time.perf_counter() - start)

        rows = frame("loop", args.baseline_rows, rng).to_pylist()
        start = time.perf_counter()
        with store.transaction(con):
            con.executemany(
                "insert into predictions values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [[*r.values(), i, 0] for i, r in enumerate(rows)],
            )
        loop = args.baseline_rows / (time.perf_counter() - start)
        con.close()
    print(f"{'writer':<34}{'rows/s':>14}{'ratio':>8}")
    print(f"{'executemany row loop (baseline)':<34}{loop:>14,.0f}{1.0:>8.2f}")
    print(f"{'parquet part + bulk insert':<34}{bulk:>14,.0f}{bulk / loop:>8.1f}")


if __name__ == "__main__":
    main()
