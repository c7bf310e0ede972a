"""Packing: a source's inputs -> shards under `shards/<name>/`, then the dataset's rows
(`datasets`, `images`, `ingest_errors`, its label space) in one transaction.

Two passes over the inputs, both in `cfg.workers` worker processes (`pie.parallel.Workers`),
each worker streaming (nothing in memory but the unit or shard at hand):
1. scan: each unit of the source's listing is checked (a full decode of every image) into
   entries (what to read again, key, label, format, size) and rejected inputs, in listing
   order; the first `cfg.limit` accepted entries are kept (all when 0).
2. write: the entries are put in their final order, sorted as listed for an evaluation set
   and in a seeded random order for a training set (`numpy.random.default_rng(cfg.seed)
   .permutation`: streaming readers then see classes mixed), cut into shards by count and bytes
   (`pie.shards.shard_bounds`, decided by the entries alone) and each shard is written whole by
   one worker. The bytes are therefore the same whatever the number of workers.
This process holds the entries (about 200 bytes per image) and alone writes the database, in
short steps (readers are not kept out while images are checked and packed).

Shards are renamed into place only when complete and rows are written after them, so an
interrupted run leaves either nothing or a directory without rows, which a rerun rebuilds.
A dataset that already has rows is skipped when it was packed with the same settings (source,
label space, split, limit, shard sizes, shuffle seed of a training set, source options; stored
as JSON in its `datasets` row) and refused with one line naming the difference otherwise:
reruns do only what is missing, never silently keep something other than what was asked.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from ingest.config import IngestConfig
from ingest.sources import Entry, Reader, Rejected, Source
from pie import catalog, console, store
from pie.catalog import DatasetSpec, LabelSpace, ensure_label_space, is_recorded, record_dataset
from pie.config import differences, to_dict
from pie.errors import PieError
from pie.parallel import Workers
from pie.paths import WorkRoot
from pie.shards import (
    SAMPLE_OVERHEAD,
    Packed,
    ShardFile,
    check_key,
    partial_dir,
    publish,
    shard_bounds,
    shard_name,
    write_tar,
)


def scan_unit(reader: Reader, unit: Any, measure: bool) -> list[Entry | Rejected]:
    """Worker: check one unit of inputs."""
    return reader.scan(unit, measure)


def write_shard(reader: Reader, entries: list[Entry], path: Path) -> ShardFile:
    """Worker: read back and write one whole shard."""
    return write_tar(reader.samples(entries), path)


def is_packed(con: duckdb.DuckDBPyConnection, root: WorkRoot, name: str) -> bool:
    return is_recorded(con, name, str(root.shards(name)))


def is_packed_as(con: duckdb.DuckDBPyConnection, root: WorkRoot, spec: DatasetSpec) -> bool:
    """Whether `spec.name` is packed already, with `spec.settings`; packed with other settings
    is a user error that names the difference."""
    if not is_packed(con, root, spec.name):
        return False
    raw = catalog.dataset(con, spec.name)["settings"]
    differ = differences(json.loads(raw) if raw else {}, spec.settings or {})
    if differ:
        raise PieError(
            f"dataset {spec.name} was packed with {differ[0]}; this run asks {differ[1]}: remove"
            f" {root.shards(spec.name)} to repack it (or keep it and use another dataset name or"
            " work root)"
        )
    return True


def settings(source: Source, cfg: IngestConfig) -> dict[str, Any]:
    """What decides a packed dataset's contents: a rerun must ask the same. The worker count
    is not among them: it changes no byte."""
    spec = source.spec
    return {
        "source": spec.source,
        "label_space": spec.label_space,
        "split": spec.split,
        "limit": cfg.limit,
        "shard_max_count": cfg.shard_max_count,
        "shard_max_size": cfg.shard_max_size,
        "shuffle_seed": cfg.seed if spec.split == "train" else None,
        **source.options,
    }


def scan(source: Source, cfg: IngestConfig, workers: Workers) -> tuple[list[Entry], list[Rejected]]:
    """The source's first `cfg.limit` accepted entries (all when 0) in listing order, and the
    inputs rejected before the last one kept."""
    bound = source.size_bound
    measure = not bound or cfg.shard_max_count * (bound + SAMPLE_OVERHEAD) > cfg.shard_max_size
    entries: list[Entry] = []
    rejected: list[Rejected] = []
    tasks = ((source.reader, unit, measure) for unit in source.units())
    with console.progress(f"checking {source.spec.name}", None) as advance:
        for items in workers.ordered(scan_unit, tasks):
            for item in items:
                if isinstance(item, Rejected):
                    rejected.append(item)
                else:
                    entries.append(item)
                    if len(entries) == cfg.limit:
                        return entries, rejected
            advance(len(items))
    return entries, rejected


def pack(root: WorkRoot, source: Source, cfg: IngestConfig, workers: Workers | None = None) -> int:
    """Write one dataset, then record its rows in one short write step; returns the number of
    images packed. A source without a single image is a user error saying where pie looked;
    its rejected inputs are still recorded in `ingest_errors`. `workers`: a pool to share
    between datasets (else one for this call). The caller holds the work root's writer lock."""
    if workers is None:
        with Workers(cfg.workers) as own:
            return pack(root, source, cfg, own)
    spec = source.spec
    entries, rejected = scan(source, cfg, workers)
    if not entries:
        with store.connect(root) as con:
            record_rejected(con, spec.name, rejected)
        why = f"no image for dataset {spec.name} in {source.looked_in}"
        if rejected:
            why += f"; {len(rejected)} file{'s' * (len(rejected) > 1)} rejected, see ingest_errors"
        raise PieError(why)
    seen: set[str] = set()
    for e in entries:
        check_key(e.key)
        if e.key in seen:
            raise PieError(f"duplicate sample key {e.key!r} in {spec.name}")
        seen.add(e.key)
    del seen
    if spec.split == "train":
        order = np.random.default_rng(cfg.seed).permutation(len(entries))
        entries = [entries[i] for i in order]
    starts = shard_bounds((e.size for e in entries), cfg.shard_max_count, cfg.shard_max_size)
    spans = list(zip(starts, [*starts[1:], len(entries)], strict=True))
    out = root.shards(spec.name)
    partial = partial_dir(out)
    tasks = (
        (source.reader, entries[a:b], partial / shard_name(spec.name, k))
        for k, (a, b) in enumerate(spans)
    )
    files: list[ShardFile] = []
    try:
        with console.progress(f"packing {spec.name}", len(entries)) as advance:
            for file in workers.ordered(write_shard, tasks):
                files.append(file)
                advance(file.nsamples)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    publish(partial, out, files)
    shards = [f.name for f, (a, b) in zip(files, spans, strict=True) for _ in range(b - a)]
    written = Packed([e.key for e in entries], [e.label for e in entries], shards, len(files))
    with store.connect(root) as con:
        record(con, root, spec, source.space, written, rejected)
    return len(entries)


