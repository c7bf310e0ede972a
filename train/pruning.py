"""Pruning by masks: the gradual polynomial schedule, the mask rules, and the two ways of holding
masked weights (`train.masked_weights`).

Masks cover every prunable weight (`pie.models.prunable_weights`: all convolutions, every
dense layer but the classifier). The target sparsity at step t follows Zhu & Gupta (2017):
s_t = s_f * (1 - (1 - p)^3), p = clip((t - begin_step) / (end_step - begin_step), 0, 1).
Masks are recomputed at the start of a step, before its forward pass.

masked_weights = "frozen" (`Pruner`, the default): a masked weight is held at zero.
- The forward pass sees it as zero: the parameter itself holds 0 while masked, so the model
  stays a stock module and its `state_dict` is the checkpoint (zeros baked in, stock names).
- Between mask updates it gets nothing from training: its gradient is zeroed in the backward
  pass (a hook once the gradient is accumulated) and its optimizer state (the momentum
  buffer) is zeroed when it is masked, so neither the loss, nor momentum, nor weight decay
  (which acts on the held 0) moves it.
- Its last value before masking is kept by the pruner (`Pruner.stored`); if a later mask
  update selects the weight again (only random_independent can do that) it comes back with
  that value and a zero momentum buffer.
- Updates fire at `begin_step` (step 0 included), every `frequency` steps after, and at
  `end_step`, which brings every pruned model to its final target (`Schedule.is_update`).
- magnitude: per tensor, the n_pruned = round(s * n) smallest |w| are masked (ties: lower
  index first); global_magnitude: the same over all prunable weights at once (layers end up
  uneven). Masked weights score below every live one and the target only grows, so the
  magnitude methods never un-prune. random_independent: a fresh uniformly random set of exactly
  round(s * n) weights per tensor at each update; random_cumulative: the masked set grows at
  random to round(s * n), never un-pruning. Kept weights are left as they are.
- Weight decay (`train.recipe.param_groups`) covers conv and dense weights, not biases or
  batch-norm parameters.

masked_weights = "reference" (`ReferencePruner`): the study's TF pruning (`pruning_tools/
pruning.py` of Hooker et al.), whose masked variables keep training.
- The forward pass uses `w * mask`: `torch.nn.utils.parametrize` replaces each pruned
  module's `weight` by `original * mask` (`Masked`); `original` is the raw weight, the one
  trainable parameter (the same tensor object as before, so the optimizer holds it), and
  `mask` a float buffer. The loss gradient of the raw weight is `mask * dL/dweight`.
- The raw weight stays trainable: weight decay and the momentum buffer keep moving a masked
  raw weight (the loss gradient alone is zero for it); nothing is zeroed in the optimizer.
  Weight decay covers every parameter but batch norm's, biases (the classifier's) included.
- Each update recomputes the masks from the raw weights, so a masked weight comes back when
  its raw |w| is large enough again: magnitude keeps, per tensor, every raw |w| >= the k-th
  largest, k = round(n * (1 - s)) computed in float32 and rounded half to even as tf.round
  (ties with the k-th all kept; k = 0 keeps nothing); global_magnitude applies the same rule
  over all prunable weights at once. random_independent draws `tf.nn.dropout(ones, keep_prob
  = 1 - s)`: each weight independently kept with probability 1 - s, the kept entries of the
  mask being 1 / (1 - s), so kept weights are scaled up and the masked count is random around
  s * n. random_cumulative keeps pie's rule above (the reference's code for it ranks the old
  mask the other way round from its comment, so it is not reproduced).
- An update fires at step t when begin_step <= t <= end_step and last_update + frequency <= t,
  then last_update = t; last_update starts at 0. So the first update is at max(begin_step,
  frequency), the next ones every `frequency` steps, and none is forced at `end_step`: when
  end_step - first is not a multiple of `frequency`, training ends at the sparsity of the last
  update, slightly under the target (`Schedule.update_steps`).
- When training ends (`finish`), the parametrizations are removed with `w * mask` left in the
  stock parameter: the checkpoint is a plain `state_dict` whose masked weights are 0 and, for
  random_independent, whose kept weights carry the 1 / (1 - s) factor, so the stock model
  computes exactly the training forward pass.
- The resumable state holds the raw weights (the model's state_dict under parametrization),
  the masks, their scale and last_update (`ReferencePruner.state_dict`).

Under torchrun, both pruners take rank 0's masks (`share`). With "reference" the averaged
gradient needs no masking: each rank's raw-weight gradient is already `mask * dL/dweight`.

Methods (Hooker et al. 2019, after Zhu & Gupta 2017 and Gale et al. 2019): magnitude,
global_magnitude, random_independent, random_cumulative, as above; the rules themselves, and
block masks (`block`), are in `train.masks`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch.nn.utils import parametrize

from train.config import METHODS
from train.masks import (
    WEIGHT,
    Block,
    Masks,
    bernoulli_masks,
    global_magnitude_masks,
    magnitude_masks,
    random_cumulative_masks,
    random_masks,
    reference_global_magnitude_masks,
    reference_magnitude_masks,
)


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
    reference: bool = False  # the reference's firing rule (masked_weights = "reference")

    def sparsity_at(self, step: int) -> float:
        return polynomial_sparsity(step, self.final_sparsity, self.begin_step, self.end_step)

    def is_update(self, step: int, last_update: int = 0) -> bool:
        """Whether masks are recomputed at the start of `step`, in [begin_step, end_step].

        pie's rule: at begin, every `frequency` steps after, and at end (the final target), so
        a run whose last step is at or after `end_step` ends on target. The reference's rule:
        when `last_update + frequency <= step` (`last_update`: the step of the previous update,
        0 before the first), with no update forced at `end_step`.
        """
        if not self.begin_step <= step <= self.end_step:
            return False
        if self.reference:
            return last_update + self.frequency <= step
        return (step - self.begin_step) % self.frequency == 0 or step == self.end_step

    def update_steps(self) -> list[int]:
        """Every step at which `is_update` fires, each update moving `last_update` to its step."""
        if self.reference:
            first = max(self.begin_step, self.frequency)
            return list(range(first, self.end_step + 1, self.frequency))
        every = range(self.begin_step, self.end_step + 1, self.frequency)
        return sorted({*every, self.end_step}) if self.begin_step <= self.end_step else []


class Pruner:
    """masked_weights = "frozen": owns the masks of a model's prunable weights (see the module
    docstring for what a masked weight gets). Call `update(t, optimizer)` at the start of every
    step t, before the forward pass; `backward` masks the gradients (`mask_gradient`, a hook on
    each weight)."""

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
        if schedule.reference:
            raise ValueError("masked_weights = frozen takes pie's firing rule, not the reference's")
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

    def finish(self) -> None:
        """Nothing to do: the parameters already hold the masked weights as zeros."""

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


class Masked(torch.nn.Module):
    """The parametrization `weight = original * mask` (`torch.nn.utils.parametrize`); the mask
    is a float buffer left out of the state_dict (the pruner's state holds it)."""

    def __init__(self, like: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", torch.ones_like(like), persistent=False)

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return original * self.mask


class ReferencePruner:
    """masked_weights = "reference" (see the module docstring): registers `Masked` on every
    prunable weight of `model` (a module's `weight`, or attention's `in_proj_weight`); call
    `update(t)` at the start of every step t, before the forward pass, and `finish()` after the
    last step to bake `w * mask` into the weights."""

    def __init__(
        self,
        model: torch.nn.Module,
        weights: dict[str, torch.nn.Parameter],
        method: str,
        schedule: Schedule,
        generator: torch.Generator,
        block: Block = WEIGHT,
        share: Callable[[Masks], Masks] | None = None,
    ):
        if method not in METHODS:
            raise ValueError(f"unknown pruning method {method!r} (known: {', '.join(METHODS)})")
        if not schedule.reference:
            raise ValueError("masked_weights = reference takes the reference's firing rule")
        self.method = method
        self.schedule = schedule
        self.generator = generator
        self.block = tuple(block)
        self.share = share  # under torchrun: rank 0's masks, broadcast to every rank
        # (module, attribute) of each weight: `weight`, or e.g. attention's `in_proj_weight`
        self.owners = {
            n: (model.get_submodule(n.rpartition(".")[0]), n.rpartition(".")[2]) for n in weights
        }
        self.factors: dict[str, torch.Tensor] = {}
        for name, (module, attr) in self.owners.items():
            masked = Masked(getattr(module, attr))
            parametrize.register_parametrization(module, attr, masked)
            self.factors[name] = masked.mask
        # the raw weights: the parameters the optimizer already holds
        self.weights = {
            n: module.parametrizations[attr].original for n, (module, attr) in self.owners.items()
        }
        self.masks: Masks = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
        self.scale = 1.0  # the value of a kept entry: 1 / (1 - s) for random_independent
        self.last_update = 0

    @torch.no_grad()
    def update(self, step: int, optimizer: torch.optim.Optimizer | None = None) -> bool:
        """On schedule, recompute the masks from the raw weights; returns whether it did.
        The optimizer's state is left alone (momentum keeps moving masked raw weights)."""
        if not self.schedule.is_update(step, self.last_update):
            return False
        sparsity = self.schedule.sparsity_at(step)
        self.masks = self.compute(sparsity)
        if self.share is not None:
            self.masks = self.share(self.masks)
        self.scale = 1 / (1 - sparsity) if self.method == "random_independent" else 1.0
        self.last_update = step
        self.apply()
        return True

    @torch.no_grad()
    def apply(self) -> None:
        """Write the masks (kept entries = `scale`) into the parametrizations' buffers."""
        for name, factor in self.factors.items():
            factor.copy_(self.masks[name].to(factor.dtype) * self.scale)

    def mask_gradients(self) -> None:
        """Nothing to do: each raw gradient is already `mask * dL/dweight`, on every rank."""

    @torch.no_grad()
    def finish(self) -> None:
        """Remove the parametrizations, leaving `w * mask` in each stock `weight` parameter
        (the same tensor object, so the optimizer and the model still agree)."""
        for module, attr in self.owners.values():
            parametrize.remove_parametrizations(module, attr, leave_parametrized=True)

    def state_dict(self) -> dict:
        """What a resumed job needs besides the raw weights (in the model's state_dict)."""
        return {"masks": dict(self.masks), "scale": self.scale, "last_update": self.last_update}

    def load_state_dict(self, state: dict) -> None:
        self.masks = {n: state["masks"][n].to(w.device) for n, w in self.weights.items()}
        self.scale = float(state["scale"])
        self.last_update = int(state["last_update"])
        self.apply()

    @torch.no_grad()
    def compute(self, sparsity: float) -> Masks:
        """New keep-masks at `sparsity` from the raw weights (see the module docstring)."""
        w = {n: p.detach() for n, p in self.weights.items()}
        if self.method == "magnitude":
            return reference_magnitude_masks(w, sparsity, self.block)
        if self.method == "global_magnitude":
            return reference_global_magnitude_masks(w, sparsity, self.block)
        if self.method == "random_independent":
            return bernoulli_masks(w, sparsity, self.generator, self.block)
        return random_cumulative_masks(w, self.masks, sparsity, self.generator, self.block)


def sparsity_report(weights: dict[str, torch.Tensor]) -> tuple[float, dict[str, float]]:
    """(overall, per-layer) fraction of exact zeros among the prunable weights."""
    zeros = {n: int((w == 0).sum()) for n, w in weights.items()}
    total = sum(w.numel() for w in weights.values())
    per_layer = {n: zeros[n] / weights[n].numel() for n in weights}
    return sum(zeros.values()) / max(total, 1), per_layer
