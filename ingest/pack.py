"""Packing: a source's samples -> shards under `shards/<name>/`, then the dataset's rows
(`datasets`, `images`, `ingest_errors`, its label space) in one transaction.

Shards are renamed into place only when complete and rows are written after them, so an
interrupted run leaves either nothing or a directory without rows, which a rerun rebuilds.
A dataset that already has rows is skipped when it was packed with the same settings (source,
label space, split, limit, shard sizes; stored as JSON in its `datasets` row) and refused with
one line naming the difference otherwise: reruns do only what is missing, never silently keep
something other than what was asked.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime
from itertools import chain
from typing import Any

import duckdb
import pyarrow as pa

from ingest.config import IngestConfig
from ingest.sources import Rejected, Source
from pie import catalog, console, store
from pie.catalog import DatasetSpec, LabelSpace, ensure_label_space, is_recorded, record_dataset
from pie.config import to_dict
from pie.errors import PieError
from pie.paths import WorkRoot
from pie.shards import Sample, Written, write_shards


def is_packed(con: duckdb.DuckDBPyConnection, root: WorkRoot, name: str) -> bool:
    return is_recorded(con, name, str(root.shards(name)))


def is_packed_as(con: duckdb.DuckDBPyConnection, root: WorkRoot, spec: DatasetSpec) -> bool:
    """Whether `spec.name` is packed already, with `spec.settings`; packed with other settings
    is a user error that names the difference."""
    if not is_packed(con, root, spec.name):
        return False
    raw = catalog.dataset(con, spec.name)["settings"]
    stored: dict[str, Any] = json.loads(raw) if raw else {}
    asked: dict[str, Any] = json.loads(json.dumps(spec.settings or {}))  # as stored: lists, ...
    differ = sorted(k for k in stored.keys() | asked.keys() if stored.get(k) != asked.get(k))
    if not differ:
        return True

    def show(settings: dict[str, Any]) -> str:
        return ", ".join(f"{k}={settings.get(k, '(not recorded)')}" for k in differ)

    raise PieError(
        f"dataset {spec.name} was packed with {show(stored)}; this run asks {show(asked)}: "
        f"remove {root.shards(spec.name)} to repack it (or keep it and use another dataset name "
        "or work root)"
    )


def settings(source: Source, cfg: IngestConfig) -> dict[str, Any]:
    """What decides a packed dataset's contents: a rerun must ask the same."""
    spec = source.spec
    return {
        "source": spec.source,
        "label_space": spec.label_space,
        "split": spec.split,
        "limit": cfg.limit,
        "shard_max_count": cfg.shard_max_count,
        "shard_max_size": cfg.shard_max_size,
    }


def pack(
    con: duckdb.DuckDBPyConnection,
    root: WorkRoot,
    source: Source,
    cfg: IngestConfig,
    advance: Callable[[int], None] = lambda n: None,
) -> int:
    """Write one dataset (its first `cfg.limit` accepted images, all when 0); returns the number
    of images packed. A source without a single image is a user error saying where pie looked;
    its rejected inputs are still recorded in `ingest_errors`."""
    rejected: list[Rejected] = []

    def accepted() -> Iterator[Sample]:
        n = 0
        for item in source.items:
            if isinstance(item, Rejected):
                rejected.append(item)
                continue
            advance(1)
            yield item
            n += 1
            if n == cfg.limit:
                return

    spec = source.spec
    samples = accepted()
    first = next(samples, None)
    if first is None:
        record_rejected(con, spec.name, rejected)
        why = f"no image for dataset {spec.name} in {source.looked_in}"
        if rejected:
            why += f"; {len(rejected)} file{'s' * (len(rejected) > 1)} rejected, see ingest_errors"
        raise PieError(why)
    written = write_shards(
        chain([first], samples),
        root.shards(spec.name),
        spec.name,
        cfg.shard_max_count,
        cfg.shard_max_size,
    )
    record(con, root, spec, source.space, written, rejected)
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


def record_rejected(con: duckdb.DuckDBPyConnection, name: str, rejected: list[Rejected]) -> None:
    """The `ingest_errors` rows of a dataset that could not be packed (replacing older ones)."""
    with store.transaction(con):
        con.execute("delete from ingest_errors where dataset = ?", [name])
        store.append(
            con,
            "ingest_errors",
            pa.table(
                {
                    "dataset": pa.array([name] * len(rejected), pa.string()),
                    "source": pa.array([r.source for r in rejected], pa.string()),
                    "error": pa.array([r.error for r in rejected], pa.string()),
                }
            ),
        )


def main(root: WorkRoot, cfg: IngestConfig, sources: list[Source]) -> list[str]:
    """Pack every source whose dataset is not stored yet; returns the names packed. A dataset
    stored with other settings stops the run before anything is packed."""
    started = datetime.now()
    sources = [replace(s, spec=replace(s.spec, settings=settings(s, cfg))) for s in sources]
    with store.connect(root) as con:
        skipped = [s.spec.name for s in sources if is_packed_as(con, root, s.spec)]
        packed, images, errors = [], 0, 0
        for source in sources:
            spec = source.spec
            if spec.name in skipped:
                continue
            with console.progress(f"packing {spec.name}", None) as advance:
                images += pack(con, root, source, cfg, advance)
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
