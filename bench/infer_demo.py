"""`pie infer` at the demo's shape, scaled down: K small CNNs over D evaluation sets of the real
10,000 Fashion-MNIST test images (the demo: 25 models x 13 sets). The first D-1 extra sets are
copies packed as generated corruptions (28 px PNG crops, as `pie corrupt` writes them).

Builds the work root once under DIR (kept for the next run), then times `infer.run.main` on a
fresh copy of it, so the same command measures the code on the path before and after a change:

    .venv/bin/python bench/infer_demo.py [DIR] [--models 8 --sets 4]  # /tmp/pie-bench-infer-demo
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from infer.config import InferConfig
from infer.run import main as infer
from ingest import pack, sources
from ingest.config import IngestConfig
from pie import catalog, store
from pie.catalog import DatasetSpec
from pie.paths import WorkRoot, open_root
from pie.shards import Sample, read_shards, write_shards
from train.config import TrainConfig
from train.trainer import make_job, train_one

FMNIST = Path("/usr/share/datasets/fashion-mnist")
TINY = TrainConfig(
    experiment="b", epochs=1, batch_size=64, prune_start_epoch=0.2, prune_end_epoch=0.8,
    prune_frequency=1, device="cpu", eval_dataset="fmnist-train",
)  # fmt: skip


def write_idx(path: Path, array: np.ndarray) -> None:
    import gzip

    header = (2048 + array.ndim).to_bytes(4, "big")
    header += b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def make_root(root: WorkRoot, models: int, sets: int, scratch: Path) -> None:
    rng = np.random.default_rng(0)
    write_idx(scratch / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (512, 28, 28)))
    write_idx(scratch / "train-labels-idx1-ubyte.gz", rng.integers(0, 10, 512))
    found = [sources.fashion_mnist(scratch, "train"), sources.fashion_mnist(FMNIST, "test")]
    pack.main(root, IngestConfig(), found)
    samples = [
        Sample(s["__key__"], s["cls"], s["png"], "png")
        for s in read_shards(root.shards("fmnist-test"))
    ]
    for i in range(1, sets):
        name = f"fmnist-test-fog-{i}"
        written = write_shards(samples, root.shards(name), name)
        spec = DatasetSpec(
            name, "fashion-mnist", "corrupted", "eval", "bench", parent="fmnist-test",
            corruption="fog", severity=i, origin="generated",
        )  # fmt: skip
        with store.connect(root) as con:
            catalog.record_dataset(con, spec, root.shards(name), written)
    for seed in range(models):
        job = make_job("b", "dense", 0.0, seed)
        sidecar = train_one(root, TINY, job, 10, "fashion-mnist")
        with store.connect(root) as con:
            catalog.register_model(con, sidecar)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "directory", type=Path, nargs="?", default=Path("/tmp/pie-bench-infer-demo")
    )
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--sets", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    built = args.directory / "root"
    if not (built / "pie.duckdb").exists():
        with tempfile.TemporaryDirectory() as scratch:
            make_root(open_root(built), args.models, args.sets, Path(scratch))
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "root"
        shutil.copytree(built, copy)
        cfg = InferConfig(device="cpu", workers=args.workers)
        start = time.perf_counter()
        infer(WorkRoot(copy), cfg)
        seconds = time.perf_counter() - start
        with store.connect(WorkRoot(copy), read_only=True) as con:
            (n,) = store.rows(con, "select count(*) from predictions")[0]
    print(f"infer: {args.models} models x {args.sets} sets: {n} predictions in {seconds:.1f}s")


if __name__ == "__main__":
    main()
