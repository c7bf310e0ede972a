"""`pie corrupt`: ImageNet-C style variants of a clean dataset, one dataset per
(corruption, severity), named `<parent>-<corruption>-<severity>`, keeping the parent's keys.

The parent is decoded once (the pie.images cache, at `image_size` like ImageNet-C's 224 px
centre crops); each variant corrupts every image with a generator seeded by
(seed, corruption, severity, key), so the bytes depend on neither order nor worker count,
and stores it as PNG (lossless: the corruption is the only change). Variants run in worker
processes; this process alone writes the database.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from datetime import datetime

import numpy as np
from PIL import Image

from ingest.config import CorruptConfig
from ingest.corruptions import CORRUPTIONS, corrupt
from ingest.pack import is_packed, record
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
    index = CORRUPTIONS.index(corruption)

    def samples() -> Iterator[Sample]:
        for key, label, chw in zip(
            data.keys.tolist(), data.labels.tolist(), data.pixels, strict=True
        ):
            image = chw[0] if cfg.channels == 1 else np.ascontiguousarray(chw.transpose(1, 2, 0))
            rng = np.random.default_rng([cfg.seed, index, severity, zlib.crc32(key.encode())])
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
        todo = [
            (c, s)
            for c in cfg.corruptions
            for s in cfg.severities
            if not is_packed(con, root, variant_name(cfg.dataset, c, s))
        ]
        if todo:  # decode the parent once, before the workers map it
            with console.progress(f"decoding {cfg.dataset}", None) as advance:
                pre = Preprocess.pixels_only(cfg.image_size, cfg.channels)
                load_cached(root, cfg.dataset, pre, advance)
        names = {cid: name for cid, _, name in space.classes}
        tasks = [(root, cfg.dataset, c, s, cfg, names) for c, s in todo]
        subset = tuple(parent["class_subset"]) if parent["class_subset"] else None
        done: list[str] = []
        with console.progress(f"corrupting {cfg.dataset}", len(todo)) as advance:
            for c, s, written in run_tasks(make_variant, tasks, cfg.workers):
                name = variant_name(cfg.dataset, c, s)
                spec = DatasetSpec(
                    name,
                    space.name,
                    "corrupted",
                    "eval",
                    f"pie corrupt (seed {cfg.seed})",
                    parent=cfg.dataset,
                    corruption=c,
                    severity=s,
                    class_subset=subset,
                    origin="generated",
                )
                record(con, root, spec, space, written, [])
                done.append(name)
                advance(1)
        summary = (
            f"corrupt: wrote {len(done)} variants of {cfg.dataset} "
            f"({len(cfg.corruptions) * len(cfg.severities) - len(done)} already there)"
        )
        if done:
            store.record_run(con, "corrupt", None, to_dict(cfg), summary, started)
    console.say(summary)
    return sorted(done)
