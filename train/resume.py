"""Resumable training: every `train.save_every` steps a job writes its whole state to
`<root>/resume/<model_id>.pt`, and a later run of the same command continues from it.

The state is everything the next step depends on: weights and batch-norm statistics, the
optimizer's state (momentum), the pruner's masks and the values it keeps for masked weights
(under masked_weights = "reference": the raw weights, the masks, their scale and last_update),
the step (which fixes the epoch, the position in the epoch's order, the learning rate and the
pruning schedule: they are all functions of the step), the last losses, and every RNG (torch's
CPU and CUDA generators, the pruner's generator, NumPy's and Python's global ones). The data
order and the augmentation draws are functions of (seed, epoch, step) (`train.data`), so they
need no state. On CPU a resumed job therefore ends bit-identical to an uninterrupted one.

A state is written to `<name>.partial`, synced and renamed over the old one (`pie.durable`),
so a kill or a crash leaves the previous whole state. It is deleted once the job's checkpoint
is written. A state made with other settings is refused in one line, like a checkpoint
(`pie.config.differences`); one torch cannot read, in one line naming it.
"""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pie import checkpoints, durable
from pie.config import differences
from pie.errors import PieError
from pie.paths import WorkRoot
from train.config import EXECUTION, POPULATION
from train.pruning import Pruner

PARTIAL = ".partial"


def state_path(root: WorkRoot, model_id: str) -> Path:
    return root.path / "resume" / f"{model_id}.pt"


def save(
    path: Path,
    *,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    pruner: Pruner | None,
    generator: torch.Generator,
    losses: list[float],
    config: dict[str, Any],
) -> None:
    """Write the state a job needs to continue at `step`, atomically."""
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "pruner": pruner.state_dict() if pruner is not None else None,
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "host_rngs": pickle.dumps((np.random.get_state(), random.getstate())),
        "losses": list(losses),
        "config": json.dumps(config, sort_keys=True),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + PARTIAL)
    torch.save(state, partial)
    durable.replace(partial, path)


def load(
    path: Path,
    config: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    pruner: Pruner | None,
    generator: torch.Generator,
) -> tuple[int, list[float]]:
    """Restore a saved state into a freshly built job; returns (step to run next, losses)."""
    state = checkpoints.read_torch(path, "resume state")
    if not isinstance(state, dict) or "config" not in state:
        raise PieError(f"resume state {path} is not a resume state: delete it")
    differ = differences(json.loads(state["config"]), config, EXECUTION + POPULATION)
    if differ:
        raise PieError(
            f"resume state {path.name} was saved with {differ[0]}, this run asks {differ[1]}:"
            f" delete {path} to start this model over"
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if pruner is not None:
        pruner.load_state_dict(state["pruner"])
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    numpy_state, python_state = pickle.loads(state["host_rngs"])
    np.random.set_state(numpy_state)
    random.setstate(python_state)
    return int(state["step"]), list(state["losses"])


def clean(root: WorkRoot) -> None:
    """Remove half-written states (a kill during `save`) and empty ones (a crash of a pie
    that renamed before syncing): their jobs start over, as without a state."""
    for path in (root.path / "resume").glob("*"):
        if path.name.endswith(PARTIAL) or (path.is_file() and path.stat().st_size == 0):
            path.unlink()
