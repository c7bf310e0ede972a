"""`--init-from`: start a job from dense weights and prune them while fine-tuning.

The source is a pie checkpoint directory (its sidecar's arch and class count must be the
run's, its sha256 must match) or a `state_dict` file (torchvision's, or any with the stock
names; a `module.` prefix left by DataParallel is dropped, a dict holding the weights under
`state_dict` or `model` is opened). Weights of another architecture or class count are
refused in one line naming the first mismatch, before anything trains.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pie import checkpoints
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
    state = checkpoints.read_torch(source, "--init-from")
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PieError(f"--init-from {source} is not a state_dict (names to tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_dense(model: torch.nn.Module, path: str, arch: str, num_classes: int) -> None:
    """Load `path`'s weights into `model` (a fresh `arch` with `num_classes` outputs)."""
    state = dense_weights(path, arch, num_classes)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        name = (missing or extra)[0]
        where = "lacks" if missing else "has an unexpected"
        raise PieError(f"--init-from {path} does not fit {arch}: it {where} weight {name!r}")
    for name, value in own.items():
        if state[name].shape != value.shape:
            raise PieError(
                f"--init-from {path} does not fit {arch} with {num_classes} classes: {name} is "
                f"{tuple(state[name].shape)}, the model's {tuple(value.shape)}"
            )
    model.load_state_dict(state)
