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

Block masks (`block = (h, w)`, the reference's block height and width): each weight tensor is
seen as a matrix (out channels x everything else), cut into h x w blocks (edge blocks are
smaller), and whole blocks are pruned by their mean score (mean |w| for the magnitude methods,
a mean of uniform draws for the random ones); the target counts blocks, so the fraction of
weights pruned differs from it by at most the share of the smaller edge blocks. (1, 1) is
per-weight pruning.
"""

from __future__ import annotations

import math
from collections.abc import Callable
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
    """A flat keep-mask that drops the k smallest scores (ties: lower index dropped first).

    Selection, not a sort: the k-th smallest value is the threshold, everything below it is
    dropped, and of the values equal to it the lowest-index ones make up the count (what a
    stable sort would drop)."""
    flat = scores.flatten()
    keep = torch.ones(flat.numel(), dtype=torch.bool, device=flat.device)
    if k <= 0:
        return keep
    if k >= flat.numel():
        return ~keep
    threshold = flat.kthvalue(k).values
    below = flat < threshold
    tied = torch.nonzero(flat == threshold).flatten()
    keep[below] = False
    keep[tied[: k - int(below.sum())]] = False
    return keep


Block = tuple[int, int]
WEIGHT: Block = (1, 1)


def block_means(scores: torch.Tensor, block: Block) -> torch.Tensor:
    """Mean score of each h x w block of `scores` seen as (out channels, rest)."""
    h, w = block
    matrix = scores.reshape(scores.shape[0], -1)
    rows, cols = matrix.shape
    shape = (math.ceil(rows / h) * h, math.ceil(cols / w) * w)
    sums, counts = matrix.new_zeros(shape), matrix.new_zeros(shape)
    sums[:rows, :cols], counts[:rows, :cols] = matrix, 1.0
    split = (shape[0] // h, h, shape[1] // w, w)
    return sums.view(split).sum((1, 3)) / counts.view(split).sum((1, 3))


def expand_blocks(keep: torch.Tensor, like: torch.Tensor, block: Block) -> torch.Tensor:
    """A block keep-mask back to the shape of the weight tensor `like`."""
    h, w = block
    matrix = like.reshape(like.shape[0], -1)
    full = keep.repeat_interleave(h, 0).repeat_interleave(w, 1)
    return full[: matrix.shape[0], : matrix.shape[1]].reshape(like.shape)


def keep_mask(
    scores: torch.Tensor, sparsity: float, block: Block = WEIGHT, never_unprune: bool = False
) -> torch.Tensor:
    """Drop the lowest-scoring units (weights or blocks) of one tensor down to `sparsity`;
    never_unprune: at least the units already scored negative (masked) stay dropped."""
    units = scores if block == WEIGHT else block_means(scores, block)
    k = n_pruned(units.numel(), sparsity)
    if never_unprune:
        k = max(k, int((units < 0).sum()))
    keep = smallest(units, k).view_as(units)
    return keep if block == WEIGHT else expand_blocks(keep, scores, block)


def magnitude_scores(weights: dict[str, torch.Tensor], masks: Masks | None) -> Masks:
    """|w|, with already-masked weights at -1 so that they are dropped first."""
    if masks is None:
        return {n: w.abs() for n, w in weights.items()}
    return {n: torch.where(masks[n], w.abs(), -1.0) for n, w in weights.items()}


def magnitude_masks(
    weights: dict[str, torch.Tensor],
    sparsity: float,
    masks: Masks | None = None,
    block: Block = WEIGHT,
) -> Masks:
    return {
        name: keep_mask(s, sparsity, block) for name, s in magnitude_scores(weights, masks).items()
    }


def global_magnitude_masks(
    weights: dict[str, torch.Tensor],
    sparsity: float,
    masks: Masks | None = None,
    block: Block = WEIGHT,
) -> Masks:
    scores = magnitude_scores(weights, masks)
    units = {n: s if block == WEIGHT else block_means(s, block) for n, s in scores.items()}
    flat = torch.cat([u.flatten() for u in units.values()])
    keep = smallest(flat, n_pruned(flat.numel(), sparsity))
    out, start = {}, 0
    for name, u in units.items():
        kept = keep[start : start + u.numel()].view_as(u)
        out[name] = kept if block == WEIGHT else expand_blocks(kept, scores[name], block)
        start += u.numel()
    return out


def random_masks(
    weights: dict[str, torch.Tensor],
    sparsity: float,
    generator: torch.Generator,
    block: Block = WEIGHT,
) -> Masks:
    return {
        name: keep_mask(torch.rand(w.shape, generator=generator), sparsity, block).to(w.device)
        for name, w in weights.items()
    }


def random_cumulative_masks(
    weights: dict[str, torch.Tensor],
    masks: Masks,
    sparsity: float,
    generator: torch.Generator,
    block: Block = WEIGHT,
) -> Masks:
    """Grow each tensor's masked set at random to the target; never un-prune."""
    out = {}
    for name, w in weights.items():
        scores = torch.rand(w.shape, generator=generator).to(w.device)
        scores[~masks[name]] = -1.0  # already pruned: stays pruned (lowest scores go first)
        out[name] = keep_mask(scores, sparsity, block, never_unprune=True)
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
        block: Block = WEIGHT,
        share: Callable[[Masks], Masks] | None = None,
    ):
        if method not in METHODS:
            raise ValueError(f"unknown pruning method {method!r} (known: {', '.join(METHODS)})")
        self.weights = weights
        self.method = method
        self.schedule = schedule
        self.generator = generator
        self.block = tuple(block)
        self.share = share  # under torchrun: rank 0's masks, broadcast to every rank
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
        if self.share is not None:
            self.masks = self.share(self.masks)
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
    def mask_gradients(self) -> None:
        """Zero every masked gradient again: under DistributedDataParallel the averaged
        gradient is written into `.grad` after the hooks ran, so the trainer calls this
        between backward and the optimizer step."""
        for name, w in self.weights.items():
            if w.grad is not None:
                w.grad.masked_fill_(self.pruned[name], 0.0)

    def state_dict(self) -> dict[str, Masks]:
        """What a resumed job needs: the masks and the values kept for masked weights (the
        generator's state is saved by the trainer with the other RNGs)."""
        return {"masks": dict(self.masks), "stored": dict(self.stored)}

    def load_state_dict(self, state: dict[str, Masks]) -> None:
        self.masks = {n: state["masks"][n].to(w.device) for n, w in self.weights.items()}
        self.stored = {n: state["stored"][n].to(w.device) for n, w in self.weights.items()}
        self.pruned = {n: ~m for n, m in self.masks.items()}

    @torch.no_grad()
    def compute(self, sparsity: float) -> Masks:
        """New masks at `sparsity` from the effective weights (masked ones are 0)."""
        w = {n: p.detach() for n, p in self.weights.items()}
        if self.method == "magnitude":
            return magnitude_masks(w, sparsity, self.masks, self.block)
        if self.method == "global_magnitude":
            return global_magnitude_masks(w, sparsity, self.masks, self.block)
        if self.method == "random_independent":
            return random_masks(w, sparsity, self.generator, self.block)
        return random_cumulative_masks(w, self.masks, sparsity, self.generator, self.block)


def sparsity_report(weights: dict[str, torch.Tensor]) -> tuple[float, dict[str, float]]:
    """(overall, per-layer) fraction of exact zeros among the prunable weights."""
    zeros = {n: int((w == 0).sum()) for n, w in weights.items()}
    total = sum(w.numel() for w in weights.values())
    per_layer = {n: zeros[n] / weights[n].numel() for n in weights}
    return sum(zeros.values()) / max(total, 1), per_layer
