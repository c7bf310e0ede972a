"""Corruption speed: images/s per corruption (severities 1-5 in turn) at 28x28 grayscale
and 224x224 RGB, one core.

    .venv/bin/python bench/corruptions.py
"""

from __future__ import annotations

import time

import numpy as np

from ingest.corruptions import CORRUPTIONS, SEVERITIES, corrupt


def main() -> None:
    gen = np.random.default_rng(0)
    cases = {"28x28 gray": (gen.integers(0, 256, (28, 28), np.uint8), 500),
             "224x224 RGB": (gen.integers(0, 256, (224, 224, 3), np.uint8), 10)}  # fmt: skip
    print(f"{'corruption':<18}" + "".join(f"{label:>13}" for label in cases))
    for corruption in CORRUPTIONS:
        rates = []
        for img, n in cases.values():
            for severity in SEVERITIES:  # warm the kernel and zoom-matrix caches
                corrupt(img, corruption, severity, gen)
            start = time.perf_counter()
            for i in range(n):
                corrupt(img, corruption, SEVERITIES[i % 5], gen)
            rates.append(n / (time.perf_counter() - start))
        print(f"{corruption:<18}" + "".join(f"{rate:>13,.0f}" for rate in rates))


if __name__ == "__main__":
    main()
