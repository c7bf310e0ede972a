"""Checkpoint IO: `checkpoints/<model_id>/model.pt` (a plain state_dict, pruned weights stored
as zeros, loadable into the stock model) and `checkpoints/<model_id>/model.json` (the sidecar,
a `Sidecar`: everything needed to rebuild, preprocess for and trust the weights).

A checkpoint is written whole into `<model_id>.partial`, then put in place by a rename: a new
one by a plain rename, a replacement by swapping the two directories in one atomic call
(Linux `renameat2(RENAME_EXCHANGE)`, macOS `renamex_np(RENAME_SWAP)`), so a reader always sees
a whole old or a whole new checkpoint, never none. Where no atomic swap exists the old one is
first renamed to `<model_id>.old` (a moment with no checkpoint); `clean` puts it back if the
process died there. What a killed job leaves (`.partial`, `.old`) is cleared by `clean`, which
`pie train` runs before training.

torch.save output is byte-stable for the same tensors and file name, so the same seed gives
the same sha256.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import sys
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from pie.errors import PieError
from pie.models import create
from pie.paths import WorkRoot
from pie.shards import sha256_file

WEIGHTS = "model.pt"
SIDECAR = "model.json"
PARTIAL = ".partial"  # a checkpoint being written (or, after a swap, the old one being deleted)
OLD = ".old"  # the old checkpoint moved aside where no atomic swap exists


@dataclass(frozen=True)
class Sidecar:
    """`model.json`: what one checkpoint is, how it was made and how to feed it.

    model_id, experiment   the checkpoint's name and the experiment (config `name`) it is from
    arch, num_classes      `pie.models.create(arch, num_classes, channels, size)` rebuilds it
    label_space            the label space of its outputs (class_id = output index)
    method                 pruning method; 'dense' for target_sparsity 0
    target_sparsity        the sparsity asked for
    achieved_sparsity      fraction of exact zeros among the prunable weights
    layer_sparsity         the same per prunable weight, by state_dict name
    seed, torch_seed       the population seed and the torch seed derived from it
    train_dataset          what it was trained on
    eval_dataset, test_top1  the evaluation set and the top-1 on it after training
    train_loss             mean training loss over the last 100 steps
    steps                  optimizer steps run
    schedule               pruning schedule in steps: begin_step, end_step, frequency
    preprocess             `pie.images.Preprocess.to_dict()`: what inference must repeat
    config                 the resolved train config (`pie.config.to_dict`)
    torch_version, device, seconds  where and how long it trained
    world_size             processes that trained it together (torchrun), 1 without
    data                   the input path it took: 'memory' or 'stream' ('' before these fields)
    sha256                 of `model.pt`; `load` refuses weights that do not match
    path                   the checkpoint directory relative to the work root
                           (`checkpoints/<model_id>`): resolve it with `directory(root)`
    """

    model_id: str
    experiment: str
    arch: str
    num_classes: int
    label_space: str
    method: str
    target_sparsity: float
    achieved_sparsity: float
    layer_sparsity: dict[str, float]
    seed: int
    torch_seed: int
    train_dataset: str
    eval_dataset: str
    test_top1: float
    train_loss: float
    steps: int
    schedule: dict[str, int]
    preprocess: dict[str, Any]
    config: dict[str, Any]
    torch_version: str
    device: str
    seconds: float
    sha256: str = ""  # filled in by `save`
    path: str = ""  # filled in by `save`
    world_size: int = 1
    data: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str | Path = "sidecar") -> Sidecar:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise PieError(f"{where} is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise PieError(f"{where} is not a checkpoint sidecar")
        names = {f.name for f in fields(cls)}
        optional = {f.name for f in fields(cls) if f.default is not MISSING}
        missing = sorted(names - set(data) - optional)
        if missing:
            raise PieError(f"{where} is not a checkpoint sidecar (missing {', '.join(missing)})")
        return cls(**{k: v for k, v in data.items() if k in names})

    def directory(self, root: WorkRoot) -> Path:
        return root.path / self.path


def save(root: WorkRoot, model: nn.Module, sidecar: Sidecar) -> Sidecar:
    """Write weights and sidecar to `root.checkpoint(model_id)`, replacing any checkpoint there
    atomically; returns the sidecar with `sha256` and `path` filled in."""
    directory = root.checkpoint(sidecar.model_id)
    partial = directory.with_name(directory.name + PARTIAL)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, partial / WEIGHTS)
    sidecar = replace(
        sidecar,
        sha256=sha256_file(partial / WEIGHTS),
        path=directory.relative_to(root.path).as_posix(),
    )
    (partial / SIDECAR).write_text(sidecar.to_json())
    if not directory.exists():
        partial.rename(directory)
    elif exchange(partial, directory):
        shutil.rmtree(partial)  # the old checkpoint, swapped out
    else:
        old = directory.with_name(directory.name + OLD)
        shutil.rmtree(old, ignore_errors=True)
        directory.rename(old)
        partial.rename(directory)
        shutil.rmtree(old)
    return sidecar


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic call; False where the system has no such call."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if sys.platform.startswith("linux"):
            call, at_fdcwd, rename_exchange = libc.renameat2, -100, 2
            call.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p]
            call.argtypes += [ctypes.c_uint]
            rc = call(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
        elif sys.platform == "darwin":
            call, rename_swap = libc.renamex_np, 2
            call.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
            rc = call(os.fsencode(a), os.fsencode(b), rename_swap)
        else:
            return False
    except (AttributeError, OSError):  # no libc symbol (old glibc, other systems)
        return False
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # the file system cannot swap
    raise OSError(err, os.strerror(err), str(b))


def clean(checkpoints: Path) -> list[str]:
    """Clear what killed jobs left: `.partial` directories are removed; an `.old` one is put
    back when its checkpoint is missing (the job died mid-replace), else removed. Returns the
    names cleared. Call only while no other process writes checkpoints (`pie train` holds the
    database's write lock)."""
    cleared = []
    for path in sorted(checkpoints.glob(f"*{PARTIAL}")) + sorted(checkpoints.glob(f"*{OLD}")):
        target = path.with_name(path.name.removesuffix(path.suffix))
        if path.suffix == OLD and not target.exists():
            path.rename(target)
        else:
            shutil.rmtree(path)
        cleared.append(path.name)
    return cleared


def read_sidecar(directory: Path) -> Sidecar:
    path = directory / SIDECAR
    if not path.exists():
        raise PieError(f"no checkpoint at {directory}")
    return Sidecar.from_json(path.read_text(), path)


def load(
    directory: Path, device: str | torch.device = "cpu", mmap: bool = False
) -> tuple[nn.Module, Sidecar]:
    """Rebuild the model from its sidecar and load the verified weights, in eval mode.

    mmap: the model is built on the meta device and takes the weights memory-mapped from the
    file (`torch.load(mmap=True)`, `assign=True`): nothing is allocated on the heap, so a model
    dropped later gives its pages back (inference's model cache; freed heap blocks of this size
    would stay with the process)."""
    sidecar = read_sidecar(directory)
    weights = directory / WEIGHTS
    if sha256_file(weights) != sidecar.sha256:
        raise PieError(f"checkpoint {weights} does not match the sha256 in its sidecar")
    shape = (sidecar.arch, sidecar.num_classes, sidecar.preprocess["channels"])
    with torch.device("meta" if mmap else "cpu"):
        model = create(*shape, sidecar.preprocess["size"])
    state = torch.load(weights, map_location="cpu", weights_only=True, mmap=mmap)
    model.load_state_dict(state, assign=mmap)
    return model.to(device).eval(), sidecar
