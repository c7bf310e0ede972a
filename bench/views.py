"""The PIE computation at paper shape: the `pie` view (DuckDB) against an independent Polars
implementation of the same rule, on synthetic predictions, same process; checks they agree.

    .venv/bin/python bench/views.py [--keys 10000] [--models 30]

Paper shape: 6 populations (dense + 5 sparsities) x 30 models x 50,000 images x 1000 classes
(--keys 50000: 9M prediction rows), with image-level difficulty so that PIEs exist.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pie import store  # noqa: E402

# the predictions of bench/analytics.py's generator (one source of synthetic paper-shape data)
spec = importlib.util.spec_from_file_location("bench_analytics", REPO / "bench" / "analytics.py")
bench_analytics = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench_analytics)
SPARSITIES = bench_analytics.SPARSITIES


def synthetic(keys: int, models: int, rng: np.random.Generator) -> pa.Table:
    """bench/analytics.py's predictions in one table, with each model's sparsity."""
    return pa.concat_tables(
        table.append_column("sparsity", pa.array([sparsity] * table.num_rows))
        for sparsity, _, table in bench_analytics.synthetic(keys, models, rng)
    )


def polars_pies(df: pl.DataFrame) -> pl.DataFrame:
    """Modal label per (population, key), ties to the largest class id; PIE = modes differ."""
    modes = (
        df.group_by("sparsity", "key", "pred")
        .len()
        .sort(["len", "pred"], descending=True)
        .group_by("sparsity", "key", maintain_order=True)
        .first()
        .select("sparsity", "key", pl.col("pred").alias("mode"))
    )
    dense = modes.filter(pl.col("sparsity") == 0).select("key", pl.col("mode").alias("dense"))
    return (
        modes.filter(pl.col("sparsity") > 0)
        .join(dense, on="key")
        .select("sparsity", "key", (pl.col("mode") != pl.col("dense")).alias("is_pie"))
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--models", type=int, default=30)
    args = parser.parse_args()
    table = synthetic(args.keys, args.models, np.random.default_rng(0))
    con = store.memory()
    for model_id, sparsity in sorted(
        set(zip(table["model_id"].to_pylist(), table["sparsity"].to_pylist(), strict=True))
    ):
        con.execute(
            "insert into models (model_id, experiment, arch, label_space, method,"
            " target_sparsity, achieved_sparsity, seed, train_dataset, path, sha256, config)"
            " values (?, 'bench', 'resnet50', 'imagenet1k', ?, ?, ?, 0, 't', '', '', '{}')",
            [model_id, "dense" if sparsity == 0 else "magnitude", sparsity, sparsity],
        )
    con.register("synthetic", table)
    store.insert_predictions(con, "select * exclude (sparsity) from synthetic")
    print(
        f"{table.num_rows:,} prediction rows ({args.keys:,} images x {args.models} models x "
        f"{len(SPARSITIES)} populations)"
    )

    start = time.perf_counter()
    sql = pl.from_arrow(con.sql("select sparsity, key, is_pie from pie").to_arrow_table())
    t_sql = time.perf_counter() - start
    start = time.perf_counter()
    ref = polars_pies(pl.from_arrow(table))
    t_polars = time.perf_counter() - start

    joined = sql.join(ref, on=["sparsity", "key"], suffix="_ref")
    assert joined.height == ref.height == sql.height, "row counts differ"
    assert (joined["is_pie"] == joined["is_pie_ref"]).all(), "PIE membership differs"
    fractions = sql.group_by("sparsity").agg(pl.col("is_pie").mean()).sort("sparsity")
    print(
        "PIE fraction by sparsity:",
        ", ".join(f"{s:g}: {100 * f:.2f}%" for s, f in fractions.iter_rows()),
    )
    print(f"{'implementation':<40}{'seconds':>10}{'ratio':>8}")
    print(f"{'polars group_by (baseline)':<40}{t_polars:>10.2f}{1.0:>8.2f}")
    print(f"{'duckdb view pie (all columns)':<40}{t_sql:>10.2f}{t_sql / t_polars:>8.2f}")


if __name__ == "__main__":
    main()
