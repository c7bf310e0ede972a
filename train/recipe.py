"""A job's recipe, as functions of its config: the pruning schedule in steps, the learning rate
at each step, which parameters take weight decay; and the refusals of a config that cannot run
to its end or on this world and device, with the choice of deterministic algorithms. The
training loop (`train.trainer`), `pie train`'s checks before it starts (`train.checks`) and
`pie plan` use these same functions.
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from pie.distributed import World
from pie.errors import PieError
from train.config import TrainConfig
from train.data import steps
from train.pruning import Schedule


def schedule(cfg: TrainConfig, sparsity: float, steps_per_epoch: int) -> Schedule:
    """The pruning schedule in steps; steps are counted from 0 and masks update at the start
    of a step, so `prune_start_epoch = prune_end_epoch = 0` prunes to target before step 0
    (under masked_weights = "frozen"; "reference" fires by the reference's rule)."""
    return Schedule(
        sparsity,
        round(cfg.prune_start_epoch * steps_per_epoch),
        round(cfg.prune_end_epoch * steps_per_epoch),
        cfg.prune_frequency,
        reference=cfg.masked_weights == "reference",
    )


def check_schedule(cfg: TrainConfig, n_images: int) -> None:
    """Refuse a config whose pruned models would end below target: the last mask update
    (at `end_step` under "frozen", see `Schedule.update_steps`) must fall on a step that runs;
    under "reference", some update must fire at all."""
    if not any(s > 0 for s in cfg.sparsities):
        return
    steps_per_epoch, total = steps(cfg, n_images)
    plan = schedule(cfg, 1.0, steps_per_epoch)
    updates = plan.update_steps()
    if not updates:
        raise PieError(
            f"no mask update would fire: under masked_weights = reference an update needs a step"
            f" t in [{plan.begin_step}, {plan.end_step}] (prune_start_epoch, prune_end_epoch) with"
            f" t >= prune_frequency = {plan.frequency} (last_update starts at 0); widen the"
            " pruning epochs or lower prune_frequency"
        )
    end = updates[-1]
    if end > total - 1:
        raise PieError(
            f"prune_end_epoch = {cfg.prune_end_epoch:g} puts the last mask update at step {end}, "
            f"but training stops after step {total - 1} ({cfg.epochs:g} epochs x "
            f"{steps_per_epoch} steps of {cfg.batch_size} images): the pruned models would end "
            "below their target sparsity; lower prune_end_epoch or raise epochs"
        )


def learning_rate(step: int, total: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine to zero or x0.1 at each milestone epoch."""
    base = cfg.lr * cfg.batch_size / 256
    warmup = round(cfg.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return base * (step + 1) / warmup
    if cfg.lr_schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return base * 0.5 * (1 + math.cos(math.pi * progress))
    passed = sum(step >= m * steps_per_epoch for m in cfg.lr_milestones)
    return base * 0.1**passed


BATCH_NORMS = (
    torch.nn.BatchNorm1d,
    torch.nn.BatchNorm2d,
    torch.nn.BatchNorm3d,
    torch.nn.SyncBatchNorm,
)


def param_groups(
    model: torch.nn.Module, weight_decay: float, masked_weights: str = "frozen"
) -> list[dict[str, Any]]:
    """Weight decay on conv and dense weights only, not on batch-norm parameters or biases
    ("frozen"); or on every parameter but batch norm's, biases included (masked_weights =
    "reference": the reference's l2 loss covers every variable but batch norm's)."""
    if masked_weights == "reference":
        norms = {
            id(p) for m in model.modules() if isinstance(m, BATCH_NORMS) for p in m.parameters()
        }
        decay = [p for p in model.parameters() if id(p) not in norms]
    else:
        decay = [p for p in model.parameters() if p.ndim > 1]
    chosen = {id(p) for p in decay}
    rest = [p for p in model.parameters() if id(p) not in chosen]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def check_world(cfg: TrainConfig, world: World) -> None:
    """The global batch must split evenly over the processes."""
    if cfg.batch_size % world.size:
        raise PieError(
            f"batch_size = {cfg.batch_size} (the global batch) does not divide by the "
            f"{world.size} processes of this run: pick a batch or a process count that divide"
        )


def check_device(cfg: TrainConfig, device: torch.device) -> None:
    """GPU-only options asked for on a CPU run are refused, not ignored."""
    if device.type == "cuda":
        return
    asked = [
        name
        for name, on in (
            ("precision = bf16", cfg.precision == "bf16"),
            ("channels_last", cfg.channels_last),
            ("compile", cfg.compile),
        )
        if on
    ]
    if asked:
        raise PieError(f"{', '.join(asked)} need a CUDA device; this run trains on {device}")


CUBLAS_DETERMINISTIC = (":4096:8", ":16:8")  # the values cuBLAS takes for reproducible results


def determinism(cfg: TrainConfig, device: torch.device) -> bool:
    """Set torch's algorithm choice for a run on `device`; returns whether only deterministic
    algorithms run (recorded in the sidecar).

    CPU: always deterministic algorithms (what makes a CPU `model.pt` bit-identical, resumed
    or not). CUDA: by default the fastest kernels, cudnn.benchmark on (it times the convolution
    algorithms for each new input shape and keeps the fastest) and no determinism asked; with
    `train.deterministic` torch's deterministic algorithms only (an operation that has none
    fails), cudnn.deterministic on, benchmark off, and CUBLAS_WORKSPACE_CONFIG=:4096:8, which
    must be in the environment before CUDA starts: set here if unset, refused in one line if
    CUDA already started without it."""
    if device.type != "cuda":
        torch.use_deterministic_algorithms(True)
        return True
    if cfg.deterministic:
        if "CUBLAS_WORKSPACE_CONFIG" not in os.environ and torch.cuda.is_initialized():
            raise PieError(
                "train.deterministic needs CUBLAS_WORKSPACE_CONFIG=:4096:8 before CUDA starts, "
                "and CUDA started without it: set it in the environment"
            )
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC[0])
        if os.environ["CUBLAS_WORKSPACE_CONFIG"] not in CUBLAS_DETERMINISTIC:
            raise PieError(
                f"train.deterministic needs CUBLAS_WORKSPACE_CONFIG set to one of "
                f"{', '.join(CUBLAS_DETERMINISTIC)}, the environment has "
                f"{os.environ['CUBLAS_WORKSPACE_CONFIG']!r}"
            )
    torch.backends.cudnn.deterministic = cfg.deterministic
    torch.backends.cudnn.benchmark = not cfg.deterministic
    torch.use_deterministic_algorithms(cfg.deterministic)
    return cfg.deterministic
