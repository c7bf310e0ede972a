"""`pie analyze` against idiomatic pandas at the paper's scale, each as its own process.

    .venv/bin/python bench/analytics.py [--keys 50000] [--models 30] [--scale 1] [--memory 2GB]
                                        [--repeat 4]

Generates, reproducibly (seed 0), predictions of the paper's shape: 6 populations (dense and
magnitude at 0.1 ... 0.9) x 30 models x 50,000 images x 1,000 classes (9 M rows), where images
differ in difficulty and in how much pruning hurts them, so that PIEs exist. Then, timing each
as a separate process, start-up included:

1. `pie analyze --force` (counts votes, materialises modes, PIEs with their L1 distances, PIE
   accuracy and classes, per-class recall statistics, robustness, and writes class_tstats and
   robustness_tstats),
2. pandas: load the predictions from Parquet, modal labels (ties to the largest class id), PIE
   sets, per-class Welch t-tests of normalised recall (scipy.stats.ttest_ind),

checks that PIE membership, t and p agree, and times a PIE count per sparsity through `pie sql`
and `pie summary` as commands. Each command runs --repeat times, interleaved with the others in
an order rotated each round (this machine is shared and noisy): the table prints the median, the
range and the peak memory (max RSS) of each, and the ratios of the medians. --scale 10
multiplies the images (90 M rows, as with corrupted variants) and skips pandas.

pandas comes from the `dev` extras (`make env`); without it the pandas side is skipped.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pie import materialised as materialise  # noqa: E402
from pie import store  # noqa: E402
from pie.paths import open_root  # noqa: E402

SPARSITIES = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9)
PENALTY = (0.0, 0.02, 0.1, 0.25, 0.5, 1.0)  # how much each sparsity hurts sensitive images
CLASSES = 1000

PANDAS = r"""
import sys
import numpy as np
import pandas as pd
from scipy import stats

source, out = sys.argv[1], sys.argv[2]
df = pd.read_parquet(source, columns=["model_id", "sparsity", "key", "label", "pred"])

# modal label per (population, image), ties to the largest class id; PIE = the modes differ
votes = df.groupby(["sparsity", "key", "pred"]).size().rename("n").reset_index()
votes = votes.sort_values(["n", "pred"], ascending=False)
modes = votes.drop_duplicates(["sparsity", "key"])
dense = modes[modes["sparsity"] == 0][["key", "pred"]].rename(columns={"pred": "dense_mode"})
pies = modes[modes["sparsity"] > 0].merge(dense, on="key")
pies["is_pie"] = pies["pred"] != pies["dense_mode"]
pies[["sparsity", "key", "is_pie"]].to_parquet(out + ".pie.parquet")

# per-class recall minus the population's mean top-1; Welch t-test dense vs each sparsity
df["correct"] = df["pred"] == df["label"]
top1 = df.groupby(["sparsity", "model_id"])["correct"].mean()
population_top1 = top1.groupby(level="sparsity").mean()
recall = df.groupby(["sparsity", "model_id", "label"])["correct"].mean().reset_index()
recall["norm"] = recall["correct"] - recall["sparsity"].map(population_top1)
wide = {s: g.pivot(index="model_id", columns="label", values="norm")
        for s, g in recall.groupby("sparsity")}
rows = []
for s, variant in wide.items():
    if s == 0:
        continue
    t, p = stats.ttest_ind(wide[0.0], variant, axis=0, equal_var=False)
    rows.append(pd.DataFrame({"sparsity": s, "class_id": variant.columns, "t": t, "p": p}))
