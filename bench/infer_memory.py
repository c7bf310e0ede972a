"""Peak memory of `pie infer`: flat in the number of models under one `infer.model_memory`
budget (goal: 64 models at most 1.10 x the 8-model run), and flat in the number of images.

Small CNNs at 64 px (8 MiB of weights each) over one set of generated PNGs. Each run is a fresh
`pie infer` process (the same work root, its predictions cleared first) for 8, 16, 32 and 64
models, with the budget (`--budget`, MiB) and again without one (1 TiB, every model kept: the
growth the budget prevents); then 8 models over 4x the images. The figure is peak CUDA memory
(torch.cuda.max_memory_allocated) where a GPU is used, else peak RSS (ru_maxrss) of the
process that holds the models: the largest loader worker (they score on CPU), with the main
process beside it. Ratios are against the 8-model run.

    PYTHONPATH=$PWD .venv/bin/python bench/infer_memory.py [--images 500 --budget 64]
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import synthetic
from PIL import Image

from pie import store
from pie.images import Preprocess
from pie.paths import WorkRoot, open_root
from pie.shards import Sample

COUNTS = (8, 16, 32, 64)
SIZE = 64  # px: small_cnn's dense layer holds 2 M weights (8 MiB)
PRE = Preprocess(SIZE, 1, (0.286,), (0.353,))
CHILD = """
import json, resource, sys, torch
from infer.config import InferConfig
from infer.run import main
from pie.paths import open_root
cuda = torch.cuda.is_available()
cfg = InferConfig(workers=2, batch_size=250, model_memory=float(sys.argv[2]))
main(open_root(sys.argv[1]), cfg)
print(json.dumps([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
                  torch.cuda.max_memory_allocated() if cuda else None]))
"""


def grays(n: int) -> list[Sample]:
    """n grayscale PNGs of random pixels, SIZE px."""
    rng, samples = np.random.default_rng(0), []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8)).save(buf, format="PNG")
        samples.append(Sample(f"img{i:07d}", i % 10, buf.getvalue(), "png"))
    return samples


def peak(root: WorkRoot, budget_gib: float) -> tuple[int, int, int | None]:
    """(main RSS, largest worker RSS, peak CUDA bytes or None) of a fresh `pie infer`."""
    with store.connect(root) as con:
        con.execute("delete from predictions")
        con.execute("delete from inference_runs")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(root.path), str(budget_gib)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return tuple(json.loads(out.strip().splitlines()[-1]))


def held(figures: tuple[int, int, int | None]) -> int:
    """The memory of the process that holds the models."""
    _, worker, cuda = figures
    return cuda if cuda is not None else worker


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--budget", type=float, default=64, help="infer.model_memory, MiB")
    args = parser.parse_args()
    budget = args.budget / 1024
    with tempfile.TemporaryDirectory() as tmp:
        root = open_root(Path(tmp) / "work")
        synthetic.pack(root, "bench", grays(args.images))
        rows, made = [], 0
        for n in COUNTS:
            synthetic.models(root, "small_cnn", range(made, n), PRE)
            made = n
            rows.append((n, peak(root, budget), peak(root, 1024.0)))
        big = open_root(Path(tmp) / "big")
        synthetic.pack(big, "bench", grays(4 * args.images))
        synthetic.models(big, "small_cnn", range(COUNTS[0]), PRE)
        more_images = peak(big, budget)
    kind = "peak CUDA memory" if rows[0][1][2] is not None else "peak RSS, largest loader worker"
    print(f"{kind} (MiB) of `pie infer`, {args.images} images of {SIZE} px, small CNNs of 8 MiB")
    print(f"{'models':>8}{'budget ' + f'{args.budget:g} MiB':>18}{'ratio':>8}{'main':>8}"
          f"{'no budget':>12}{'ratio':>8}")  # fmt: skip
    base, base_free = held(rows[0][1]), held(rows[0][2])
    for n, bounded, free in rows:
        print(
            f"{n:>8}{held(bounded) / 2**20:>18.0f}{held(bounded) / base:>8.2f}"
            f"{bounded[0] / 2**20:>8.0f}{held(free) / 2**20:>12.0f}{held(free) / base_free:>8.2f}"
        )
    print(f"ratio 64 / 8 models under the budget: {held(rows[-1][1]) / base:.3f} (goal <= 1.10)")
    print(
        f"8 models, {4 * args.images} images / {args.images}:"
        f" {held(more_images) / base:.3f} (goal <= 1.10)"
    )


if __name__ == "__main__":
    main()
