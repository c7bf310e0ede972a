"""`pie corrupt`: ImageNet-C style variants of a clean dataset, one dataset per
(corruption, severity), named `<parent>-<corruption>-<severity>`, keeping the parent's keys.

Each variant streams the parent's shards, corrupts every image with a generator seeded by
(seed, corruption, severity, key) (so the bytes depend on neither order nor worker count)
and stores the result as PNG (lossless: the corruption is the only change). Variants run
in parallel worker processes; this process alone writes the database.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image

from ingest.config import CorruptConfig
from ingest.corruptions import CORRUPTIONS, corrupt
from ingest.pack import is_packed, label_space, record
from ingest.sources import DatasetSpec
from pie import console, store
from pie.config import to_dict
from pie.errors import PieError
from pie.parallel import run_tasks
from pie.paths import WorkRoot
from pie.shards import Sample, Written, image_field, read_shards, write_shards


def variant_name(parent: str, corruption: str, severity: int) -> str:
    return f"{parent}-{corruption}-{severity}"


def corrupt_sample(raw: dict, corruption: str, severity: int, seed: int) -> Sample:
    key = raw["__key__"]
    with Image.open(io.BytesIO(image_field(raw)[1])) as im:
        pixels = np.asarray(im.convert("L" if im.mode in ("1", "L", "I;16", "I") else "RGB"))
    rng = np.random.default_rng(
        [seed, CORRUPTIONS.index(corruption), severity, zlib.crc32(key.encode())]
    )
    buf = io.BytesIO()
    Image.fromarray(corrupt(pixels, corruption, severity, rng)).save(buf, format="PNG")
    meta = {**raw["json"], "corruption": corruption, "severity": severity}
    return Sample(key, raw["cls"], buf.getvalue(), "png", meta)


def make_variant(
    parent_dir: str, out_dir: str, corruption: str, severity: int, seed: int, max_count: int
) -> tuple[str, int, Written]:
    """Worker: write one variant's shards (no database access)."""

    def samples() -> Iterator[Sample]:
        for raw in read_shards(Path(parent_dir)):
            yield corrupt_sample(raw, corruption, severity, seed)

    out = Path(out_dir)
    return corruption, severity, write_shards(samples(), out, out.name, max_count)


def main(root: WorkRoot, cfg: CorruptConfig) -> list[str]:
    """Write every missing (corruption, severity) variant of `cfg.dataset`; returns their names."""
    started = datetime.now()
    with store.connect(root) as con:
        parent = store.dataset(con, cfg.dataset)
        if parent["kind"] != "clean":
            raise PieError(f"dataset {cfg.dataset!r} is {parent['kind']}: corrupt a clean dataset")
        space = label_space(con, parent["label_space"])
        todo = [
            (c, s)
            for c in cfg.corruptions
            for s in cfg.severities
            if not is_packed(con, root, variant_name(cfg.dataset, c, s))
        ]
        tasks = [
            (
                str(root.shards(cfg.dataset)),
                str(root.shards(variant_name(cfg.dataset, c, s))),
                c,
                s,
                cfg.seed,
                cfg.shard_max_count,
            )
            for c, s in todo
        ]
        subset = tuple(parent["class_subset"]) if parent["class_subset"] else None
        done: list[str] = []
        with console.progress(f"corrupting {cfg.dataset}", len(todo)) as advance:
            for c, s, written in run_tasks(make_variant, tasks, cfg.workers):
                name = variant_name(cfg.dataset, c, s)
                spec = DatasetSpec(
                    name,
                    space,
                    "corrupted",
                    "eval",
                    f"pie corrupt (seed {cfg.seed})",
                    parent=cfg.dataset,
                    corruption=c,
                    severity=s,
                    class_subset=subset,
                )
                record(con, root, spec, written, [])
                done.append(name)
                advance(1)
        summary = (
            f"corrupt: wrote {len(done)} variants of {cfg.dataset} "
            f"({len(cfg.corruptions) * len(cfg.severities) - len(done)} already there)"
        )
        store.record_run(con, "corrupt", None, to_dict(cfg), summary, started)
    console.say(summary)
    return sorted(done)