pd.concat(rows).to_parquet(out + ".tstats.parquet")
print(f"{pies['is_pie'].sum()} PIE rows")
"""


def synthetic(keys: int, models: int, rng: np.random.Generator):
    """Yields (sparsity, model index, Arrow table of one model's predictions). Images differ in
    difficulty (some mostly misclassified, towards one of three confusable classes) and in how
    much pruning hurts them: top-1 falls from about 0.76 (dense) to 0.62 (0.9)."""
    labels = rng.integers(0, CLASSES, keys).astype(np.int32)
    confusable = (labels[:, None] + rng.integers(1, CLASSES, (keys, 3))) % CLASSES
    easy, sensitivity = rng.normal(1.8, 2.0, keys), rng.exponential(1.0, keys)
    key = pa.array([f"k{i:07d}" for i in range(keys)])
    label = pa.array(labels)
    for sparsity, penalty in zip(SPARSITIES, PENALTY, strict=True):
        p_right = 1 / (1 + np.exp(-(easy - penalty * sensitivity)))
        for m in range(models):
            right = rng.random(keys) < p_right
            which = np.where(rng.random(keys) < 0.7, 0, rng.integers(1, 3, keys))
            pred = np.where(right, labels, confusable[np.arange(keys), which]).astype(np.int32)
            p_label = np.where(right, 0.8, 0.1).astype(np.float32)
            yield (
                sparsity,
                m,
                pa.table(
                    {
                        "model_id": pa.array([f"s{sparsity}-m{m:02d}"] * keys),
                        "dataset": pa.array(["bench"] * keys),
                        "key": key,
                        "label": label,
                        "pred": pa.array(pred),
                        "top5": pa.array(pred[:, None].tolist(), pa.list_(pa.int32())),
                        "p_label": pa.array(p_label),
                        "p_pred": pa.array(np.float32(0.8) * np.ones(keys, np.float32)),
                    }
                ),
            )


def build(path: Path, keys: int, models: int, memory: str, parquet: Path | None) -> int:
    """A work root with the bench dataset, 6 x `models` models and their predictions."""
    root = open_root(path)
    (path / "config.toml").write_text(
        f'name = "bench"\n[analyze]\ndataset = "bench"\nmemory_limit = "{memory}"\n'
    )
    con = store.connect(root)
    store.configure(con, memory)
    con.execute(
        "insert into datasets (name, label_space, kind, split, n_images, path, source)"
        " values ('bench', 'imagenet1k', 'clean', 'eval', ?, 'shards/bench', 'bench')",
        [keys],
    )
    writer = None
    n = 0
    for sparsity, m, table in synthetic(keys, models, np.random.default_rng(0)):
        model_id = f"s{sparsity}-m{m:02d}"
        con.execute(
            "insert into models (model_id, experiment, arch, label_space, method,"
            " target_sparsity, achieved_sparsity, seed, train_dataset, path, sha256, config)"
            " values (?, 'bench', 'resnet50', 'imagenet1k', ?, ?, ?, ?, 't', '', ?, '{}')",
            [model_id, "dense" if sparsity == 0 else "magnitude", sparsity, sparsity, m, model_id],
        )
        con.register("_model", table)
        store.insert_predictions(con, "select * from _model")
        con.unregister("_model")
        con.execute(
            "insert into inference_runs (model_id, dataset, n_images, status, checkpoint_sha256,"
            " dataset_hash) values (?, 'bench', ?, 'done', ?, 'h')",
            [model_id, keys, model_id],
        )
        if parquet is not None:
            part = table.select(["model_id", "key", "label", "pred"]).append_column(
                "sparsity", pa.array([sparsity] * keys)
            )
            writer = writer or pq.ParquetWriter(parquet, part.schema)
            writer.write_table(part)
        n += table.num_rows
    if writer:
        writer.close()
    con.execute("checkpoint")
    con.close()
    return n


def timed(command: list[str], env: dict | None = None) -> tuple[float, float, str]:
    """Wall seconds, peak RSS in GB (GNU time) and stdout+stderr of one process."""
    start = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-f", "MAXRSS %M", *command],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
    )
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stdout}{result.stderr}")
    lines = result.stderr.splitlines()
    rss = next(int(x.split()[1]) for x in lines if x.startswith("MAXRSS")) / 1024**2
    text = result.stdout + "\n".join(x for x in lines if not x.startswith("MAXRSS"))
    return seconds, rss, text


def pie(*args: str) -> list[str]:
    return [sys.executable, "-m", "pie", *args]


def check_agreement(path: Path, out: str) -> None:
    """PIE membership, t and p from the database against the pandas results."""
    import polars as pl

    con = store.connect(open_root(path, create=False), read_only=True)
    assert materialise.attach(con), "the analysis is not fresh"
    ours = pl.from_arrow(con.sql("select sparsity, key, is_pie from pie").to_arrow_table())
    tstats = pl.from_arrow(
        con.sql(
            "select sparsity, class_id, t_stat, p_value from class_tstats order by all"
        ).to_arrow_table()
    )
    con.close()
    theirs = pl.read_parquet(out + ".pie.parquet")
    joined = ours.join(theirs, on=["sparsity", "key"], suffix="_pd")
    assert joined.height == ours.height == theirs.height, "PIE row counts differ"
    assert (joined["is_pie"] == joined["is_pie_pd"]).all(), "PIE membership differs"
    ref = pl.read_parquet(out + ".tstats.parquet").with_columns(pl.col("class_id").cast(pl.Int32))
    both = tstats.join(ref, on=["sparsity", "class_id"])
    assert both.height == tstats.height == ref.height, "class_tstats row counts differ"

    def array(name: str) -> np.ndarray:
        return both[name].cast(pl.Float64).fill_null(np.nan).to_numpy()

    # A class every model of both populations gets equally right has no test (ours: null);
    # scipy sees the rounding noise of its normalisation there and returns |t| ~ 1e14.
    t, t_pd = array("t_stat"), array("t")
    degenerate = np.isnan(t) & (np.isnan(t_pd) | (np.abs(t_pd) > 1e10))
    assert (np.isnan(t) == degenerate).all(), "t-tests defined on one side only"
    keep = ~degenerate
    np.testing.assert_allclose(t[keep], t_pd[keep], rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(array("p_value")[keep], array("p")[keep], rtol=1e-6, atol=1e-12)
    print(
        f"agreement: {ours['is_pie'].sum():,} PIE rows and {keep.sum():,} t-tests identical"
        f" ({degenerate.sum()} classes without a test on either side)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=50_000)
    parser.add_argument("--models", type=int, default=30)
    parser.add_argument("--scale", type=int, default=1, help="x images (10: 90 M rows)")
    parser.add_argument("--memory", default=None, help="memory_limit [2GB; 4GB at scale > 1]")
    parser.add_argument(
        "--repeat", type=int, default=4, help="runs of each command, interleaved [4]: medians"
    )
    args = parser.parse_args()
    keys = args.keys * args.scale
    memory = args.memory or ("2GB" if args.scale == 1 else "4GB")
    try:
        import pandas  # noqa: F401

        with_pandas = args.scale == 1
    except ImportError:
        with_pandas = False
        print("pandas not installed (dev extras): the pandas side is skipped")
    tmp = Path(tempfile.mkdtemp(prefix="pie-bench-"))
    try:
        path, parquet = tmp / "work", tmp / "predictions.parquet"
        start = time.perf_counter()
        n = build(path, keys, args.models, memory, parquet if with_pandas else None)
        print(
            f"{n:,} predictions ({keys:,} images x {args.models} models x {len(SPARSITIES)}"
            f" populations, {CLASSES} classes) built in {time.perf_counter() - start:.0f} s;"
            f" memory_limit {memory}, {os.cpu_count()} cores"
        )
        root = ["--root", str(path)]
        count = "select sparsity, count(*) filter (where is_pie) as pies from pie group by all"
        commands = {"pie analyze (process)": pie("analyze", "--force", *root)}
        if with_pandas:
            out = str(tmp / "pandas")
            script = tmp / "pandas_pies.py"
            script.write_text(PANDAS)
            baseline = "pandas (process, baseline)"
            commands = {baseline: [sys.executable, str(script), str(parquet), out], **commands}
        commands["pie sql: PIE count per sparsity"] = pie("sql", count + " order by 1", *root)
        commands["pie summary"] = pie("summary", *root)
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
        names = list(commands)
        for i in range(args.repeat):
            # interleaved, so that the machine's noise hits all alike, and in an order rotated
            # each round: on this VM a command run right after pandas (1.5 GB) is ~0.2 s slower
            for name in names[i % len(names) :] + names[: i % len(names)]:
                seconds, rss, text = timed(commands[name])
                runs[name].append((seconds, rss))
                if i == 0 and name.startswith("pie analyze"):
                    print(text.strip().splitlines()[-1])
                if i == 0 and name.startswith("pie sql"):
                    print(text.strip())
            if i == 0 and with_pandas:
                check_agreement(path, out)
        median = {name: float(np.median([s for s, _ in r])) for name, r in runs.items()}
        base = median[baseline] if with_pandas else None
        print(
            f"{'command':<36}{'median s':>9}{'min-max s':>12}{'peak GB':>9}"
            + (f"{'x pandas':>10}" if base else "")
        )
        for name, r in runs.items():
            seconds = [s for s, _ in r]
            spread = f"{min(seconds):.2f}-{max(seconds):.2f}"
            ratio = f"{base / median[name]:>10.1f}" if base else ""
            print(f"{name:<36}{median[name]:>9.2f}{spread:>12}{max(g for _, g in r):>9.2f}{ratio}")
        print(f"({args.repeat} runs of each command, interleaved; ratios of the medians)")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
