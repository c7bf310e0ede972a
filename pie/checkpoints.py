"""Checkpoint IO: `checkpoints/<model_id>/model.pt` (a plain state_dict, pruned weights stored
as zeros, loadable into the stock model) and `checkpoints/<model_id>/model.json` (the sidecar,
a `Sidecar`: everything needed to rebuild, preprocess for and trust the weights).

A checkpoint is written whole into `<model_id>.partial`, synced to disk (`pie.durable`), then
put in place by a rename: a new one by a plain rename, a replacement by swapping the two
directories in one atomic call (Linux `renameat2(RENAME_EXCHANGE)`, macOS
`renamex_np(RENAME_SWAP)`), so a reader always sees
a whole old or a whole new checkpoint, never none. Where no atomic swap exists the old one is
first renamed to `<model_id>.old` (a moment with no checkpoint); `clean` puts it back if the
process died there. What a killed job leaves (`.partial`, `.old`) is cleared by `clean`, which
`pie train` runs before training.

torch.save output is byte-stable for the same tensors and file name, so the same seed gives
the same sha256.

A checkpoint replaced behind pie's back (copied in from another machine, restored from a
backup, another model's weights under this id) is caught by `reconcile`, which `pie train` and
`pie infer` run on every checkpoint they would reuse: the weights file's size and mtime against
those recorded when it was last hashed (table `checkpoint_files`) as the fast check; when they
or the sidecar's sha256 changed, the file is hashed again. Weights that do not match their own
sidecar are refused in one line; a consistent pair with another sha256 than the `models` row is
registered again, so that `pie infer` sees its predictions as stale and evaluates it again.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
import sys
import warnings
from collections import OrderedDict
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from pie import catalog, compressed, durable, provenance
from pie.catalog import CheckpointFile
from pie.errors import PieError
from pie.models import create
from pie.paths import WorkRoot
from pie.shards import sha256_file

if TYPE_CHECKING:
    import duckdb

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
    method                 how it was made: 'dense', a pruning method, or a compression
                           (`pie compress`) or import method
    target_sparsity        the sparsity asked for
    level                  the population level within its method: the target sparsity for
                           dense and pruned models, the bit width for quantised ones (sidecars
                           from before this field: the target sparsity)
    parent_id              the model a derived model was made from ('' for a trained or
                           imported one)
    compression            how a derived or imported model was made (method parameters,
                           bits, calibration set, source file): {} for a trained model
    params, nonzero_params  parameter count and non-zero count of the saved model
    size_bytes             bytes of `model.pt` on disk
    achieved_sparsity      fraction of exact zeros among the prunable weights
    layer_sparsity         the same per prunable weight, by state_dict name
    seed, torch_seed       the population seed and the torch seed derived from it
    train_dataset          what it was trained on
    eval_dataset, test_top1  the evaluation set and the top-1 on it after training (None for
                           an imported model: `pie infer` evaluates it)
    train_loss             mean training loss over the last 100 steps (None: imported)
    steps                  optimizer steps run
    schedule               pruning schedule in steps: begin_step, end_step, frequency
    preprocess             `pie.images.Preprocess.to_dict()`: what inference must repeat
    config                 the resolved train config (`pie.config.to_dict`)
    torch_version, device, seconds  where and how long it trained
    world_size             processes that trained it together (torchrun), 1 without
    data                   the input path it took: 'memory' or 'stream' ('' before these fields)
    deterministic          whether only deterministic algorithms ran: always on CPU, on CUDA
                           with `train.deterministic` (false in sidecars from before this field)
    sha256                 of `model.pt`; `load` refuses weights that do not match
    pie_version, pie_commit  the pie that saved it (pie.provenance; commit '' outside git)
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
    test_top1: float | None
    train_loss: float | None
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
    deterministic: bool = False
    pie_version: str = ""  # filled in by `save`
    pie_commit: str = ""  # filled in by `save`
    level: float | None = None  # None: the target sparsity
    parent_id: str = ""
    compression: dict[str, Any] = field(default_factory=dict)
    params: int = 0  # filled in by `save`
    nonzero_params: int = 0  # filled in by `save`
    size_bytes: int = 0  # filled in by `save`

    def __post_init__(self) -> None:
        if self.level is None:
            object.__setattr__(self, "level", float(self.target_sparsity))

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
        required = {f.name for f in fields(cls) if MISSING is f.default is f.default_factory}
        missing = sorted(required - set(data))
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
    state = {k: tidy(v) for k, v in model.state_dict().items()}
    torch.save(state, partial / WEIGHTS)
    params, nonzero = parameter_counts(model)
    sidecar = replace(
        sidecar,
        sha256=sha256_file(partial / WEIGHTS),
        params=params,
        nonzero_params=nonzero,
        size_bytes=(partial / WEIGHTS).stat().st_size,
        path=directory.relative_to(root.path).as_posix(),
        pie_version=provenance.version(),
        pie_commit=provenance.commit() or "",
    )
    (partial / SIDECAR).write_text(sidecar.to_json())
    if not directory.exists():
        durable.replace(partial, directory)
    elif durable.replace(partial, directory, exchange):
        shutil.rmtree(partial)  # the old checkpoint, swapped out
    else:
        old = directory.with_name(directory.name + OLD)
        shutil.rmtree(old, ignore_errors=True)
        directory.rename(old)
        durable.replace(partial, directory)
        shutil.rmtree(old)
    return sidecar


def tidy(value: Any) -> Any:
    """A state_dict value as saved: a tensor detached, on the CPU, contiguous; what else a
    quantized module's state_dict holds (a dtype, a tuple of packed tensors) as it is."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().contiguous()
    return value


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters) of a model: its `nn.Parameter`s, and the weights and
    biases a quantized module packs outside them (a module whose `weight` is a method: torch's
    quantized convolutions and linear layers, `pie.compressed.Int8WeightConv2d`), counted as
    their values (a quantised weight is zero where its integer is the zero point)."""
    tensors = [p.detach() for p in model.parameters()]
    for module in model.modules():
        weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
        if callable(weight) and not isinstance(weight, torch.Tensor):
            tensors += [t for t in (weight(), bias() if callable(bias) else None) if t is not None]
    values = [t.dequantize() if t.is_quantized else t for t in tensors]
    return sum(t.numel() for t in values), sum(int(torch.count_nonzero(t)) for t in values)


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
            durable.replace(path, target)
        else:
            shutil.rmtree(path)
        cleared.append(path.name)
    return cleared


def read_torch(path: Path, what: str, mmap: bool = False) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU (memory-mapped with `mmap`); a file
    torch cannot read (text, a pickle of other objects, a truncated or empty file) is a
    one-line PieError naming `what`. torch's own warnings about the file are silenced: the
    error says what matters."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # torch raises many types (UnpicklingError, KeyError, EOFError...)
        text = " ".join(str(e).split())  # torch's text spans lines; keep what names the cause
        _, found, cause = text.partition("WeightsUnpickler error:")
        detail = cause.split(". ")[0].split(" Check the documentation")[0] if found else text
        reason = type(e).__name__ + (f": {detail.strip()[:160]}" if detail.strip() else "")
        raise PieError(f"{what} {path} cannot be read by torch.load ({reason})") from None


def read_sidecar(directory: Path) -> Sidecar:
    path = directory / SIDECAR
    if not path.exists():
        raise PieError(f"no checkpoint at {directory}")
    return Sidecar.from_json(path.read_text(), path)


def verify(directory: Path, known: CheckpointFile | None = None) -> tuple[Sidecar, CheckpointFile]:
    """The checkpoint's sidecar once its weights are known to match it, and the weights file as
    checked now. The file is trusted without hashing when its size and mtime and the sidecar's
    sha256 are those of `known` (its last check); otherwise it is hashed, and weights that do
    not match their sidecar are refused in one line."""
    sidecar = read_sidecar(directory)
    weights = directory / WEIGHTS
    if not weights.exists():
        raise PieError(
            f"checkpoint {directory} has a sidecar but no {WEIGHTS}: delete the directory and"
            " run `pie train` to train it again"
        )
    stat = weights.stat()
    now = CheckpointFile(sidecar.model_id, stat.st_size, stat.st_mtime_ns, sidecar.sha256)
    if known is not None and now == known:
        return sidecar, now
    digest = sha256_file(weights)
    if digest != sidecar.sha256:
        raise PieError(
            f"checkpoint {directory}: {WEIGHTS} has sha256 {digest[:12]}, its {SIDECAR} says"
            f" {sidecar.sha256[:12]} (weights replaced without their sidecar?): put the matching"
            " pair back, or delete the directory and run `pie train` to train it again"
        )
    return sidecar, now


def reconcile(
    con: duckdb.DuckDBPyConnection, root: WorkRoot, model_id: str, registered: str | None
) -> tuple[Sidecar, bool] | None:
    """Make the database agree with the checkpoint of `model_id` on disk (see the module
    docstring): returns its verified sidecar and whether it was registered now (a new row, or
    a `models` row whose sha256, `registered`, differed); None when no sidecar is on disk. The
    caller holds the work root's writer lock and a writable connection."""
    directory = root.checkpoint(model_id)
    if not (directory / SIDECAR).exists():
        return None
    known = catalog.checkpoint_file(con, model_id)
    sidecar, file = verify(directory, known)
    if sidecar.model_id != model_id:
        raise PieError(
            f"checkpoint {directory} holds the sidecar of model {sidecar.model_id}, not"
            f" {model_id}: put its own files back, or delete the directory and run `pie train`"
        )
    changed = registered != sidecar.sha256
    if changed:
        catalog.register_model(con, sidecar)
    if changed or file != known:
        catalog.record_checkpoint_file(con, file)
    return sidecar, changed


