"""Training and inference throughput of the registry's small_cnn against a max-pooling
baseline of the same widths, one torch thread, synthetic 28x28 batches, same process; then
what pruning costs: ResNet-18 at 64 px, the training loop with a magnitude `Pruner` (gradient
masks every step, mask updates on schedule) divided by the same loop without, at most 1.10;
then streaming's start-up: the seconds to the first batch of epoch 1 (from the call of
`train.loaders.Streamed.batches`, the loader's workers starting included) and of epoch 2
(from the last batch of epoch 1) over 10 and 100 shards of 100 PNGs each, 2 loader workers,
batch 64, medians of `--rounds` runs, and their ratio 100 / 10 shards, which must stay near 1:
nothing done per epoch or per shard scans the tars. The same for an index written before
offsets files, whose shards the main process scans once before epoch 1 (that one grows with
the images).

    .venv/bin/python bench/train_throughput.py [--steps 200] [--prune-steps 30] [--rounds 5]
    .venv/bin/python bench/train_throughput.py --only-first-batch

Why small_cnn uses strided convolutions: on CPU, max-pooling dominated the step time. The
channels-last row shows that memory format buys nothing at this size (so pie keeps the default).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pie.distributed import World
from pie.models import create, prunable_weights
from pie.shards import INDEX, Sample, read_index, write_shards
from train import data, loaders
from train.config import TrainConfig
from train.pruning import Pruner, Schedule


def maxpool_baseline() -> nn.Module:
    """small_cnn's layers with stride-1 convolutions followed by 2x2 max-pooling."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 256),
        nn.ReLU(),
        nn.Linear(256, 10),
    )


def train_rate(model: nn.Module, steps: int, fmt: torch.memory_format, batch: int = 128) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch,))
    for _ in range(10):  # warm-up
        F.cross_entropy(model(x), y).backward()
    start = time.perf_counter()
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - start)


@torch.inference_mode()
def infer_rate(
    model: nn.Module, batches: int, fmt: torch.memory_format, batch: int = 1000
) -> float:
    model.eval()
    x = torch.randn(batch, 1, 28, 28).contiguous(memory_format=fmt)
    model(x)
    start = time.perf_counter()
    for _ in range(batches):
        model(x)
    return batches * batch / (time.perf_counter() - start)


def pruning_ratio(
    steps: int, rounds: int = 5, batch: int = 32, frequency: int = 50
) -> tuple[float, float, float]:
    """(seconds per step without pruning, with, ratio) for ResNet-18 at 64 px: both loops run
    in alternating rounds of `steps` steps so that machine noise hits both alike; the pruner
    masks every gradient and updates its masks every `frequency` steps (the demo's default;
    the ImageNet recipes use 250-500) on a long schedule towards 90 %, so one update in 50
    steps at the defaults."""
    torch.manual_seed(0)
    x, y = torch.randn(batch, 3, 64, 64), torch.randint(0, 1000, (batch,))
    plain, pruned = create("resnet18", 1000, 3, 64), create("resnet18", 1000, 3, 64)
    pruned.load_state_dict(plain.state_dict())
    schedule = Schedule(0.9, 0, 10_000, frequency)
    pruner = Pruner(prunable_weights(pruned), "magnitude", schedule, torch.Generator())
    optimizers = {
        m: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        for m in (plain, pruned)
    }
    times = {plain: 0.0, pruned: 0.0}
    step_of = {plain: 0, pruned: 0}
    for model in (plain, pruned):  # warm-up
        F.cross_entropy(model(x), y).backward()
    for _ in range(rounds):
        for model in (plain, pruned):
            opt = optimizers[model]
            start = time.perf_counter()
            for _ in range(steps):
                if model is pruned:
                    pruner.update(step_of[model], opt)
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step_of[model] += 1
            times[model] += time.perf_counter() - start
    n = rounds * steps
    return times[plain] / n, times[pruned] / n, times[pruned] / times[plain]


def png_shards(directory: Path, n_shards: int, per_shard: int = 100) -> None:
    """`n_shards` shards of `per_shard` random 28x28 grayscale PNGs."""
    from PIL import Image

    rng = np.random.default_rng(n_shards)
    samples = []
    for i in range(n_shards * per_shard):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(buf, format="PNG")
        samples.append(Sample(f"k{i:06d}", i % 10, buf.getvalue(), "png"))
    write_shards(samples, directory, "bench", max_count=per_shard)


