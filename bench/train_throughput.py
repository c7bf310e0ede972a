"""Training and inference throughput of the registry's small_cnn against a max-pooling
baseline of the same widths, one torch thread, synthetic 28x28 batches, same process; then
what pruning costs: ResNet-18 at 64 px, the training loop with a magnitude `Pruner` (gradient
masks every step, mask updates on schedule) divided by the same loop without, at most 1.10.

    .venv/bin/python bench/train_throughput.py [--steps 200] [--prune-steps 30]

Why small_cnn uses strided convolutions: on CPU, max-pooling dominated the step time. The
channels-last row shows that memory format buys nothing at this size (so pie keeps the default).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from pie.models import create, prunable_weights
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--prune-steps", type=int, default=10, help="steps per round, 5 rounds")
    parser.add_argument("--prune-frequency", type=int, default=50)
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