def register(con: duckdb.DuckDBPyConnection, root: WorkRoot, sidecar: Sidecar) -> None:
    """Register a checkpoint `save` has just written: its `models` row and its weights file
    (size and mtime now, sha256 as `save` computed it), so the next check needs no hashing."""
    stat = (sidecar.directory(root) / WEIGHTS).stat()
    catalog.register_model(con, sidecar)
    catalog.record_checkpoint_file(
        con, CheckpointFile(sidecar.model_id, stat.st_size, stat.st_mtime_ns, sidecar.sha256)
    )


def load(
    directory: Path, device: str | torch.device = "cpu", mmap: bool = False
) -> tuple[nn.Module, Sidecar]:
    """Rebuild the model from its sidecar and load the verified weights, in eval mode.

    mmap: the model is built on the meta device and takes the weights memory-mapped from the
    file (`torch.load(mmap=True)`, `assign=True`): nothing is allocated on the heap, so a model
    dropped later gives its pages back (inference's model cache; freed heap blocks of this size
    would stay with the process).

    A compressed checkpoint (its sidecar's `compression["format"]`, written by `pie compress`)
    is rebuilt by `pie.compressed` and returned ready to run, a `compressed.Program` (int8
    programs stay on the CPU whatever `device`); mmap does not apply to it."""
    sidecar = read_sidecar(directory)
    weights = directory / WEIGHTS
    if sha256_file(weights) != sidecar.sha256:
        raise PieError(f"checkpoint {weights} does not match the sha256 in its sidecar")
    channels, size = sidecar.preprocess["channels"], sidecar.preprocess["size"]
    fmt = sidecar.compression.get("format")
    if fmt is not None:  # a compressed program (`pie.compressed`): rebuilt, not memory-mapped
        stock = create(sidecar.arch, sidecar.num_classes, channels, size)
        program = compressed.structure(stock, fmt, channels, size)
        state = OrderedDict(read_torch(weights, "checkpoint"))
        # the modules' state_dict versions, which a plain dict does not carry: a quantized
        # module reads a state_dict without them as its old layout
        state._metadata = program.state_dict()._metadata
        with compressed.quiet():
            program.load_state_dict(state)
        return compressed.runnable(program, fmt).to(device), sidecar
    with torch.device("meta" if mmap else "cpu"):
        model = create(sidecar.arch, sidecar.num_classes, channels, size)
    model.load_state_dict(read_torch(weights, "checkpoint", mmap=mmap), assign=mmap)
    return model.to(device).eval(), sidecar
