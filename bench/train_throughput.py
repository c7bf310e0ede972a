"""Training and inference throughput of the registry's small_cnn against a max-pooling
baseline of the same widths, one torch thread, synthetic 28x28 batches, same process.

    .venv/bin/python bench/train_throughput.py [--steps 200]

Why small_cnn uses strided convolutions: on CPU, max-pooling dominated the step time. The
channels-last row shows that memory format buys nothing at this size (so pie keeps the default).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from pie.models import create


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
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


if __name__ == "__main__":
    main()