def record(
    con: duckdb.DuckDBPyConnection,
    root: WorkRoot,
    spec: DatasetSpec,
    space: LabelSpace,
    written: Packed,
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
    stored with other settings stops the run before anything is packed. The run is the work
    root's one writer (`store.writer_lock`: beside another it stops at once, naming it) and
    opens the database only for short steps: the check, each dataset's rows, the run record."""
    started = datetime.now()
    sources = [replace(s, spec=replace(s.spec, settings=settings(s, cfg))) for s in sources]
    names = ", ".join(s.spec.name for s in sources)
    with store.writer_lock(root, f"pie ingest ({names})"):
        with store.connect(root) as con:
            skipped = [s.spec.name for s in sources if is_packed_as(con, root, s.spec)]
        packed, images = [], 0
        with Workers(cfg.workers) as workers:
            for source in sources:
                if source.spec.name not in skipped:
                    images += pack(root, source, cfg, workers)
                    packed.append(source.spec.name)
        with store.connect(root) as con:
            errors = store.rows(
                con,
                "select count(*) from ingest_errors where list_contains(?, dataset)",
                [packed],
            )[0][0]
            summary = f"ingest: packed {len(packed)} datasets ({images} images"
            summary += f", {errors} rejected, see table ingest_errors)" if errors else ")"
            if skipped:
                summary += f"; already there: {', '.join(skipped)}"
            if packed:
                store.record_run(con, "ingest", None, to_dict(cfg), summary, started)
    console.say(summary)
    return packed
