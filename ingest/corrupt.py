"""`pie corrupt`: ImageNet-C style variants of a clean dataset, one dataset per
(corruption, severity), named `<parent>-<corruption>-<severity>`, keeping the parent's keys.

The parent is decoded once (the pie.images cache, at `image_size` like ImageNet-C's 224 px
centre crops); each variant corrupts every image with a generator seeded by 64 bits of
sha256("<seed>/<corruption>/<severity>/<key>") (`noise_seed`), so the bytes depend on neither
order nor worker count and no two images share their noise by accident, and stores it as PNG
(lossless: the corruption is the only change). Variants run in worker processes; this process
alone writes the database.

A variant already stored is skipped when it was made with the same settings (seed, image_size,
channels, shard size) and refused with one line naming the difference otherwise.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from datetime import datetime

import numpy as np
from PIL import Image

from ingest.config import CorruptConfig
from ingest.corruptions import corrupt
from ingest.pack import is_packed_as, record
from pie import catalog, console, store
from pie.catalog import DatasetSpec
from pie.config import to_dict
from pie.errors import PieError
from pie.images import Preprocess, load_cached
from pie.parallel import run_tasks
from pie.paths import WorkRoot
from pie.shards import Sample, Written, write_shards


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
            "shard_max_count": cfg.shard_max_count,
        },
    )


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def make_variant(
    root: WorkRoot,
    parent: str,
    corruption: str,
    severity: int,
    cfg: CorruptConfig,
    class_names: dict[int, str],
) -> tuple[str, int, Written]:
    """Worker: write one variant's shards from the parent's pixel cache (no database access)."""
    data = load_cached(root, parent, Preprocess.pixels_only(cfg.image_size, cfg.channels))

    def samples() -> Iterator[Sample]:
        for key, label, chw in zip(
            data.keys.tolist(), data.labels.tolist(), data.pixels, strict=True
        ):
            image = chw[0] if cfg.channels == 1 else np.ascontiguousarray(chw.transpose(1, 2, 0))
            rng = np.random.default_rng(noise_seed(cfg.seed, corruption, severity, key))
            meta = {
                "parent": parent,
                "corruption": corruption,
                "severity": severity,
                "class_name": class_names.get(label),
            }
            yield Sample(key, label, png(corrupt(image, corruption, severity, rng)), "png", meta)

    name = variant_name(parent, corruption, severity)
    return (
        corruption,
        severity,
        write_shards(samples(), root.shards(name), name, cfg.shard_max_count),
    )


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
            (c, s)
            for c in cfg.corruptions
            for s in cfg.severities
            if not is_packed_as(con, root, spec_of(cfg, space.name, c, s, subset))
        ]
        if todo:  # decode the parent once, before the workers map it
            with console.progress(f"decoding {cfg.dataset}", None) as advance:
                pre = Preprocess.pixels_only(cfg.image_size, cfg.channels)
                load_cached(root, cfg.dataset, pre, advance)
        names = {cid: name for cid, _, name in space.classes}
        tasks = [(root, cfg.dataset, c, s, cfg, names) for c, s in todo]
        done: list[str] = []
        with console.progress(f"corrupting {cfg.dataset}", len(todo)) as advance:
            for c, s, written in run_tasks(make_variant, tasks, cfg.workers):
                spec = spec_of(cfg, space.name, c, s, subset)
                record(con, root, spec, space, written, [])
                done.append(spec.name)
                advance(1)
        summary = (
            f"corrupt: wrote {len(done)} variants of {cfg.dataset} "
            f"({len(cfg.corruptions) * len(cfg.severities) - len(done)} already there)"
        )
        if done:
            store.record_run(con, "corrupt", None, to_dict(cfg), summary, started)
    console.say(summary)
    return sorted(done)
