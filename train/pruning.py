"""Pruning by masks: the gradual polynomial schedule and the mask rules.

Masks cover every prunable weight (`pie.models.prunable_weights`: all convolutions, every
dense layer but the classifier). What happens to a masked weight, exactly:

- the forward pass sees it as zero: the parameter itself holds 0 while masked, so the model
  stays a stock module and its `state_dict` is the checkpoint (zeros baked in, stock names);
- between mask updates it gets nothing from training: its gradient is zeroed in the backward
  pass (a hook once the gradient is accumulated) and its optimizer state (the momentum
  buffer) is zeroed when it is masked, so neither the loss, nor momentum, nor weight decay
  (which acts on the held 0) moves it;
- its last value before masking is kept by the pruner (`Pruner.stored`), as the reference's
  masked variable keeps its value; if a later mask update selects the weight again (only
  random_independent can do that) it comes back with that value and a zero momentum buffer.

Masks are recomputed at the start of step t (before its forward pass) whenever
`Schedule.is_update(t)`: at `begin_step` (step 0 included), every `frequency` steps after, and at
`end_step`, which brings every pruned model to its final target.

Methods (Hooker et al. 2019, after Zhu & Gupta 2017 and Gale et al. 2019):
- magnitude: per tensor, the smallest |w| are masked (each layer reaches the target);
- global_magnitude: one threshold over all prunable weights (layers end up uneven);
- random_independent: a fresh random mask at each update;
- random_cumulative: random, never un-pruning (the masked set only grows).
The magnitude methods score a masked weight below every live one, and the target only grows,
so they never un-prune either.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

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
        """Masks change at begin, every `frequency` steps after, and at end (the final target).

        Whatever the frequency, the last update is at `end_step` with the final sparsity, so a
        run whose last step is at or after `end_step` ends on target.
        """
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


def magnitude_scores(weights: dict[str, torch.Tensor], masks: Masks | None) -> Masks:
    """|w|, with already-masked weights at -1 so that they are dropped first."""
    if masks is None:
        return {n: w.abs() for n, w in weights.items()}
    return {n: torch.where(masks[n], w.abs(), -1.0) for n, w in weights.items()}


def magnitude_masks(
    weights: dict[str, torch.Tensor], sparsity: float, masks: Masks | None = None
) -> Masks:
    return {
        name: smallest(s, n_pruned(s.numel(), sparsity)).view_as(s)
        for name, s in magnitude_scores(weights, masks).items()
    }


def global_magnitude_masks(
    weights: dict[str, torch.Tensor], sparsity: float, masks: Masks | None = None
) -> Masks:
    scores = magnitude_scores(weights, masks)
    flat = torch.cat([s.flatten() for s in scores.values()])
    keep = smallest(flat, n_pruned(flat.numel(), sparsity))
    out, start = {}, 0
    for name, s in scores.items():
        out[name] = keep[start : start + s.numel()].view_as(s)
        start += s.numel()
    return out


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
    """Owns the masks of a model's prunable weights (see the module docstring for what a
    masked weight gets). Call `update(t, optimizer)` at the start of every step t, before the
    forward pass; `backward` masks the gradients (`mask_gradient`, a hook on each weight)."""

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
        self.stored: dict[str, torch.Tensor] = {n: w.detach().clone() for n, w in weights.items()}
        self.pruned: Masks = {n: ~m for n, m in self.masks.items()}
        for name, w in weights.items():
            w.register_post_accumulate_grad_hook(partial(self.mask_gradient, name))

    @torch.no_grad()
    def update(self, step: int, optimizer: torch.optim.Optimizer | None = None) -> bool:
        """On schedule, recompute the masks and apply them to the weights and to the
        optimizer's per-weight state (momentum); returns whether the masks changed."""
        if not self.schedule.is_update(step):
            return False
        for name, w in self.weights.items():  # the value each weight holds, masked or not
            self.stored[name] = torch.where(self.masks[name], w, self.stored[name])
        self.masks = self.compute(self.schedule.sparsity_at(step))
        self.pruned = {n: ~m for n, m in self.masks.items()}
        for name, w in self.weights.items():
            mask = self.masks[name]
            w.copy_(torch.where(mask, self.stored[name], 0.0))
            state = optimizer.state.get(w, {}) if optimizer is not None else {}
            for value in state.values():
                if isinstance(value, torch.Tensor) and value.shape == w.shape:
                    value.masked_fill_(self.pruned[name], 0.0)
        return True

    def mask_gradient(self, name: str, weight: torch.Tensor) -> None:
        """Hook run when backward has accumulated `weight.grad`: zero it where masked."""
        weight.grad.masked_fill_(self.pruned[name], 0.0)

    @torch.no_grad()
    def compute(self, sparsity: float) -> Masks:
        """New masks at `sparsity` from the effective weights (masked ones are 0)."""
        w = {n: p.detach() for n, p in self.weights.items()}
        if self.method == "magnitude":
            return magnitude_masks(w, sparsity, self.masks)
        if self.method == "global_magnitude":
            return global_magnitude_masks(w, sparsity, self.masks)
        if self.method == "random_independent":
            return random_masks(w, sparsity, self.generator)
        return random_cumulative_masks(w, self.masks, sparsity, self.generator)


def sparsity_report(weights: dict[str, torch.Tensor]) -> tuple[float, dict[str, float]]:
    """(overall, per-layer) fraction of exact zeros among the prunable weights."""
    zeros = {n: int((w == 0).sum()) for n, w in weights.items()}
    total = sum(w.numel() for w in weights.values())
    per_layer = {n: zeros[n] / weights[n].numel() for n in weights}
    return sum(zeros.values()) / max(total, 1), per_layer
