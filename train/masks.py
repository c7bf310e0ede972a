"""The mask rules: which weights (or whole blocks of weights) a pruning method masks in a
set of weight tensors at a target sparsity. pie's rules (`magnitude_masks`,
`global_magnitude_masks`, `random_masks`, `random_cumulative_masks`) serve masked_weights =
"frozen", the reference's (`reference_magnitude_masks`, `reference_global_magnitude_masks`,
`bernoulli_masks`) masked_weights = "reference"; `train.pruning` says what each means for
training and when masks are recomputed. A mask is a bool tensor the shape of its weight, True
where the weight is kept.

Block masks (`block = (h, w)`, the reference's block height and width): each weight tensor is
seen as a matrix (out channels x everything else), cut into h x w blocks (edge blocks are
smaller), and whole blocks are pruned by their mean score (mean |w| for the magnitude methods,
a mean of uniform draws for the random ones; random_independent under "reference" draws one
Bernoulli per block); the target counts blocks, so the fraction of weights pruned differs from
it by at most the share of the smaller edge blocks. (1, 1) is per-weight pruning. (The
reference applied blocks to 2-D weights only; pie applies them to every tensor, both modes.)
"""

from __future__ import annotations

import math

import torch

Masks = dict[str, torch.Tensor]


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


def per_unit(scores: torch.Tensor, block: Block) -> torch.Tensor:
    """The scores a rule ranks: per weight, or the mean of each block (`block_means`)."""
    return scores if block == WEIGHT else block_means(scores, block)


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
    units = per_unit(scores, block)
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
    units = {n: per_unit(s, block) for n, s in scores.items()}
    flat = torch.cat([u.flatten() for u in units.values()])
    keep = smallest(flat, n_pruned(flat.numel(), sparsity))
    return split_global(keep, units, weights, block)


def split_global(
    keep: torch.Tensor, units: Masks, weights: dict[str, torch.Tensor], block: Block
) -> Masks:
    """A keep-mask over every tensor's units laid end to end, back to one mask per weight."""
    out, start = {}, 0
    for name, u in units.items():
        kept = keep[start : start + u.numel()].view_as(u)
        out[name] = kept if block == WEIGHT else expand_blocks(kept, weights[name], block)
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


def reference_k(n: int, sparsity: float) -> int:
    """How many units the reference keeps: round(n * (1 - s)) in float32, half to even."""
    kept = torch.tensor(n, dtype=torch.float32) * (1 - torch.tensor(sparsity, dtype=torch.float32))
    return int(torch.round(kept))


def at_least_kth_largest(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """The reference's magnitude rule: keep every score >= the k-th largest,
    k = `reference_k(n, sparsity)` (ties with it all kept); k = 0 keeps nothing."""
    flat = scores.flatten()
    k = reference_k(flat.numel(), sparsity)
    if k <= 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    return scores >= flat.kthvalue(flat.numel() - k + 1).values


def reference_magnitude_masks(
    weights: dict[str, torch.Tensor], sparsity: float, block: Block = WEIGHT
) -> Masks:
    """Per tensor, `at_least_kth_largest` of the raw |w| (of the mean |w| of each block)."""
    out = {}
    for name, w in weights.items():
        units = per_unit(w.abs(), block)
        keep = at_least_kth_largest(units, sparsity)
        out[name] = keep if block == WEIGHT else expand_blocks(keep, w, block)
    return out


def reference_global_magnitude_masks(
    weights: dict[str, torch.Tensor], sparsity: float, block: Block = WEIGHT
) -> Masks:
    """`at_least_kth_largest` over the raw |w| (block means) of all the tensors at once."""
    units = {n: per_unit(w.abs(), block) for n, w in weights.items()}
    keep = at_least_kth_largest(torch.cat([u.flatten() for u in units.values()]), sparsity)
    return split_global(keep, units, weights, block)


def bernoulli_masks(
    weights: dict[str, torch.Tensor],
    sparsity: float,
    generator: torch.Generator,
    block: Block = WEIGHT,
) -> Masks:
    """Each weight (block) kept independently with probability 1 - s: u < 1 - s, u uniform."""
    out = {}
    for name, w in weights.items():
        rows = w.shape[0]
        cols = w.numel() // rows
        shape = (
            w.shape if block == WEIGHT else (math.ceil(rows / block[0]), math.ceil(cols / block[1]))
        )
        keep = torch.rand(shape, generator=generator) < 1 - sparsity
        out[name] = (keep if block == WEIGHT else expand_blocks(keep, w, block)).to(w.device)
    return out
