"""What the benches generate: smooth random images, a packed evaluation set of them, and
untrained models registered in a work root (`import synthetic` from a script in bench/)."""

from __future__ import annotations

import io
from collections.abc import Iterable

import numpy as np
import torch
from PIL import Image

from pie import catalog, checkpoints, store
from pie.catalog import FASHION_MNIST, DatasetSpec
from pie.images import Preprocess
from pie.models import create
from pie.paths import WorkRoot
from pie.shards import Sample, write_shards


def image(rng: np.random.Generator, side: int, grain: int = 8, fmt: str = "JPEG") -> bytes:
    """A side x side colour image of smooth random blobs (`grain` x `grain` random pixels
    resized: noise would not compress as photos do), as JPEG (quality 90) or PNG bytes."""
    small = Image.fromarray(rng.integers(0, 256, (grain, grain, 3), dtype=np.uint8))
    buf = io.BytesIO()
    small.resize((side, side), Image.Resampling.BICUBIC).save(buf, format=fmt, quality=90)
    return buf.getvalue()


def pack(root: WorkRoot, name: str, samples: Iterable[Sample]) -> None:
    """Pack `samples` as the evaluation set `name` (Fashion-MNIST's ten classes)."""
    written = write_shards(samples, root.shards(name), name)
    with store.connect(root) as con:
        catalog.ensure_label_space(con, FASHION_MNIST)
        spec = DatasetSpec(name, FASHION_MNIST.name, "clean", "eval", "bench")
        catalog.record_dataset(con, spec, root.shards(name), written)


def models(root: WorkRoot, arch: str, seeds: range, pre: Preprocess) -> None:
    """Untrained `arch` models `bench-<seed>` for ten classes, saved and registered."""
    with store.connect(root) as con:
        for seed in seeds:
            torch.manual_seed(seed)
            sidecar = checkpoints.Sidecar(
                f"bench-{seed}", "bench", arch, 10, FASHION_MNIST.name, "dense", 0.0, 0.0,
                {}, seed, seed, "none", "bench", 0.0, 0.0, 0, {}, pre.to_dict(), {},
                torch.__version__, "cpu", 0.0,
            )  # fmt: skip
            model = create(arch, 10, pre.channels, pre.size).eval()
            catalog.register_model(con, checkpoints.save(root, model, sidecar))
