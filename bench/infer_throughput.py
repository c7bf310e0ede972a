"""`pie infer` end to end against the bare forward pass, and DuckDB loading against Parquet.

1. K models (ResNet-18, random weights, 3 x SIZE px) over one generated dataset of N JPEGs
   (pie's default shard size): images per second of `infer.run.main` with pie's `[infer]`
   defaults (loader workers, batch size, device: `InferConfig()`; shards read and decoded by
   the workers, every model on every batch, Parquet parts, DuckDB loads, all of it) as a ratio
   to the bare forward pass of the same models over the same batches on the same device,
   decoded beforehand and held there.
2. Rows per second of the sink's load of a (model, dataset) pair into DuckDB (read the Parquet
   part, insert in one transaction) as a ratio to writing the same Arrow table to Parquet.

    PYTHONPATH=$PWD .venv/bin/python bench/infer_throughput.py [--models 4 --images 4096 --size 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import synthetic
import torch

from infer import loader
from infer.config import InferConfig
from infer.parts import PartWriter, rows
from infer.run import main as infer
from infer.sink import Fingerprint, closing_meta, load_pair, part_meta, part_path, read_part_info
from pie import checkpoints, store
from pie.images import Preprocess, normalize
from pie.models import resolve_device
from pie.paths import WorkRoot, open_root
from pie.shards import Reader, Sample


def make_root(root: WorkRoot, models: int, images: int, size: int) -> Preprocess:
    rng = np.random.default_rng(0)
    side = round(size / 0.875) + 8  # resized to size / 0.875, then center-cropped
    synthetic.pack(
        root,
        "bench",
        (Sample(f"img{i:06d}", i % 10, synthetic.image(rng, side), "jpg") for i in range(images)),
    )
    pre = Preprocess(size, 3, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    synthetic.models(root, "resnet18", range(models), pre)
    return pre


@torch.inference_mode()
def bare(root: WorkRoot, models: int, pre: Preprocess, cfg: InferConfig) -> float:
    """Images per second (each through every model) of the forward passes alone."""
    device = resolve_device(cfg.device)
    reader = Reader()
    chunks = loader.chunks(root.shards("bench"), cfg.batch_size, 0, pre)
    batches = [loader.read_chunk(c, reader).pixels.to(device) for c in chunks]
    nets = [checkpoints.load(root.checkpoint(f"bench-{s}"))[0].to(device) for s in range(models)]
    nets[0](normalize(batches[0], pre))  # warm-up
    start = time.perf_counter()
    for pixels in batches:
        for net in nets:
            net(normalize(pixels, pre)).float().softmax(1).cpu()
    return sum(len(b) for b in batches) / (time.perf_counter() - start)


def sink(directory: Path, n: int) -> tuple[float, float]:
    """Rows per second: Parquet write of an Arrow table, and the sink's DuckDB load of it."""
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 1000, n)
    out = {
        "pred": pred,
        "top5": np.stack([pred, pred + 1, pred + 2, pred + 3, pred + 4], axis=1),
        "p_label": rng.random(n),
        "p_pred": rng.random(n),
    }
    table = rows([f"img-{i:08d}" for i in range(n)], rng.integers(0, 1000, n), out)
    start = time.perf_counter()
    pq.write_table(table, directory / "plain.parquet")
    parquet = n / (time.perf_counter() - start)
    root = open_root(directory / "root")
    meta = part_meta("m", "bench", "e", Fingerprint("sha", "hash"), 0, 1, "{}")
    writer = PartWriter(part_path(root, "m", "bench"), meta)
    writer.add(table)
    info = read_part_info(writer.close(closing_meta(0.0, [])))
    with store.connect(root) as con:
        start = time.perf_counter()
        load_pair(con, [info])
        duck = n / (time.perf_counter() - start)
    return parquet, duck


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=4)
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = open_root(Path(tmp) / "work")
        pre = make_root(root, args.models, args.images, args.size)
        cfg = InferConfig()  # pie's defaults: loader workers, batch size, device
        base = bare(root, args.models, pre, cfg)
        start = time.perf_counter()
        infer(root, cfg)
        end_to_end = args.images / (time.perf_counter() - start)
        parquet, duck = sink(Path(tmp), args.rows)
    print(
        f"{args.models} x resnet18 at {args.size} px, {args.images} JPEGs, batch"
        f" {cfg.batch_size}, {cfg.workers} loader workers, {resolve_device(cfg.device)},"
        f" {torch.get_num_threads()} threads"
    )
    print(f"{'':<44}{'per second':>14}{'ratio':>8}")
    print(f"{'bare forward, batches in memory (images)':<44}{base:>14,.1f}{1.0:>8.2f}")
    print(f"{'pie infer end to end (images)':<44}{end_to_end:>14,.1f}{end_to_end / base:>8.2f}")
    print(f"{'Arrow table -> Parquet (rows)':<44}{parquet:>14,.0f}{1.0:>8.2f}")
    print(f"{'Parquet part -> DuckDB, sink load (rows)':<44}{duck:>14,.0f}{duck / parquet:>8.2f}")


if __name__ == "__main__":
    main()
