"""`--init-from`: start a job from dense weights and prune them while fine-tuning.

The source is a pie checkpoint directory (its sidecar's arch and class count must be the
run's, its sha256 must match) or a `state_dict` file (torchvision's or timm's, or any with the
stock names, `.safetensors` too; read by `pie.weights`). Weights of another architecture or
class count are refused in one line naming the first mismatch, before anything trains.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pie import checkpoints, weights
from pie.errors import PieError


def dense_weights(path: str, arch: str, num_classes: int) -> dict[str, torch.Tensor]:
    source = Path(path).expanduser()
    if (source / checkpoints.SIDECAR).exists():
        sidecar = checkpoints.read_sidecar(source)
        if (sidecar.arch, sidecar.num_classes) != (arch, num_classes):
            raise PieError(
                f"--init-from {source} is a {sidecar.arch} with {sidecar.num_classes} classes, "
                f"this run trains a {arch} with {num_classes}"
            )
        model, _ = checkpoints.load(source)
        return model.state_dict()
    if not source.is_file():
        raise PieError(f"--init-from {source}: no such checkpoint directory or weights file")
    return weights.read(source, "--init-from")


def load_dense(model: torch.nn.Module, path: str, arch: str, num_classes: int) -> None:
    """Load `path`'s weights into `model` (a fresh `arch` with `num_classes` outputs)."""
    state = dense_weights(path, arch, num_classes)
    weights.load_into(model, state, f"--init-from {path} does not fit {arch}", num_classes)
