"""Packing: a source's samples -> shards under `shards/<name>/`, then the dataset's rows
(`datasets`, `images`, `ingest_errors`, its label space) in one transaction.

Shards are renamed into place only when complete and rows are written after them, so an
interrupted run leaves either nothing or a directory without rows, which a rerun rebuilds.
A dataset that already has rows is skipped: reruns do only what is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime

import duckdb
import pyarrow as pa

from ingest.config import IngestConfig
from ingest.sources import LabelSpace, Rejected, Source
from pie import console, store
from pie.catalog import DatasetSpec, is_recorded, record_dataset
from pie.config import to_dict
from pie.errors import PieError
from pie.paths import WorkRoot
from pie.shards import Sample, Written, write_shards


def is_packed(con: duckdb.DuckDBPyConnection, root: WorkRoot, name: str) -> bool:
    return is_recorded(con, name, str(root.shards(name)))


def ensure_label_space(con: duckdb.DuckDBPyConnection, space: LabelSpace) -> None:
    """Register a label space and its classes once; a clash with a stored one is an error."""
    stored = store.rows(
        con, "select n_classes from label_spaces where label_space = ?", [space.name]
    )
    if stored:
        if stored[0][0] != len(space.classes):
            raise PieError(
                f"label space {space.name!r} already has {stored[0][0]} classes, "
                f"this source has {len(space.classes)}"
            )
        return
    con.execute(
        "insert into label_spaces values (?, ?, ?)",
        [space.name, len(space.classes), space.description],
    )
    store.append(
        con,
        "classes",
        pa.table(
            {
                "label_space": [space.name] * len(space.classes),
                "class_id": [c[0] for c in space.classes],
                "wnid": [c[1] for c in space.classes],
                "name": [c[2] for c in space.classes],
            }
        ),
    )


def pack(
    con: duckdb.DuckDBPyConnection,
    root: WorkRoot,
    source: Source,
    max_count: int,
    max_size: int,
    advance: Callable[[int], None] = lambda n: None,
) -> int:
    """Write one dataset; returns the number of images packed."""
    rejected: list[Rejected] = []

    def accepted() -> Iterator[Sample]:
        for item in source.items:
            if isinstance(item, Rejected):
                rejected.append(item)
            else:
                advance(1)
                yield item

    name = source.spec.name
    written = write_shards(accepted(), root.shards(name), name, max_count, max_size)
    record(con, root, source.spec, source.space, written, rejected)
    return len(written.keys)


def record(
    con: duckdb.DuckDBPyConnection,
    root: WorkRoot,
    spec: DatasetSpec,
    space: LabelSpace,
    written: Written,
    rejected: list[Rejected],
) -> None:
    """Register the label space, then the dataset's rows (one transaction each)."""
    with store.transaction(con):
        ensure_label_space(con, space)
    errors = [(r.source, r.error) for r in rejected]
    record_dataset(con, spec, root.shards(spec.name), written, errors)


def label_space(con: duckdb.DuckDBPyConnection, name: str) -> LabelSpace:
    classes = store.rows(
        con,
        "select class_id, wnid, name from classes where label_space = ? order by class_id",
        [name],
    )
    if not classes:
        raise PieError(f"unknown label space {name!r}")
    return LabelSpace(name, tuple(classes))


def main(root: WorkRoot, cfg: IngestConfig, sources: list[Source]) -> list[str]:
    """Pack every source whose dataset is not stored yet; returns the names packed."""
    started = datetime.now()
    with store.connect(root) as con:
        packed, skipped, images, errors = [], [], 0, 0
        for source in sources:
            spec = source.spec
            if is_packed(con, root, spec.name):
                skipped.append(spec.name)
                continue
            with console.progress(f"packing {spec.name}", None) as advance:
                images += pack(con, root, source, cfg.shard_max_count, cfg.shard_max_size, advance)
            errors += store.rows(
                con, "select count(*) from ingest_errors where dataset = ?", [spec.name]
            )[0][0]
            packed.append(spec.name)
        summary = f"ingest: packed {len(packed)} datasets ({images} images"
        summary += f", {errors} rejected, see table ingest_errors)" if errors else ")"
        if skipped:
            summary += f"; already there: {', '.join(skipped)}"
        if packed:
            store.record_run(con, "ingest", None, to_dict(cfg), summary, started)
    console.say(summary)
    return packed
