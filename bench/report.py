"""`pie report` at the paper's scale, against `pie summary` on the same database.

    .venv/bin/python bench/report.py [--keys 50000] [--models 30] [--page COPY.html]

Builds bench/analytics.py's database (6 populations x 30 models x 50,000 images x 1,000
classes: 9 M predictions), writes synthetic shards for its images (small random JPEGs, 64 px,
reproducible) and registers them, so the gallery's thumbnail path is timed too; runs
`pie analyze`, then times as separate processes `pie summary` (the baseline: the smallest
reader of the same analysis) and `pie report`, printing seconds, peak RSS and the page's size.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import synthetic  # noqa: E402

from pie import store  # noqa: E402
from pie.paths import open_root  # noqa: E402
from pie.shards import Sample, write_shards  # noqa: E402

spec = importlib.util.spec_from_file_location("bench_analytics", REPO / "bench" / "analytics.py")
bench_analytics = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_analytics)


def add_shards(path: Path) -> int:
    """Shards for the bench dataset's images and their `images` rows; returns the image count."""
    root = open_root(path)
    con = store.connect(root)
    labels = store.rows(
        con,
        "select key, any_value(label) from predictions where dataset = 'bench'"
        " group by key order by key",
    )
    rng = np.random.default_rng(0)
    written = write_shards(
        (Sample(key, label, synthetic.image(rng, 64, grain=6), "jpg") for key, label in labels),
        root.shards("bench"),
        "bench",
    )
    table = pa.table(
        {
            "dataset": ["bench"] * len(written.keys),
            "key": written.keys,
            "label": pa.array(written.labels, pa.int32()),
            "shard": written.shards,
        }
    )
    with store.transaction(con):
        store.append(con, "images", table)
    con.close()
    return len(written.keys)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--models", type=int, default=30)
    parser.add_argument("--page", type=Path, help="keep a copy of the page here")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pie-bench-report-"))
    try:
        path = tmp / "work"
        start = time.perf_counter()
        n = bench_analytics.build(path, args.keys, args.models, "2GB", None)
        print(f"{n:,} predictions built in {time.perf_counter() - start:.0f} s")
        start = time.perf_counter()
        images = add_shards(path)
        print(f"{images:,} images packed as JPEG shards in {time.perf_counter() - start:.0f} s")
        root = ["--root", str(path)]
        timed, pie = bench_analytics.timed, bench_analytics.pie
        seconds, _, _ = timed(pie("analyze", *root))
        print(f"pie analyze: {seconds:.1f} s")
        rows = []
        seconds, rss, _ = timed(pie("summary", *root))
        rows.append(("pie summary (baseline)", seconds, rss))
        seconds, rss, text = timed(pie("report", *root))
        rows.append(("pie report", seconds, rss))
        print(text.strip())
        page = path / "report" / "index.html"
        print(f"{'command':<28}{'seconds':>9}{'peak GB':>9}{'x summary':>11}")
        for name, seconds, rss in rows:
            print(f"{name:<28}{seconds:>9.2f}{rss:>9.2f}{seconds / rows[0][1]:>11.1f}")
        print(f"page: {page.stat().st_size / 1e6:.1f} MB")
        if args.page:
            shutil.copy(page, args.page)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
