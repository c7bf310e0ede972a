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

from ingest.config import IngestConfig
from ingest.sources import Rejected, Source
from pie import console, store
from pie.catalog import DatasetSpec, LabelSpace, ensure_label_space, is_recorded, record_dataset
from pie.config import to_dict
from pie.paths import WorkRoot
from pie.shards import Sample, Written, write_shards


def is_packed(con: duckdb.DuckDBPyConnection, root: WorkRoot, name: str) -> bool:
    return is_recorded(con, name, str(root.shards(name)))


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
    ensure_label_space(con, space)
    errors = [(r.source, r.error) for r in rejected]
    record_dataset(con, spec, root.shards(spec.name), written, errors)


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
