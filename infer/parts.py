"""The Parquet part a rank's predictions of one (model, dataset) pair stream into.

`rows` makes a batch's rows (`SCHEMA`) of one model's outputs (infer.score). `PartWriter`
appends them to `<model>__<dataset>.<rank>-of-<world>.parquet.tmp`, a row group every
`ROW_GROUP` rows, and renames it when the rank's share of the dataset is done (infer.sink reads
it back and loads it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pie import durable

ROW_GROUP = 32_768
SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("label", pa.int32()),
        ("pred", pa.int32()),
        ("top5", pa.list_(pa.int32())),
        ("p_label", pa.float32()),
        ("p_pred", pa.float32()),
    ]
)


def rows(keys: list[str], labels: np.ndarray, out: dict[str, np.ndarray]) -> pa.Table:
    """One model's rows of a batch: its images' keys and labels, and its outputs."""
    top5 = out["top5"].astype(np.int32)
    return pa.table(
        {
            "key": pa.array(keys, pa.string()),
            "label": pa.array(labels.astype(np.int32)),
            "pred": pa.array(out["pred"].astype(np.int32)),
            "top5": pa.FixedSizeListArray.from_arrays(
                pa.array(top5.reshape(-1)), top5.shape[1]
            ).cast(pa.list_(pa.int32())),
            "p_label": pa.array(out["p_label"].astype(np.float32)),
            "p_pred": pa.array(out["p_pred"].astype(np.float32)),
        },
        schema=SCHEMA,
    )


class PartWriter:
    """One pair's rows from one rank, streamed into a `.tmp` Parquet file."""

    def __init__(self, path: Path, meta: dict[str, str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.tmp = path.with_name(path.name + ".tmp")
        self.writer = pq.ParquetWriter(self.tmp, SCHEMA.with_metadata(meta))
        self.pending: list[pa.Table] = []
        self.buffered = 0
        self.n = 0

    def add(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.buffered += table.num_rows
        self.n += table.num_rows
        if self.buffered >= ROW_GROUP:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.writer.write_table(pa.concat_tables(self.pending))
        self.pending, self.buffered = [], 0

    def close(self, extra: dict[str, str]) -> Path:
        """Finish the file (`extra`: metadata known only now) and rename it into place."""
        self.flush()
        self.writer.add_key_value_metadata(extra)
        self.writer.close()
        durable.replace(self.tmp, self.path)
        return self.path

    def abandon(self) -> None:
        self.writer.close()
        self.tmp.unlink(missing_ok=True)
