"""Weights from elsewhere: a `state_dict` file read, unwrapped and checked against a model.

`read` opens a `.safetensors` file (safetensors' own loader: tensors only, no pickle) or a
torch file (`.pt`, `.pth`, ...: `torch.load(weights_only=True)`): a dict holding the weights
under `state_dict` or `model` is opened, a `module.` prefix (DataParallel's,
DistributedDataParallel's) is dropped. `load_into` puts them into a model only when the names
and shapes are exactly the model's, else refuses in one line naming the first mismatch. Used by
`pie train --init-from` and `pie models import`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from pie.checkpoints import read_torch
from pie.errors import PieError

SAFETENSORS = ".safetensors"


def read(path: Path, what: str) -> dict[str, torch.Tensor]:
    """The state_dict in `path` (names to tensors, `module.` prefixes dropped); `what` names
    the option or command in errors."""
    if path.suffix == SAFETENSORS:
        state = read_safetensors(path, what)
    else:
        state = read_torch(path, what)
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PieError(f"{what} {path} is not a state_dict (names to tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def read_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError) as e:
        reason = " ".join(str(e).split())[:160]
        raise PieError(f"{what} {path} cannot be read as safetensors ({reason})") from None


def load_into(
    model: nn.Module, state: dict[str, torch.Tensor], what: str, num_classes: int
) -> None:
    """Load `state` into `model` (with `num_classes` outputs) when it has exactly the model's
    names and shapes; `what` ("<file> does not fit <arch>") starts the one-line refusal."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        name = (missing or extra)[0]
        where = "lacks" if missing else "has an unexpected"
        more = len(missing or extra) - 1
        others = f" (and {more} more)" if more else ""
        raise PieError(f"{what}: it {where} weight {name!r}{others}")
    for name, value in own.items():
        if state[name].shape != value.shape:
            raise PieError(
                f"{what} with {num_classes} classes: {name} is {tuple(state[name].shape)}, the"
                f" model's {tuple(value.shape)}"
            )
    model.load_state_dict(state)