def without_offsets(directory: Path, copy: Path) -> None:
    """A copy of a dataset whose index names no offsets files, as written before them."""
    shutil.copytree(directory, copy)
    index = read_index(copy)
    for entry in index["shardlist"]:
        (copy / entry.pop("offsets")).unlink()
    (copy / INDEX).write_text(json.dumps(index, indent=2) + "\n")


def first_batches(
    directory: Path, rounds: int, batch: int = 64, step: float = 0.01
) -> tuple[float, float]:
    """Median seconds to the first batch of epoch 1 (from the call of `batches`) and of epoch 2
    (from the end of the last step of epoch 1), streaming with 2 loader workers, each step
    taking `step` seconds after its batch arrives (a stand-in for the model's step: longer than
    the workers take to decode a batch, so they can keep ahead, as they must on a GPU)."""
    cfg = TrainConfig(dataset="bench", batch_size=batch, epochs=2, loader_workers=2,
                      augment="none", data="stream", device="cpu")  # fmt: skip
    shards = data.shard_set(directory, "bench")
    per_epoch, total = data.steps(cfg, shards.n_images)
    stream = loaders.load(cfg, shards, data.preprocess(cfg), World(), 0, False)
    firsts, seconds = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        batches = stream.batches(0, total)
        next(batches)
        firsts.append(time.perf_counter() - start)
        for _ in range(per_epoch - 1):
            time.sleep(step)
            next(batches)
        time.sleep(step)
        start = time.perf_counter()
        next(batches)
        seconds.append(time.perf_counter() - start)
        batches.close()
    return statistics.median(firsts), statistics.median(seconds)


def first_batch_table(rounds: int) -> None:
    print(f"{'time to first batch':<40}{'10 shards':>12}{'100 shards':>12}{'ratio':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in (10, 100):
            png_shards(Path(tmp) / f"s{n}", n)
            without_offsets(Path(tmp) / f"s{n}", Path(tmp) / f"old{n}")
        for label, prefix in (("", "s"), (", index without offsets", "old")):
            times = {n: first_batches(Path(tmp) / f"{prefix}{n}", rounds) for n in (10, 100)}
            for epoch in (0, 1):
                a, b = times[10][epoch], times[100][epoch]
                name = f"epoch {epoch + 1}{label}"
                print(f"{name:<40}{a * 1000:>10.1f}ms{b * 1000:>10.1f}ms{b / a:>8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--prune-steps", type=int, default=10, help="steps per round, 5 rounds")
    parser.add_argument("--prune-frequency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=5, help="runs per time to first batch")
    parser.add_argument("--only-first-batch", action="store_true")
    args = parser.parse_args()
    if args.only_first_batch:
        first_batch_table(args.rounds)
        return
    torch.manual_seed(0)
    torch.set_num_threads(1)
    plain, last = torch.contiguous_format, torch.channels_last
    models = {
        "max-pool baseline": (maxpool_baseline(), plain),
        "small_cnn": (create("small_cnn", 10, 1, 28), plain),
        "small_cnn channels-last": (create("small_cnn", 10, 1, 28).to(memory_format=last), last),
    }
    rates = {
        name: (train_rate(m, args.steps, fmt), infer_rate(m, args.steps // 10, fmt))
        for name, (m, fmt) in models.items()
    }
    base_train, base_infer = rates["max-pool baseline"]
    print(f"{'model':<26}{'train img/s':>14}{'ratio':>8}{'infer img/s':>14}{'ratio':>8}")
    for name, (tr, inf) in rates.items():
        print(f"{name:<26}{tr:>14,.0f}{tr / base_train:>8.2f}{inf:>14,.0f}{inf / base_infer:>8.2f}")
    plain, pruned, ratio = pruning_ratio(args.prune_steps, frequency=args.prune_frequency)
    print(
        f"resnet18 64 px batch 32: {plain:.3f} s/step dense, {pruned:.3f} s/step pruned "
        f"(masks updated every {args.prune_frequency} steps), pruning ratio {ratio:.3f} "
        "(limit 1.10)"
    )
    first_batch_table(args.rounds)


if __name__ == "__main__":
    main()
