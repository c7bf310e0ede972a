"""Quantising a trained model (`pie compress`): the program a quantisation method makes from
the float model, and what its sidecar records about it. How each program is built, stored and
run is `pie.compressed`'s; this module adds the calibration of `int8_full`.

Calibration: `count` images of the parent's training set, drawn at random without replacement
by `seed` (the evaluation set is never seen), decoded without augmentation by the parent's
preprocessing, run through the observed program in batches of `CALIBRATION_BATCH`.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn

from pie import compressed
from pie.images import Preprocess, normalize
from pie.paths import WorkRoot
from train import data

CALIBRATION_BATCH = 256
METHODS = compressed.FORMATS  # float16, bfloat16, int8_hybrid, int8_full
BITS = {"float16": 16, "bfloat16": 16, "int8_hybrid": 8, "int8_full": 8}


def calibration_images(
    root: WorkRoot, dataset: str, pre: Preprocess, count: int, seed: int
) -> list[torch.Tensor]:
    """uint8 batches of `count` images of `dataset` drawn by `seed` (all of them if fewer)."""
    shards = data.shard_set(root.shards(dataset), dataset)
    order = torch.randperm(shards.n_images, generator=torch.Generator().manual_seed(seed))
    chosen = sorted(order[:count].tolist())  # in shard order: each shard read forwards
    samples = data.ShardSamples(shards, pre, None)
    batches = []
    for start in range(0, len(chosen), CALIBRATION_BATCH):
        part = chosen[start : start + CALIBRATION_BATCH]
        batches.append(torch.stack([samples[(i, 0, 0)][0] for i in part]))
    return batches


def quantise(
    model: nn.Module, method: str, pre: Preprocess, calibration: list[torch.Tensor]
) -> nn.Module:
    """The `method` program of a float model (left untouched), as its checkpoint stores it
    (`pie.compressed.structure`'s module); `calibration`: uint8 batches for int8_full."""
    model = copy.deepcopy(model).cpu().eval()
    if method in compressed.FLOATS:
        return model.to(compressed.FLOATS[method])
    if method == "int8_hybrid":
        return compressed.hybrid(model)

    def calibrate(observed: nn.Module) -> None:
        for batch in calibration:
            observed(normalize(batch, pre))

    example = torch.zeros(1, pre.channels, pre.size, pre.size)
    return compressed.full_int8(model, example, calibrate)


def description(method: str, calibration: dict[str, Any] | None = None) -> dict[str, Any]:
    """The sidecar's `compression` entry of a quantised model: format, bits, how weights and
    activations are held, the engine and (int8_full) the calibration set."""
    out: dict[str, Any] = {"method": method, "format": method, "bits": BITS[method]}
    if method in compressed.FLOATS:
        return {**out, "weights": method, "activations": method}
    out |= {
        "engine": compressed.ENGINE,
        "runs_on": "cpu",
        "weights": "qint8, per output channel, symmetric",
    }
    if method == "int8_hybrid":
        return out | {
            "activations": "float32",
            "linear": "torch dynamic quantisation: int8 matmul, activations quantised per batch",
            "conv": "int8 weights dequantised to float32 at each forward pass: torch has no "
            "dynamic int8 convolution kernel",
        }
    return out | {
        "activations": "quint8, per tensor, affine, ranges calibrated",
        "program": "torch.ao FX graph mode, default qconfig mapping for x86; batch norm folded",
        "calibration": calibration or {},
    }
