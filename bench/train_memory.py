"""Peak resident memory of one short streaming training job on N and on 4N generated JPEGs:
the ratio must stay at most 1.10 (nothing the size of the set is held in memory).

    .venv/bin/python bench/train_memory.py [--n 2000] [--size 64]

Each job runs in a fresh process (`pie train`, data = "stream", 2 loader workers, one epoch
of ResNet-18 at `--size` px, batch 64); a sampler thread sums the resident memory of that
process and all its descendants (PSS, so that pages forked workers share with the trainer
count once) every 20 ms and keeps the peak.
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def jpegs(n: int, seed: int):
    from pie.shards import Sample

    rng = np.random.default_rng(seed)
    for i in range(n):
        pixels = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", quality=85)
        yield Sample(f"img{i:07d}", i % 10, buf.getvalue(), "jpg")


def pack(root: Path, name: str, n: int, split: str) -> None:
    from pie import catalog, store
    from pie.paths import open_root
    from pie.shards import write_shards

    work = open_root(root)
    written = write_shards(jpegs(n, hash(name) % 1000), work.shards(name), name, max_count=1000)
    with store.connect(work) as con:
        classes = tuple((i, None, f"class{i}") for i in range(10))
        catalog.ensure_label_space(con, catalog.LabelSpace("bench10", classes))
        spec = catalog.DatasetSpec(name, "bench10", "clean", split, "generated JPEGs")
        catalog.record_dataset(con, spec, work.shards(name), written)


def tree_rss(pid: int) -> int:
    """Proportional resident bytes (PSS: a page shared by k processes counts 1/k in each) of
    `pid` and its descendants (Linux /proc): forked loader workers share most of their pages
    with the trainer, and plain RSS would count those once per process."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
            total += int(rollup.split("\nPss:")[1].split()[0]) * 1024
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, IndexError, ProcessLookupError):
            continue
    return total


def peak_of(command: list[str], env: dict[str, str]) -> tuple[int, float]:
    run = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    peak, started = 0, time.perf_counter()

    def sample() -> None:
        nonlocal peak
        while run.poll() is None:
            peak = max(peak, tree_rss(run.pid))
            time.sleep(0.02)

    watcher = threading.Thread(target=sample)
    watcher.start()
    run.wait()
    watcher.join()
    if run.returncode:
        raise SystemExit(f"training failed ({run.returncode}): {' '.join(command)}")
    return peak, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (args.n, 4 * args.n):
            root = Path(tmp) / f"n{n}"
            pack(root, "bench-train", n, "train")
            pack(root, "bench-eval", 200, "eval")
            config = root / "config.toml"
            config.write_text(
                f'name = "mem"\n[train]\ndataset = "bench-train"\neval_dataset = "bench-eval"\n'
                f'arch = "resnet18"\nimage_size = {args.size}\nchannels = 3\n'
                "mean = [0.5, 0.5, 0.5]\nstd = [0.25, 0.25, 0.25]\n"
                'data = "stream"\nloader_workers = 2\nsparsities = [0.5]\nseeds = 1\n'
                "epochs = 1.0\nbatch_size = 64\nprune_start_epoch = 0.0\n"
                'prune_end_epoch = 0.5\nprune_frequency = 10\ndevice = "cpu"\nworkers = 1\n'
            )
            env = {**os.environ, "PYTHONPATH": str(REPO)}
            command = [sys.executable, "-m", "pie", "train", "-c", str(config), "--root", str(root)]
            results[n] = peak_of(command, env)
    small, big = results[args.n][0], results[4 * args.n][0]
    print(f"{'images':>8}{'peak PSS MiB':>14}{'seconds':>9}")
    for n, (peak, seconds) in results.items():
        print(f"{n:>8}{peak / 2**20:>14.0f}{seconds:>9.1f}")
    print(f"peak PSS ratio 4N / N: {big / small:.3f} (limit 1.10)")


if __name__ == "__main__":
    main()
