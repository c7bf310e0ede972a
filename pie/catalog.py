"""Registering a packed dataset: its `datasets` row, `images` rows and rejected inputs, in one
transaction, replacing stale rows of the same name. Shared by ingest (sources, corruptions)
and analytics (PIE exports)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from pie import store
from pie.shards import Written


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset is: its `datasets` row, less the counts and the path."""

    name: str
    label_space: str
    kind: str  # clean | corrupted | natural_adversarial | rendition | export
    split: str  # train | eval
    source: str  # where the images came from
    parent: str | None = None
    corruption: str | None = None
    severity: int | None = None
    class_subset: tuple[int, ...] | None = None


def record_dataset(
    con: duckdb.DuckDBPyConnection,
    spec: DatasetSpec,
    path: Path,
    written: Written,
    rejected: Sequence[tuple[str, str]] = (),
) -> None:
    """Rows for shards packed under `path`; `rejected`: (source, error) of inputs left out."""
    n = len(written.keys)
    with store.transaction(con):
        for table, column in (
            ("images", "dataset"),
            ("ingest_errors", "dataset"),
            ("datasets", "name"),
        ):
            con.execute(f"delete from {table} where {column} = ?", [spec.name])
        con.execute(
            "insert into datasets (name, label_space, kind, split, parent, corruption, severity,"
            " n_images, class_subset, path, source) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                spec.name,
                spec.label_space,
                spec.kind,
                spec.split,
                spec.parent,
                spec.corruption,
                spec.severity,
                n,
                list(spec.class_subset) if spec.class_subset else None,
                str(path),
                spec.source,
            ],
        )
        store.append(
            con,
            "images",
            pa.table(
                {
                    "dataset": pa.array([spec.name] * n, pa.string()),
                    "key": pa.array(written.keys, pa.string()),
                    "label": pa.array(written.labels, pa.int32()),
                    "shard": pa.array(written.shards, pa.string()),
                }
            ),
        )
        store.append(
            con,
            "ingest_errors",
            pa.table(
                {
                    "dataset": pa.array([spec.name] * len(rejected), pa.string()),
                    "source": pa.array([s for s, _ in rejected], pa.string()),
                    "error": pa.array([e for _, e in rejected], pa.string()),
                }
            ),
        )


def is_recorded(con: duckdb.DuckDBPyConnection, name: str, path: str) -> bool:
    """The dataset has rows and its shard index is on disk."""
    found = store.rows(con, "select count(*) from datasets where name = ?", [name])[0][0]
    return bool(found) and (Path(path) / "index.json").exists()
