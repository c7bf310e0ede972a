"""Pruning by masks: the gradual polynomial schedule and the mask rules.

Masks cover every prunable weight (`pie.models.prunable_weights`: all convolutions, every
dense layer but the classifier). They are recomputed every `frequency` steps between
`begin_step` and `end_step` and re-applied after every optimizer step, so the zeros are in
the weights themselves: a checkpoint is a plain state_dict that loads into the stock model.

Methods (Hooker et al. 2019, after Zhu & Gupta 2017 and Gale et al. 2019):
- magnitude: per tensor, the smallest |w| are masked (each layer reaches the target);
- global_magnitude: one threshold over all prunable weights (layers end up uneven);
- random_independent: a fresh random mask at each update;
- random_cumulative: random, never un-pruning (the masked set only grows).
Masked weights are zero, so magnitude pruning never revives them either.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from train.config import METHODS

Masks = dict[str, torch.Tensor]


def polynomial_sparsity(
    step: int, final: float, begin: int, end: int, initial: float = 0.0, power: int = 3
) -> float:
    """Zhu & Gupta: s_t = s_f + (s_i - s_f) * (1 - p)^3, p = clip((t - begin) / (end - begin))."""
    p = 1.0 if end <= begin else min(max((step - begin) / (end - begin), 0.0), 1.0)
    return final + (initial - final) * (1.0 - p) ** power


@dataclass(frozen=True)
class Schedule:
    final_sparsity: float
    begin_step: int
    end_step: int
    frequency: int

    def sparsity_at(self, step: int) -> float:
        return polynomial_sparsity(step, self.final_sparsity, self.begin_step, self.end_step)

    def is_update(self, step: int) -> bool:
        """Masks change at begin, every `frequency` steps after, and at end (the final target)."""
        if not self.begin_step <= step <= self.end_step:
            return False
        return (step - self.begin_step) % self.frequency == 0 or step == self.end_step


def n_pruned(numel: int, sparsity: float) -> int:
    return min(numel, round(sparsity * numel))


def smallest(scores: torch.Tensor, k: int) -> torch.Tensor:
    """A flat keep-mask that drops the k smallest scores (ties: lower index dropped first)."""
    keep = torch.ones(scores.numel(), dtype=torch.bool, device=scores.device)
    if k > 0:
        order = torch.sort(scores.flatten(), stable=True).indices
        keep[order[:k]] = False
    return keep


def magnitude_masks(weights: dict[str, torch.Tensor], sparsity: float) -> Masks:
    return {
        name: smallest(w.abs(), n_pruned(w.numel(), sparsity)).view_as(w)
        for name, w in weights.items()
    }


def global_magnitude_masks(weights: dict[str, torch.Tensor], sparsity: float) -> Masks:
    flat = torch.cat([w.abs().flatten() for w in weights.values()])
    keep = smallest(flat, n_pruned(flat.numel(), sparsity))
    masks, start = {}, 0
    for name, w in weights.items():
        masks[name] = keep[start : start + w.numel()].view_as(w)
        start += w.numel()
    return masks


def random_masks(
    weights: dict[str, torch.Tensor], sparsity: float, generator: torch.Generator
) -> Masks:
    return {
        name: smallest(torch.rand(w.shape, generator=generator), n_pruned(w.numel(), sparsity))
        .view_as(w)
        .to(w.device)
        for name, w in weights.items()
    }


def random_cumulative_masks(
    weights: dict[str, torch.Tensor], masks: Masks, sparsity: float, generator: torch.Generator
) -> Masks:
    """Grow each tensor's masked set at random to the target; never un-prune."""
    out = {}
    for name, w in weights.items():
        scores = torch.rand(w.shape, generator=generator).to(w.device)
        scores[~masks[name]] = -1.0  # already pruned: stays pruned (lowest scores go first)
        k = max(n_pruned(w.numel(), sparsity), int((~masks[name]).sum()))
        out[name] = smallest(scores, k).view_as(w)
    return out


class Pruner:
    """Owns the masks of a model's prunable weights; call `step(t)` after each optimizer step."""

    def __init__(
        self,
        weights: dict[str, torch.nn.Parameter],
        method: str,
        schedule: Schedule,
        generator: torch.Generator,
    ):
        if method not in METHODS:
            raise ValueError(f"unknown pruning method {method!r} (known: {', '.join(METHODS)})")
        self.weights = weights
        self.method = method
        self.schedule = schedule
        self.generator = generator
        self.masks: Masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}

    @torch.no_grad()
    def step(self, step: int) -> None:
        if self.schedule.is_update(step):
            self.masks = self.compute(self.schedule.sparsity_at(step))
        self.apply()

    @torch.no_grad()
    def compute(self, sparsity: float) -> Masks:
        w = {n: p.detach() for n, p in self.weights.items()}
        if self.method == "magnitude":
            return magnitude_masks(w, sparsity)
        if self.method == "global_magnitude":
            return global_magnitude_masks(w, sparsity)
        if self.method == "random_independent":
            return random_masks(w, sparsity, self.generator)
        return random_cumulative_masks(w, self.masks, sparsity, self.generator)

    @torch.no_grad()
    def apply(self) -> None:
        for name, p in self.weights.items():
            p.mul_(self.masks[name])


def sparsity_report(weights: dict[str, torch.Tensor]) -> tuple[float, dict[str, float]]:
    """(overall, per-layer) fraction of exact zeros among the prunable weights."""
    zeros = {n: int((w == 0).sum()) for n, w in weights.items()}
    total = sum(w.numel() for w in weights.values())
    per_layer = {n: zeros[n] / weights[n].numel() for n in weights}
    return sum(zeros.values()) / max(total, 1), per_layer
