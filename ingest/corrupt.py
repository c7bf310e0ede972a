"""`pie corrupt`: ImageNet-C style variants of a clean dataset, one dataset per
(corruption, severity), named `<parent>-<corruption>-<severity>`, keeping the parent's keys.

Variants are made at the parent's geometry (`parent_geometry`; the rule, and when a stored
variant is reused, made again or refused: docs/corruptions.md). Work is one task per (parent
shard, group of variants), run by `cfg.workers` worker processes: a task streams its parent
shard, decodes each image once, corrupts it for each variant of its group with a generator
seeded by sha256("<seed>/<corruption>/<severity>/<key>") (`noise_seed`) and writes each
variant's shard of the same number with the same samples in the same order. So no decoded copy
of the parent is made, memory stays flat, and the bytes depend on neither the grouping, the
order of the work nor the number of workers. This process alone writes the database, each
variant as its last shard arrives.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
from PIL import Image

from ingest.config import CorruptConfig, check_colour_only
from ingest.corruptions import corrupt
from ingest.pack import is_packed, is_packed_as, record
from pie import catalog, console, store
from pie.catalog import DatasetSpec, LabelSpace
from pie.config import to_dict
from pie.errors import PieError
from pie.images import Preprocess, decode
from pie.parallel import Workers
from pie.paths import WorkRoot
from pie.shards import (
    Packed,
    Sample,
    ShardFile,
    TarShard,
    dataset_hash,
    image_field,
    partial_dir,
    publish,
    samples,
    shard_name,
    shards,
)

EXTENSIONS = {"png": "png", "jpeg": "jpg"}
GEOMETRY_SAMPLE = 16  # images of the parent's first shard that decide its geometry
GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "F")  # PIL modes of single-channel images


@dataclass(frozen=True)
class Geometry:
    """The pixels variants are made of: `size` x `size` crops with `channels` channels, the
    shorter side resized to size / crop_fraction first (pie.images.decode); size None: the
    parent does not tell it. `rule` says where it came from, for messages."""

    size: int | None
    channels: int
    crop_fraction: float | None
    rule: str

    def preprocess(self) -> Preprocess:
        """The decoding spec of these pixels (mean 0, std 1)."""
        if self.size is None:
            raise PieError(f"no size to corrupt at ({self.rule}): set corrupt.image_size")
        pixels = Preprocess.pixels_only(self.size, self.channels)
        return (
            pixels
            if self.crop_fraction is None
            else replace(pixels, crop_fraction=self.crop_fraction)
        )


def parent_geometry(label_space: str, images: Iterable[bytes]) -> Geometry:
    """The corruption geometry of a parent in `label_space` whose first images (encoded bytes,
    its first shard's, in order; up to GEOMETRY_SAMPLE are read) are `images`: the rule of the
    module docstring. Without a readable image (a plan from shard indexes alone) an ImageNet-1k
    parent is 224 px RGB; any other is a user error."""
    sizes, grey = [], True
    for data in islice(images, GEOMETRY_SAMPLE):
        try:
            with Image.open(io.BytesIO(data)) as im:
                sizes.append(im.size)
                grey = grey and im.mode in GRAYSCALE_MODES
        except Exception:  # PIL raises many types; an unreadable image tells nothing
            continue
    if not sizes and label_space != "imagenet1k":
        raise PieError("the parent has no images to corrupt")
    channels = 1 if grey and sizes else 3
    kind = "grayscale" if channels == 1 else "colour"
    w = sizes[0][0] if sizes else 0
    if sizes and set(sizes) == {(w, w)}:
        return Geometry(w, channels, 1.0, f"its images are {w}x{w} px, {kind}")
    if label_space == "imagenet1k":
        return Geometry(224, channels, 0.875, f"ImageNet-C's 224 px centre crops, {kind}")
    shown = ", ".join(f"{a}x{b}" for a, b in sorted(set(sizes))[:3])
    return Geometry(None, channels, None, f"its images are {shown} px, {kind}")


def first_images(root: WorkRoot, dataset: str) -> Iterable[bytes]:
    """The encoded images of a dataset's first shard, in order, streamed."""
    first = shards(root.shards(dataset))[:1]
    for raw in samples(first[0].url) if first else ():
        yield image_field(raw)[1]


def corruption_geometry(
    con: duckdb.DuckDBPyConnection, root: WorkRoot, cfg: CorruptConfig
) -> Geometry:
    """The geometry `cfg`'s variants of `cfg.dataset` are made at: the parent's
    (`parent_geometry`), with `corrupt.image_size` / `corrupt.channels` where given; a value
    that differs from the parent's, or a size nobody gives, is refused in one line."""
    parent = catalog.dataset(con, cfg.dataset)
    found = parent_geometry(parent["label_space"], first_images(root, cfg.dataset))
    name = cfg.dataset
    if cfg.channels and cfg.channels != found.channels:
        if cfg.channels < found.channels:
            raise PieError(
                f"corrupt.channels = 1 would drop the colour of {name} ({found.rule}): leave"
                " corrupt.channels out (the parent's: 3)"
            )
        raise PieError(
            f"corrupt.channels = 3 differs from {name} ({found.rule}): leave corrupt.channels"
            " out (the parent's: 1)"
        )
    if cfg.image_size and found.size is not None and cfg.image_size != found.size:
        raise PieError(
            f"corrupt.image_size = {cfg.image_size} differs from {name}'s {found.size} px"
            f" ({found.rule}): leave corrupt.image_size out"
        )
    if found.size is None:
        if not cfg.image_size:
            raise PieError(
                f"{name} does not tell the size to corrupt it at ({found.rule}): set"
                " corrupt.image_size to the size its models take (224: ImageNet-C's crops)"
            )
        found = Geometry(cfg.image_size, found.channels, None, "corrupt.image_size")
    try:
        check_colour_only(cfg.corruptions, found.channels, f"{name}: {found.rule}")
    except ValueError as e:
        raise PieError(str(e)) from None
    return found


def variant_name(parent: str, corruption: str, severity: int) -> str:
    return f"{parent}-{corruption}-{severity}"


def noise_seed(seed: int, corruption: str, severity: int, key: str) -> int:
    """The 64-bit seed of one image's corruption noise."""
    text = f"{seed}/{corruption}/{severity}/{key}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def spec_of(
    cfg: CorruptConfig,
    space: str,
    corruption: str,
    severity: int,
    subset: tuple[int, ...] | None,
    geometry: Geometry,
    parent_hash: str,
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
            "image_size": geometry.size,
            "channels": geometry.channels,
            "crop_fraction": geometry.preprocess().crop_fraction,
            "format": cfg.format,
            "jpeg_quality": cfg.jpeg_quality if cfg.format == "jpeg" else None,
            "parent_hash": parent_hash,
        },
    )


