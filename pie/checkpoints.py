"""Checkpoint IO: `<model_id>/model.pt` (a plain state_dict, pruned weights stored as zeros,
loadable into the stock model) and `<model_id>/model.json` (the sidecar: everything needed to
rebuild, preprocess for and trust the weights).

A checkpoint directory is written as `<model_id>.partial` and renamed when complete, so it is
whole or absent. torch.save output is byte-stable for the same tensors and file name, so the
same seed gives the same sha256.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from pie.errors import PieError
from pie.models import create

WEIGHTS = "model.pt"
SIDECAR = "model.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save(directory: Path, model: nn.Module, sidecar: dict[str, Any]) -> dict[str, Any]:
    """Write weights and sidecar atomically; returns the sidecar with `sha256` and `path`."""
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, partial / WEIGHTS)
    sidecar = {**sidecar, "sha256": sha256_file(partial / WEIGHTS), "path": str(directory)}
    (partial / SIDECAR).write_text(json.dumps(sidecar, indent=2, sort_keys=True) + "\n")
    if directory.exists():
        shutil.rmtree(directory)
    partial.rename(directory)
    return sidecar


def read_sidecar(directory: Path) -> dict[str, Any]:
    path = directory / SIDECAR
    if not path.exists():
        raise PieError(f"no checkpoint at {directory}")
    return json.loads(path.read_text())


def load(directory: Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from its sidecar and load the verified weights, in eval mode."""
    sidecar = read_sidecar(directory)
    weights = directory / WEIGHTS
    if sha256_file(weights) != sidecar["sha256"]:
        raise PieError(f"checkpoint {weights} does not match the sha256 in its sidecar")
    model = create(
        sidecar["arch"],
        sidecar["num_classes"],
        sidecar["preprocess"]["channels"],
        sidecar["preprocess"]["size"],
    )
    model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return model.to(device).eval(), sidecar
