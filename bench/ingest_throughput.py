"""Ingest speed and memory, in one run, against baselines run the same way.

    .venv/bin/python bench/ingest_throughput.py [--n 5000] [--dir /tmp/pie-bench-ingest]

Generates (once, then reused) `n` JPEGs of ImageNet sizes (400-500 x 300-375 px, smooth
content, about ImageNet's bytes per image) in an ImageFolder tree of 10 wnids, then times, each
in a fresh process:
- baseline: a bare loop that checks each file as pie does (a full PIL decode) and writes it with
  webdataset's `ShardWriter` (256 MB shards), nothing else;
- `pie ingest imagefolder` (pack.main, split train) with 1 and with 2 workers;
- `tar cf` of the same files (the physical reference).
Prints pie's throughput as a ratio to the baseline, the speed-up from 1 to 2 workers, images
per second per core, and the peak memory (main process + its largest worker) of packing `m`
and `4m` small JPEGs (`--m`, default 5000), which must not grow with the number of images.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

WNIDS = [
    "n01440764", "n01443537", "n01484850", "n01491361", "n01494475",
    "n01496331", "n01498041", "n01514668", "n01514859", "n01518878",
]  # fmt: skip


def make_tree(directory: Path, n: int, small: bool) -> Path:
    done = directory / f".done-{n}"
    if done.exists():
        return directory
    shutil.rmtree(directory, ignore_errors=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        wnid = WNIDS[i % len(WNIDS)]
        (directory / wnid).mkdir(parents=True, exist_ok=True)
        w, h = (64, 48) if small else (int(rng.integers(400, 501)), int(rng.integers(300, 376)))
        coarse = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        image = Image.fromarray(coarse).resize((w, h), Image.Resampling.BICUBIC)
        pixels = np.asarray(image).astype(np.int16) + rng.integers(-30, 31, (h, w, 3))
        buf = io.BytesIO()
        Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        (directory / wnid / f"{wnid}_{i:06d}.JPEG").write_bytes(buf.getvalue())
    done.touch()
    return directory


def child(mode: str, tree: Path, out: Path, workers: int) -> None:
    """One measurement in this fresh process; prints JSON."""
    shutil.rmtree(out, ignore_errors=True)
    if mode == "baseline":
        import webdataset as wds

        out.mkdir(parents=True)
        start = time.perf_counter()
        files = sorted(p for p in tree.rglob("*.JPEG"))
        pattern = str(out / "base-%06d.tar")
        with wds.ShardWriter(pattern, maxsize=256 * 1024 * 1024, verbose=0, mtime=0) as w:
            for i, path in enumerate(files):
                data = path.read_bytes()
                with Image.open(io.BytesIO(data)) as im:
                    im.load()
                w.write({"__key__": f"k{i}", "jpg": data, "cls": b"0"})
    else:
        from ingest import pack, sources
        from ingest.config import IngestConfig
        from pie.paths import open_root

        root = open_root(out)
        source = sources.image_folder(tree, "bench", "imagenet1k", "train")
        start = time.perf_counter()
        pack.main(root, IngestConfig(workers=workers), [source])
    seconds = time.perf_counter() - start
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"seconds": seconds, "rss_kb": own + kids}))


def measure(mode: str, tree: Path, out: Path, workers: int = 1) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--tree", str(tree), "--out", str(out)]
    cmd += ["--workers", str(workers)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--m", type=int, default=5000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/pie-bench-ingest"))
    parser.add_argument("--child")
    parser.add_argument("--tree", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.tree, args.out, args.workers)
        return
    tree = make_tree(args.dir / f"imagenet-{args.n}", args.n, small=False)
    size = sum(p.stat().st_size for p in tree.rglob("*.JPEG"))
    print(f"{args.n} JPEGs, {size / args.n / 1024:.0f} KiB each on average, in {tree}")
    out = args.dir / "out"
    base = measure("baseline", tree, out)
    one = measure("pie", tree, out, 1)
    two = measure("pie", tree, out, 2)
    start = time.perf_counter()
    subprocess.run(["tar", "cf", str(args.dir / "ref.tar"), "-C", str(tree), "."], check=True)
    tar = time.perf_counter() - start
    (args.dir / "ref.tar").unlink()
    rate = args.n / one["seconds"]
    print(f"baseline (PIL decode + ShardWriter): {args.n / base['seconds']:8.0f} images/s")
    print(f"pie, 1 worker:                       {rate:8.0f} images/s (per core, full decode)")
    print(f"pie, 2 workers:                      {args.n / two['seconds']:8.0f} images/s")
    print(f"tar cf of the same files:            {args.n / tar:8.0f} images/s")
    print(f"ratio pie (1 worker) / baseline:     {base['seconds'] / one['seconds']:8.2f}")
    print(f"speed-up 1 -> 2 workers:             {one['seconds'] / two['seconds']:8.2f}")
    mem = []
    for m in (args.m, 4 * args.m):
        small = make_tree(args.dir / f"small-{m}", m, small=True)
        mem.append(measure("pie", small, out, 2)["rss_kb"])
    shutil.rmtree(out, ignore_errors=True)
    print(
        f"peak memory, {args.m} vs {4 * args.m} small JPEGs (2 workers): "
        f"{mem[0] / 1024:.0f} MiB vs {mem[1] / 1024:.0f} MiB, ratio {mem[1] / mem[0]:.2f}"
    )


if __name__ == "__main__":
    main()
