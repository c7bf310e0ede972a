"""What compression buys: per derived model against its dense parent, CPU latency of one batch,
parameters, non-zero parameters and bytes on disk.

With `--root`, the work root's derived models (`pie compress`) and their parents, loaded as
`pie infer` loads them, then the trade-off in one table: per population, what it costs (top-1,
classes significantly impacted, PIEs/CIEs: `population_summary` as of the last `pie analyze`)
beside what it buys (latency and bytes on disk against the dense parents). Without `--root`,
one small_cnn with random weights (no training: latency and sizes do not depend on the values)
derived here by every method, int8_full calibrated on random images. Inputs are 28 px
grayscale (small_cnn on Fashion-MNIST, the demo's). Latency: the median of `--runs` forward
passes of one batch of `--batch` images on the CPU (after 3 warm-up passes), every model timed
in this one process, so ratios to the parent (`x`) are like for like.

    PYTHONPATH=$PWD .venv/bin/python bench/compression.py [--root work --batch 256 --runs 20]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import torch

from pie import checkpoints, compressed, store
from pie.images import Preprocess, normalize
from pie.models import create, prunable_weights
from pie.paths import open_root
from train import quantise, sparsify

METHODS = ("oneshot_magnitude", "semistructured_2_4", *quantise.METHODS)


def latency(model: torch.nn.Module, x: torch.Tensor, runs: int) -> float:
    """Median seconds of one forward pass of `x` on the CPU."""
    times = []
    with torch.inference_mode():
        for i in range(runs + 3):
            start = time.perf_counter()
            model(x)
            if i >= 3:
                times.append(time.perf_counter() - start)
    return statistics.median(times)


def file_bytes(module: torch.nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save({k: checkpoints.tidy(v) for k, v in module.state_dict().items()}, buffer)
    return buffer.tell()


Row = tuple[str, torch.nn.Module, torch.nn.Module]  # name (indented: derived), runnable, stored


def derived_here() -> list[Row]:
    """A random small_cnn and what every method derives from it."""
    torch.manual_seed(0)
    parent = create("small_cnn", 10, 1, 28).eval()
    pre = Preprocess(28, 1, (0.2860,), (0.3530,))
    calibration = [torch.randint(0, 256, (256, 1, 28, 28), dtype=torch.uint8) for _ in range(2)]
    out = [("dense", parent, parent)]
    for method in METHODS:
        if method in quantise.METHODS:
            stored = quantise.quantise(parent, method, pre, calibration)
            out.append((f"  {method}", compressed.runnable(stored, method), stored))
            continue
        model = create("small_cnn", 10, 1, 28).eval()
        model.load_state_dict(parent.state_dict())
        weights = prunable_weights(model)
        if method == "oneshot_magnitude":
            masks = sparsify.oneshot_masks(weights, 0.9, "per_layer")
        else:
            masks, _ = sparsify.n_m_masks(weights, 2, 4)
        sparsify.apply(masks, weights)
        out.append((f"  {method}" + (" 0.9" if "oneshot" in method else ""), model, model))
    return out


def from_root(path: str) -> list[Row]:
    """Every dense model of the work root, each followed by the models compared with it: those
    derived from it (`parent_id`) and the trained ones of its experiment and seed."""
    root = open_root(path, create=False)
    with store.connect(root, read_only=True) as con:
        rows = store.rows(
            con,
            "select m.model_id, d.model_id from models as m join models as d"
            " on d.method = 'dense' and d.model_id = coalesce(m.parent_id, d.model_id)"
            " and d.experiment = m.experiment and d.seed = m.seed"
            " where m.method <> 'dense' order by 2, 1",
        )
    out = []
    for parent_id in sorted({p for _, p in rows}):
        model, _ = checkpoints.load(root.checkpoint(parent_id))
        out.append((parent_id, model, model))
        for model_id, _ in [r for r in rows if r[1] == parent_id]:
            program, _ = checkpoints.load(root.checkpoint(model_id))
            stored = program.module if isinstance(program, compressed.Program) else program
            out.append((f"  {model_id}", program, stored))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", help="a work root with derived models (default: made here)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    models = from_root(args.root) if args.root else derived_here()
    pixels = torch.randint(0, 256, (args.batch, 1, 28, 28), dtype=torch.uint8)
    x = normalize(pixels, Preprocess(28, 1, (0.2860,), (0.3530,)))  # small_cnn's demo input
    print(f"CPU, {torch.get_num_threads()} threads, batch {args.batch}, median of {args.runs}")
    print(f"{'model':<48} {'ms':>8} {'x':>6} {'params':>9} {'nonzero':>9} {'bytes':>10} {'x':>6}")
    base_ms = base_bytes = 1.0
    speedups: dict[str, list[float]] = {}  # derived model id -> latency / its parent's
    for name, runnable, stored in models:
        ms = latency(runnable, x, args.runs) * 1000
        params, nonzero = checkpoints.parameter_counts(stored)
        size = file_bytes(stored)
        if not name.startswith(" "):  # a parent: the rows below are against it
            base_ms, base_bytes = ms, size
        speedups[name.strip()] = [ms / base_ms]
        print(
            f"{name:<48} {ms:>8.2f} {ms / base_ms:>6.2f} {params:>9} {nonzero:>9} {size:>10}"
            f" {size / base_bytes:>6.2f}"
        )
    if args.root:
        trade_off(args.root, speedups)


def trade_off(path: str, ratio: dict[str, list[float]]) -> None:
    """Per population of the root's clean datasets: harm (population_summary) beside latency
    (median over its models of each model's latency / its parent's) and bytes x dense."""
    root = open_root(path, create=False)
    with store.connect(root, read_only=True) as con:
        by_model = store.rows(con, "select model_id, method, level from models")
        rows = store.rows(
            con,
            "select dataset, method, level, n_models, mean_top1, n_significant_classes, n_pie,"
            " pie_fraction, size_vs_dense from population_summary join datasets on name = dataset"
            " where kind = 'clean' order by dataset, level, method",
        )
    latency_x: dict[tuple, list[float]] = {}
    for model_id, method, level in by_model:
        latency_x.setdefault((method, level), []).extend(ratio.get(model_id, []))
    print(f"\n{'dataset':<14} {'method':<26} {'level':>5} {'models':>6} {'top-1':>7}"
          f" {'classes':>7} {'PIEs':>6} {'%':>6} {'latency x':>9} {'bytes x':>7}")  # fmt: skip
    for dataset, method, level, n, top1, classes, pies, fraction, size in rows:
        lat = latency_x.get((method, level)) or [1.0] * (method == "dense")
        print(
            f"{dataset:<14} {method:<26} {level:>5g} {n:>6} {100 * top1:>7.2f} {classes or 0:>7}"
            f" {pies or 0:>6} {100 * (fraction or 0):>6.2f}"
            f" {statistics.median(lat) if lat else float('nan'):>9.2f} {size or 0:>7.2f}"
        )


if __name__ == "__main__":
    main()
