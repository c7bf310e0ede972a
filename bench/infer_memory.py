"""Peak resident memory of `pie infer` for N and 4N images: it must not grow with the dataset
(goal: ratio at most 1.10). Each size runs in a fresh process (2 small CNNs over one set of
28 px PNGs, 2 loader workers); the figure is that process's own peak RSS (ru_maxrss), and the
largest loader worker's beside it.

    PYTHONPATH=$PWD .venv/bin/python bench/infer_memory.py [--images 5000]
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
import torch
from PIL import Image

from pie import catalog, checkpoints, store
from pie.catalog import FASHION_MNIST, DatasetSpec
from pie.images import Preprocess
from pie.models import create
from pie.paths import WorkRoot, open_root
from pie.shards import Sample, write_shards

CHILD = """
import json, resource, sys
from infer.config import InferConfig
from infer.run import main
from pie.paths import open_root
main(open_root(sys.argv[1]), InferConfig(device="cpu", workers=2, batch_size=500))
print(json.dumps([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))
"""


def make_root(root: WorkRoot, images: int) -> None:
    rng = np.random.default_rng(0)
    samples = []
    for i in range(images):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(buf, format="PNG")
        samples.append(Sample(f"img{i:07d}", i % 10, buf.getvalue(), "png"))
    written = write_shards(samples, root.shards("bench"), "bench")
    pre = Preprocess(28, 1, (0.286,), (0.353,))
    with store.connect(root) as con:
        catalog.ensure_label_space(con, FASHION_MNIST)
        spec = DatasetSpec("bench", FASHION_MNIST.name, "clean", "eval", "bench")
        catalog.record_dataset(con, spec, root.shards("bench"), written)
        for seed in range(2):
            torch.manual_seed(seed)
            sidecar = checkpoints.Sidecar(
                f"bench-{seed}", "bench", "small_cnn", 10, FASHION_MNIST.name, "dense", 0.0, 0.0,
                {}, seed, seed, "none", "bench", 0.0, 0.0, 0, {}, pre.to_dict(), {},
                torch.__version__, "cpu", 0.0,
            )  # fmt: skip
            model = create("small_cnn", 10, 1, 28).eval()
            catalog.register_model(con, checkpoints.save(root, model, sidecar))


def peak(directory: Path, images: int) -> tuple[int, int]:
    root = open_root(directory / f"n{images}")
    make_root(root, images)
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(root.path)], capture_output=True, text=True, check=True
    ).stdout
    return tuple(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small = peak(Path(tmp), args.images)
        large = peak(Path(tmp), 4 * args.images)
    print(f"{'images':>10}{'pie infer peak RSS (MiB)':>28}{'largest loader worker':>24}")
    for n, (own, worker) in ((args.images, small), (4 * args.images, large)):
        print(f"{n:>10}{own / 1024:>28.0f}{worker / 1024:>24.0f}")
    print(f"ratio 4N / N: {large[0] / small[0]:.3f} (goal <= 1.10)")


if __name__ == "__main__":
    main()