def is_current(con: duckdb.DuckDBPyConnection, root: WorkRoot, spec: DatasetSpec) -> bool:
    """The variant is stored, made from the parent as it is now (the same `parent_hash`) with
    `spec.settings`; stored from the same parent with other settings is refused
    (`pack.is_packed_as`); from another packing of the parent it is due again."""
    if not is_packed(con, root, spec.name):
        return False
    stored: dict[str, Any] = json.loads(catalog.dataset(con, spec.name)["settings"] or "{}")
    if stored.get("parent_hash") != (spec.settings or {}).get("parent_hash"):
        return False
    return is_packed_as(con, root, spec)


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
    pre: Preprocess,
) -> list[ShardFile]:
    """Worker: the shards of several variants, `(corruption, severity, path)`, from the parent
    shard at `url`, each image decoded once for all of them at `pre`'s geometry (no database
    access)."""
    with ExitStack() as stack:
        shards = [stack.enter_context(TarShard(path)) for _, _, path in variants]
        for raw in samples(url):
            key, label = raw["__key__"], raw["cls"]
            chw = decode(image_field(raw)[1], pre)
            image = chw[0] if pre.channels == 1 else np.ascontiguousarray(chw.transpose(1, 2, 0))
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
            geometry = corruption_geometry(con, root, cfg)
            parent_hash = dataset_hash(root.shards(cfg.dataset))
            specs = [
                spec_of(cfg, space.name, c, s, subset, geometry, parent_hash)
                for c in cfg.corruptions
                for s in cfg.severities
            ]
            todo = [spec for spec in specs if not is_current(con, root, spec)]
            redone = sum(is_packed(con, root, spec.name) for spec in todo)
            urls = [(s.url, s.n) for s in shards(root.shards(cfg.dataset))] if todo else []
            rows = parent_rows(con, cfg.dataset, len(urls)) if todo else []
        done = write_variants(root, cfg, space, geometry, todo, urls, rows)
        summary = (
            f"corrupt: wrote {len(done)} variants of {cfg.dataset} at {geometry.size} px,"
            f" {geometry.channels} channel{'s' * (geometry.channels > 1)} ({geometry.rule};"
            f" {len(specs) - len(done)} already there"
        )
        summary += f", {redone} made again: {cfg.dataset} was re-packed)" if redone else ")"
        if done:
            with store.connect(root) as con:
                store.record_run(con, "corrupt", None, to_dict(cfg), summary, started)
    console.say(summary)
    return sorted(done)


def write_variants(
    root: WorkRoot,
    cfg: CorruptConfig,
    space: LabelSpace,
    geometry: Geometry,
    todo: list[DatasetSpec],
    urls: list[tuple[str, int]],
    rows: list[tuple[str, int, int]],
) -> list[str]:
    """Write the variants `todo` at `geometry` from the parent's shards `urls` and rows `rows`,
    each published and recorded as its last shard arrives; returns their names in that order."""
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
            geometry.preprocess(),
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
        written = Packed(keys, labels, [names[k] for _, _, k in rows], len(shards))
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
