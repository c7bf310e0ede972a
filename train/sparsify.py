"""Pruning a trained model after the fact (`pie compress`): one-shot magnitude masks, N:M
semi-structured masks, and an optional fine-tune with the masks held.

- One-shot magnitude: train's own rules (`train.masks`) on the parent's prunable weights
  (`pie.models.prunable_weights`, the training config's layer set): per layer, the round(s * n)
  smallest |w| of each tensor are zeroed; global, the same over all of them at once.
- N:M (e.g. 2:4, the pattern sparse tensor cores run): every prunable weight seen as
  (out channels, reduction) - a convolution's reduction is in_channels * kh * kw, the dimension
  torch's semi-structured sparsity groups along - and in each group of m consecutive weights
  along the reduction the n largest |w| are kept (ties: the lower index). A layer whose reduction
  is not a multiple of m is left dense and listed.
- Fine-tune: `steps` SGD steps on the parent's training set with its augmentation, momentum,
  weight decay and label smoothing at a constant learning rate `lr`; a masked weight gets no
  gradient and is set back to zero after each step, so the masks hold.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import torch
import torch.nn.functional as F

from pie import config
from pie.distributed import World
from pie.images import Preprocess, normalize
from pie.models import prunable_weights
from pie.paths import WorkRoot
from train import data, loaders
from train.config import TrainConfig
from train.masks import Masks, global_magnitude_masks, magnitude_masks
from train.recipe import param_groups


def trained_with(stored: dict[str, Any]) -> TrainConfig:
    """The training config a checkpoint's sidecar recorded, as a `TrainConfig` (keys it lacks at
    their defaults, keys pie no longer knows dropped)."""
    hints = typing.get_type_hints(TrainConfig)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(
        **{k: config.coerce(v, hints[k], k) for k, v in stored.items() if k in known}
    )


def prunable(model: torch.nn.Module, cfg: TrainConfig) -> dict[str, torch.nn.Parameter]:
    return prunable_weights(model, cfg.prune_layers, cfg.keep_layers)


def oneshot_masks(weights: dict[str, torch.Tensor], sparsity: float, rule: str) -> Masks:
    """Keep-masks of one-shot magnitude pruning, `rule` 'per_layer' or 'global'."""
    absolute = {n: w.detach() for n, w in weights.items()}
    if rule == "global":
        return global_magnitude_masks(absolute, sparsity)
    return magnitude_masks(absolute, sparsity)


def n_m_masks(weights: dict[str, torch.Tensor], n: int, m: int) -> tuple[Masks, list[str]]:
    """Keep-masks keeping the n largest |w| of every m consecutive weights along each weight's
    reduction dimension; and the names of the weights skipped (reduction not a multiple of m)."""
    masks, skipped = {}, []
    for name, w in weights.items():
        matrix = w.detach().reshape(w.shape[0], -1)
        if matrix.shape[1] % m:
            skipped.append(name)
            continue
        groups = matrix.abs().reshape(matrix.shape[0], -1, m)
        # stable descending order: of equal magnitudes the lower index is kept
        order = groups.argsort(dim=2, descending=True, stable=True)
        keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, order[..., :n], True)
        masks[name] = keep.reshape(w.shape)
    return masks, skipped


@torch.no_grad()
def apply(masks: Masks, weights: dict[str, torch.Tensor]) -> None:
    """Zero every masked weight, in place."""
    for name, keep in masks.items():
        weights[name].mul_(keep.to(weights[name].dtype))


def finetune(
    model: torch.nn.Module,
    masks: Masks,
    root: WorkRoot,
    cfg: TrainConfig,
    steps: int,
    lr: float,
    seed: int,
    device: torch.device,
) -> float:
    """`steps` steps of SGD on `cfg.dataset` with the masks held; returns the mean loss."""
    pre = Preprocess(cfg.image_size, cfg.channels, cfg.mean, cfg.std)
    shards = data.shard_set(root.shards(cfg.dataset), cfg.dataset)
    train = loaders.load(cfg, shards, pre, World(), seed, pin=False)
    model = model.to(device).train()
    weights = prunable(model, cfg)
    optimizer = torch.optim.SGD(
        param_groups(model, cfg.weight_decay),
        lr=lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
    )
    losses = []
    torch.manual_seed(seed)
    for x, y in train.batches(0, steps):
        x, y = x.to(device), y.to(device)
        loss = F.cross_entropy(model(normalize(x, pre)), y, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for name, keep in masks.items():
            weights[name].grad.mul_(keep.to(device))
        optimizer.step()
        apply({n: k.to(device) for n, k in masks.items()}, weights)
        losses.append(loss.item())
    model.cpu().eval()
    return sum(losses) / len(losses)
