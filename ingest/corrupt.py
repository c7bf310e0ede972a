"""`pie corrupt`: ImageNet-C style variants of a clean dataset, one dataset per
(corruption, severity), named `<parent>-<corruption>-<severity>`, keeping the parent's keys.

Work is one task per (parent shard, group of variants), run by `cfg.workers` worker processes:
a task streams its parent shard by URL, decodes each image once at `image_size`
(`pie.images.decode`: the shorter side resized and the centre cropped, as ImageNet-C was made
from 224 px centre crops), corrupts it for each variant of its group with a generator seeded by
64 bits of sha256("<seed>/<corruption>/<severity>/<key>") (`noise_seed`) and writes each
variant's shard of the same number, with the same samples in the same order (its rows are the
parent's, shard for shard). So no decoded copy of the parent is ever made, memory stays flat,
and the bytes depend on neither the grouping, the order of the work nor the number of workers.
Each image is stored as PNG (lossless: the corruption is the only change) or, with
`format = "jpeg"`, as JPEG of `jpeg_quality` (85: how the released ImageNet-C was stored). This
process alone writes the database, in a short step for each variant as its last shard arrives
(tasks run in any order, so that slow corruptions do not leave workers idle).

A variant already stored is skipped when it was made with the same settings (seed, image_size,
channels, format, jpeg_quality) and refused with one line naming the difference otherwise.
"""

from __future__ import annotations

import hashlib
import io
import shutil
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
from PIL import Image

from ingest.config import CorruptConfig
from ingest.corruptions import corrupt
from ingest.pack import Workers, is_packed_as, record
from pie import catalog, console, store
from pie.catalog import DatasetSpec, LabelSpace
from pie.config import to_dict
from pie.errors import PieError
from pie.images import Preprocess, decode
from pie.paths import WorkRoot
from pie.shards import (
    Sample,
    ShardFile,
    TarShard,
    Written,
    image_field,
    partial_dir,
    publish,
    read_url,
    shard_name,
    shard_urls,
)

EXTENSIONS = {"png": "png", "jpeg": "jpg"}


def variant_name(parent: str, corruption: str, severity: int) -> str:
    return f"{parent}-{corruption}-{severity}"


def noise_seed(seed: int, corruption: str, severity: int, key: str) -> int:
    """The 64-bit seed of one image's corruption noise."""
    text = f"{seed}/{corruption}/{severity}/{key}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def spec_of(
    cfg: CorruptConfig, space: str, corruption: str, severity: int, subset: tuple[int, ...] | None
) -> DatasetSpec:
    return DatasetSpec(
        variant_name(cfg.dataset, corruption, severity),
        space,
        "corrupted",
        "eval",
        f"pie corrupt (seed {cfg.seed})",
        parent=cfg.dataset,
        corruption=corruption,
        severity=severity,
        class_subset=subset,
        origin="generated",
        settings={
            "seed": cfg.seed,
            "image_size": cfg.image_size,
            "channels": cfg.channels,
            "format": cfg.format,
            "jpeg_quality": cfg.jpeg_quality if cfg.format == "jpeg" else None,
        },
    )


def encode(pixels: np.ndarray, cfg: CorruptConfig) -> bytes:
    buf = io.BytesIO()
    if cfg.format == "jpeg":
        Image.fromarray(pixels).save(buf, format="JPEG", quality=cfg.jpeg_quality)
    else:
        Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def corrupt_shard(
    url: str,
    variants: list[tuple[str, int, Path]],
    cfg: CorruptConfig,
    class_names: dict[int, str],
) -> list[ShardFile]:
    """Worker: the shards of several variants, `(corruption, severity, path)`, from the parent
    shard at `url`, each image decoded once for all of them (no database access)."""
    pre = Preprocess.pixels_only(cfg.image_size, cfg.channels)
    with ExitStack() as stack:
        shards = [stack.enter_context(TarShard(path)) for _, _, path in variants]
        for raw in read_url(url):
            key, label = raw["__key__"], raw["cls"]
            chw = decode(image_field(raw)[1], pre)
            image = chw[0] if cfg.channels == 1 else np.ascontiguousarray(chw.transpose(1, 2, 0))
            for (corruption, severity, _), shard in zip(variants, shards, strict=True):
                rng = np.random.default_rng(noise_seed(cfg.seed, corruption, severity, key))
                pixels = corrupt(image, corruption, severity, rng)
                meta = {
                    "parent": cfg.dataset,
                    "corruption": corruption,
                    "severity": severity,
                    "class_name": class_names.get(label),
                }
                shard.add(Sample(key, label, encode(pixels, cfg), EXTENSIONS[cfg.format], meta))
    return [shard.file for shard in shards]


