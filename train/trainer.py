"""Train one model of a population, top to bottom: data, model, optimiser, gradual pruning,
evaluation, checkpoint. Runs in a worker process and never touches the database.

Determinism: the torch seed is derived from (experiment, method, sparsity, seed), data order
and flips come from a generator seeded with it, and `threads` is fixed, so the same job gives
a bit-identical `model.pt` on CPU.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pie import checkpoints
from pie.config import to_dict
from pie.errors import PieError
from pie.images import Cached, Preprocess, load_cached, normalize
from pie.models import create, prunable_weights, resolve_device
from pie.paths import WorkRoot
from train.config import TrainConfig
from train.pruning import Pruner, Schedule, sparsity_report


@dataclass(frozen=True)
class Job:
    model_id: str
    method: str  # 'dense' for sparsity 0
    sparsity: float
    seed: int


def make_job(experiment: str, method: str, sparsity: float, seed: int) -> Job:
    if sparsity == 0:
        return Job(f"{experiment}-dense-seed{seed}", "dense", 0.0, seed)
    return Job(f"{experiment}-{method}-s{sparsity:g}-seed{seed}", method, sparsity, seed)


def torch_seed(experiment: str, job: Job) -> int:
    """Independent populations: each (method, sparsity, seed) gets its own stream."""
    text = f"{experiment}/{job.method}/{job.sparsity:g}/{job.seed}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


def preprocess(cfg: TrainConfig) -> Preprocess:
    return Preprocess(cfg.image_size, cfg.channels, cfg.mean, cfg.std)


def steps(cfg: TrainConfig, n_images: int) -> tuple[int, int]:
    """(steps per epoch, total steps): full batches only, at least one of each."""
    steps_per_epoch = max(1, n_images // cfg.batch_size)
    return steps_per_epoch, max(1, round(cfg.epochs * steps_per_epoch))


def schedule(cfg: TrainConfig, sparsity: float, steps_per_epoch: int) -> Schedule:
    """The pruning schedule in steps; steps are counted from 0 and masks update at the start
    of a step, so `prune_start_epoch = prune_end_epoch = 0` prunes to target before step 0."""
    return Schedule(
        sparsity,
        round(cfg.prune_start_epoch * steps_per_epoch),
        round(cfg.prune_end_epoch * steps_per_epoch),
        cfg.prune_frequency,
    )


def check_schedule(cfg: TrainConfig, n_images: int) -> None:
    """Refuse a config whose pruned models would end below target: the last mask update
    (at `end_step`, see `Schedule.is_update`) must fall on a step that runs."""
    if not any(s > 0 for s in cfg.sparsities):
        return
    steps_per_epoch, total = steps(cfg, n_images)
    end = schedule(cfg, 1.0, steps_per_epoch).end_step
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


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on conv and dense weights only, not on batch-norm parameters or biases."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    rest = [p for p in model.parameters() if p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


@torch.inference_mode()
def evaluate(model: torch.nn.Module, data: Cached, pre: Preprocess, device: torch.device) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(data), 1000):
        x = torch.from_numpy(np.array(data.pixels[start : start + 1000])).to(device)
        pred = model(normalize(x, pre)).argmax(1).cpu()
        correct += int((pred == torch.from_numpy(data.labels[start : start + 1000])).sum())
    return correct / len(data)


def train_one(
    root: WorkRoot, cfg: TrainConfig, job: Job, num_classes: int, label_space: str
) -> checkpoints.Sidecar:
    """Train, prune and save one checkpoint; returns its sidecar."""
    started = time.time()
    device = resolve_device(cfg.device)
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True, warn_only=device.type == "cuda")
    pre = preprocess(cfg)

    # data: decoded once (pie.images cache), held as uint8 on the device
    train = load_cached(root, cfg.dataset, pre)
    x = torch.from_numpy(np.array(train.pixels)).to(device)
    y = torch.from_numpy(train.labels).to(device)
    n, bs = len(x), cfg.batch_size
    steps_per_epoch, total = steps(cfg, n)

    # model, optimiser, pruner
    seed = torch_seed(cfg.experiment, job)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = create(cfg.arch, num_classes, cfg.channels, cfg.image_size).to(device)
    optimizer = torch.optim.SGD(
        param_groups(model, cfg.weight_decay), lr=0.0, momentum=cfg.momentum, nesterov=cfg.nesterov
    )
    plan = schedule(cfg, job.sparsity, steps_per_epoch)
    pruner = (
        Pruner(prunable_weights(model), job.method, plan, generator) if job.sparsity > 0 else None
    )

    # the loop: at the start of each step the pruner updates the masks (on schedule, step 0
    # included); during backward it zeroes the gradients of masked weights
    model.train()
    step, recent = 0, []
    while step < total:
        order = torch.randperm(n, generator=generator).to(device)
        for i in range(min(steps_per_epoch, total - step)):
            if pruner is not None:
                pruner.update(step, optimizer)
            idx = order[i * bs : (i + 1) * bs]
            xb = normalize(x[idx], pre)
            if cfg.augment:
                flip = (torch.rand(len(idx), generator=generator) < 0.5).to(device)
                xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(3), xb)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total, steps_per_epoch, cfg)
            loss = F.cross_entropy(model(xb), y[idx], label_smoothing=cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            recent = [*recent[-99:], loss.item()]

    test_top1 = evaluate(model, load_cached(root, cfg.eval_dataset, pre), pre, device)
    achieved, per_layer = sparsity_report(
        {k: v.detach() for k, v in prunable_weights(model).items()}
    )
    sidecar = checkpoints.Sidecar(
        model_id=job.model_id,
        experiment=cfg.experiment,
        arch=cfg.arch,
        num_classes=num_classes,
        label_space=label_space,
        method=job.method,
        target_sparsity=job.sparsity,
        achieved_sparsity=achieved,
        layer_sparsity=per_layer,
        seed=job.seed,
        torch_seed=seed,
        train_dataset=cfg.dataset,
        eval_dataset=cfg.eval_dataset,
        test_top1=test_top1,
        train_loss=sum(recent) / max(1, len(recent)),
        steps=total,
        schedule={
            "begin_step": plan.begin_step,
            "end_step": plan.end_step,
            "frequency": plan.frequency,
        },
        preprocess=pre.to_dict(),
        config=to_dict(cfg),
        torch_version=torch.__version__,
        device=str(device),
        seconds=round(time.time() - started, 2),
    )
    return checkpoints.save(root, model.cpu(), sidecar)
