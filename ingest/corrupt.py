"""`pie corrupt`: ImageNet-C style variants of a clean dataset, one dataset per
(corruption, severity), named `<parent>-<corruption>-<severity>`, keeping the parent's keys.

Work is one task per (variant, parent shard), run by `cfg.workers` worker processes: a task
streams its parent shard by URL, decodes each image at `image_size` (`pie.images.decode`: the
shorter side resized and the centre cropped, as ImageNet-C was made from 224 px centre crops),
corrupts it with a generator seeded by 64 bits of sha256("<seed>/<corruption>/<severity>/<key>")
(`noise_seed`) and writes the variant's shard of the same number, with the same samples in the
same order. So no decoded copy of the parent is ever made, memory stays flat, and the bytes
depend on neither the order of the work nor the number of workers. Each image is stored as PNG
(lossless: the corruption is the only change) or, `format = "jpeg"`, as JPEG of
`jpeg_quality` (85: how the released ImageNet-C was stored). This process alone writes the
database, one variant at a time as its last shard arrives.

A variant already stored is skipped when it was made with the same settings (seed, image_size,
channels, format, jpeg_quality) and refused with one line naming the difference otherwise.
"""

from __future__ import annotations

import hashlib
import io
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image

from ingest.config import CorruptConfig
from ingest.corruptions import corrupt
from ingest.pack import Workers, is_packed_as, record
from pie import catalog, console, store
from pie.catalog import DatasetSpec
from pie.config import to_dict
from pie.errors import PieError
from pie.images import Preprocess, decode
from pie.paths import WorkRoot
from pie.shards import (
    Sample,
    ShardFile,
    Written,
    image_field,
    partial_dir,
    publish,
    read_url,
    shard_name,
    shard_urls,
    write_tar,
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
    corruption: str,
    severity: int,
    cfg: CorruptConfig,
    class_names: dict[int, str],
    path: Path,
) -> tuple[ShardFile, list[str], list[int]]:
    """Worker: one variant's shard from the parent shard at `url` (no database access)."""
    pre = Preprocess.pixels_only(cfg.image_size, cfg.channels)
    keys: list[str] = []
    labels: list[int] = []

    def samples() -> Iterator[Sample]:
        for raw in read_url(url):
            key, label = raw["__key__"], raw["cls"]
            chw = decode(image_field(raw)[1], pre)
            image = chw[0] if cfg.channels == 1 else np.ascontiguousarray(chw.transpose(1, 2, 0))
            rng = np.random.default_rng(noise_seed(cfg.seed, corruption, severity, key))
            pixels = corrupt(image, corruption, severity, rng)
            meta = {
                "parent": cfg.dataset,
                "corruption": corruption,
                "severity": severity,
                "class_name": class_names.get(label),
            }
            keys.append(key)
            labels.append(label)
            yield Sample(key, label, encode(pixels, cfg), EXTENSIONS[cfg.format], meta)

    return write_tar(samples(), path), keys, labels


def main(root: WorkRoot, cfg: CorruptConfig) -> list[str]:
    """Write every missing (corruption, severity) variant of `cfg.dataset`; returns their names."""
    started = datetime.now()
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
        partials: dict[str, Path] = {}

        def tasks() -> Iterator[tuple]:
            for spec in todo:
                partials[spec.name] = partial_dir(root.shards(spec.name))
                for k, (url, _) in enumerate(urls):
                    path = partials[spec.name] / shard_name(spec.name, k)
                    yield (url, spec.corruption, spec.severity, cfg, space.names(), path)

        done: list[str] = []
        total = len(todo) * sum(n for _, n in urls)
        try:
            with (
                Workers(cfg.workers) as workers,
                console.progress(f"corrupting {cfg.dataset}", total) as advance,
            ):
                files: list[ShardFile] = []
                keys: list[str] = []
                labels: list[int] = []
                shards: list[str] = []
                for file, ks, ls in workers.ordered(corrupt_shard, tasks()):
                    files.append(file)
                    keys += ks
                    labels += ls
                    shards += [file.name] * len(ks)
                    advance(file.nsamples)
                    if len(files) < len(urls):
                        continue
                    spec = todo[len(done)]  # its last shard: publish and record the variant
                    publish(partials.pop(spec.name), root.shards(spec.name), files)
                    record(con, root, spec, space, Written(keys, labels, shards, len(files)), [])
                    done.append(spec.name)
                    files, keys, labels, shards = [], [], [], []
        finally:
            for partial in partials.values():  # variants left unfinished
                shutil.rmtree(partial, ignore_errors=True)
        summary = (
            f"corrupt: wrote {len(done)} variants of {cfg.dataset} "
            f"({len(cfg.corruptions) * len(cfg.severities) - len(done)} already there)"
        )
        if done:
            store.record_run(con, "corrupt", None, to_dict(cfg), summary, started)
    console.say(summary)
    return sorted(done)