def parent_rows(
    con: duckdb.DuckDBPyConnection, parent: str, n_shards: int
) -> list[tuple[str, int, int]]:
    """(key, label, shard number) of every parent image: a variant's rows, shard for shard."""
    number = {shard_name(parent, k): k for k in range(n_shards)}
    rows = store.rows(con, "select key, label, shard from images where dataset = ?", [parent])
    unknown = {shard for _, _, shard in rows} - number.keys()
    if unknown:
        raise PieError(f"dataset {parent}: images rows name shards its index lacks: {unknown}")
    return [(key, label, number[shard]) for key, label, shard in rows]


def main(root: WorkRoot, cfg: CorruptConfig) -> list[str]:
    """Write every missing (corruption, severity) variant of `cfg.dataset`; returns their names.
    The run is the work root's one writer (`store.writer_lock`: beside another it stops at
    once, naming it) and opens the database only for short steps: the plan, each variant's
    rows, the run record."""
    started = datetime.now()
    with store.writer_lock(root, f"pie corrupt {cfg.dataset}"):
        with store.connect(root) as con:
            parent = catalog.dataset(con, cfg.dataset)
            if parent["kind"] != "clean":
                raise PieError(f"dataset {cfg.dataset!r} is {parent['kind']}: corrupt a clean one")
            space = catalog.label_space(con, parent["label_space"])
            subset = tuple(parent["class_subset"]) if parent["class_subset"] else None
            todo = [
                spec_of(cfg, space.name, c, s, subset)
                for c in cfg.corruptions
                for s in cfg.severities
                if not is_packed_as(con, root, spec_of(cfg, space.name, c, s, subset))
            ]
            urls = shard_urls(root.shards(cfg.dataset)) if todo else []
            rows = parent_rows(con, cfg.dataset, len(urls)) if todo else []
        done = write_variants(root, cfg, space, todo, urls, rows)
        summary = (
            f"corrupt: wrote {len(done)} variants of {cfg.dataset} "
            f"({len(cfg.corruptions) * len(cfg.severities) - len(done)} already there)"
        )
        if done:
            with store.connect(root) as con:
                store.record_run(con, "corrupt", None, to_dict(cfg), summary, started)
    console.say(summary)
    return sorted(done)


def write_variants(
    root: WorkRoot,
    cfg: CorruptConfig,
    space: LabelSpace,
    todo: list[DatasetSpec],
    urls: list[tuple[str, int]],
    rows: list[tuple[str, int, int]],
) -> list[str]:
    """Write the variants `todo` from the parent's shards `urls` and rows `rows`, each
    published and recorded as its last shard arrives; returns their names in that order."""
    partials = {spec.name: partial_dir(root.shards(spec.name)) for spec in todo}
    # one task per (parent shard, group of variants): each group decodes the shard once;
    # enough groups that every worker has work even for a parent of one shard
    n_groups = min(len(todo), -(-cfg.workers // max(1, len(urls))))
    groups = [todo[g::n_groups] for g in range(n_groups)]  # round robin: mixed costs
    tasks = [
        (
            url,
            [(v.corruption, v.severity, partials[v.name] / shard_name(v.name, k)) for v in group],
            cfg,
            space.names(),
        )
        for k, (url, _) in enumerate(urls)
        for group in groups
    ]
    files: dict[str, dict[int, ShardFile]] = {spec.name: {} for spec in todo}
    done: list[str] = []

    def finish(spec: DatasetSpec, arrived: dict[int, ShardFile]) -> None:
        """A variant's last shard arrived: publish it and record its rows."""
        shards = [arrived[k] for k in range(len(urls))]
        publish(partials.pop(spec.name), root.shards(spec.name), shards)
        names = [f.name for f in shards]
        keys = [key for key, _, _ in rows]
        labels = [label for _, label, _ in rows]
        written = Written(keys, labels, [names[k] for _, _, k in rows], len(shards))
        with store.connect(root) as con:
            record(con, root, spec, space, written, [])
        done.append(spec.name)

    total = len(todo) * sum(n for _, n in urls)
    try:
        with (
            Workers(cfg.workers) as workers,
            console.progress(f"corrupting {cfg.dataset}", total) as advance,
        ):
            for i, made in workers.unordered(corrupt_shard, tasks):
                k, group = divmod(i, n_groups)
                for spec, file in zip(groups[group], made, strict=True):
                    if file.nsamples != urls[k][1]:
                        raise PieError(
                            f"{urls[k][0]} holds {file.nsamples} images, its index says "
                            f"{urls[k][1]}: repack {cfg.dataset}"
                        )
                    files[spec.name][k] = file
                    advance(file.nsamples)
                    if len(files[spec.name]) == len(urls):
                        finish(spec, files.pop(spec.name))
    finally:
        for partial in partials.values():  # variants left unfinished
            shutil.rmtree(partial, ignore_errors=True)
    return done
