"""The polynomial schedule, the mask rules and the pruner, on hand-made tensors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from pie.models import create, prunable_weights
from train.masks import global_magnitude_masks, magnitude_masks, random_cumulative_masks
from train.pruning import Pruner, ReferencePruner, Schedule, polynomial_sparsity, sparsity_report
from train.recipe import param_groups


@pytest.mark.parametrize(
    ("step", "expected"),
    [
        (0, 0.0),  # before begin
        (100, 0.0),  # p = 0
        (150, 0.8 * (1 - 0.5**3)),  # p = .5: .8 + (0 - .8) * .125 = .7
        (175, 0.8 * (1 - 0.25**3)),
        (200, 0.8),  # p = 1
        (500, 0.8),  # after end
    ],
)
def test_polynomial_schedule(step, expected):
    assert polynomial_sparsity(step, 0.8, begin=100, end=200) == pytest.approx(expected)


def test_schedule_update_steps_end_on_the_final_target():
    s = Schedule(final_sparsity=0.9, begin_step=10, end_step=35, frequency=10)
    assert [t for t in range(50) if s.is_update(t)] == [10, 20, 30, 35]
    assert s.sparsity_at(35) == pytest.approx(0.9)


def test_magnitude_masks_drop_the_smallest_per_tensor():
    w = {"a": torch.tensor([[0.5, -0.1], [0.3, -0.9]]), "b": torch.tensor([1.0, -2.0, 0.05, 3.0])}
    masks = magnitude_masks(w, 0.5)
    assert masks["a"].tolist() == [[True, False], [False, True]]
    assert masks["b"].tolist() == [False, True, False, True]


def test_magnitude_ties_go_in_index_order():
    masks = magnitude_masks({"a": torch.tensor([0.2, 0.2, 0.2, 0.2])}, 0.5)
    assert masks["a"].tolist() == [False, False, True, True]


def test_global_magnitude_uses_one_threshold():
    w = {"a": torch.tensor([0.1, 0.2, 0.3]), "b": torch.tensor([5.0, 6.0, 0.05])}
    masks = global_magnitude_masks(w, 0.5)  # 3 of 6 smallest: .05, .1, .2
    assert masks["a"].tolist() == [False, False, True]
    assert masks["b"].tolist() == [True, True, False]


def test_random_cumulative_never_unprunes():
    g = torch.Generator().manual_seed(0)
    w = {"a": torch.randn(100)}
    masks = {"a": torch.ones(100, dtype=torch.bool)}
    history = []
    for s in (0.2, 0.5, 0.8):
        masks = random_cumulative_masks(w, masks, s, g)
        history.append(masks["a"].clone())
        assert int((~masks["a"]).sum()) == round(s * 100)
    for before, after in itertools.pairwise(history):
        assert not (after & ~before).any()  # nothing pruned comes back


@pytest.mark.parametrize(
    "method", ["magnitude", "global_magnitude", "random_independent", "random_cumulative"]
)
def test_pruner_reaches_the_target_and_masked_weights_stay_zero(method):
    torch.manual_seed(0)
    model = create("small_cnn", 10, 1, 28)
    weights = prunable_weights(model)
    schedule = Schedule(0.7, begin_step=1, end_step=5, frequency=2)
    pruner = Pruner(weights, method, schedule, torch.Generator().manual_seed(0))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    for step in range(8):
        assert pruner.update(step, opt) == (step in (1, 3, 5))
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert all(
            ((p == 0) | m).all()
            for p, m in zip(weights.values(), pruner.masks.values(), strict=True)
        )
        if step >= 5:
            masked, _ = sparsity_report({k: m.float() for k, m in pruner.masks.items()})
            assert abs(masked - 0.7) < 0.005
    overall, per_layer = sparsity_report({k: v.detach() for k, v in weights.items()})
    assert abs(overall - 0.7) < 0.005
    if method != "global_magnitude":
        assert all(abs(s - 0.7) < 0.01 for s in per_layer.values())


def test_prunable_weights_cover_every_conv_but_not_the_classifier():
    names = set(prunable_weights(create("resnet18", 1000, 3, 224)))
    assert "conv1.weight" in names  # the stem
    assert "layer1.0.conv1.weight" in names and "layer2.0.downsample.0.weight" in names
    assert "fc.weight" not in names
    assert set(prunable_weights(create("small_cnn", 10, 1, 28))) == {
        "conv1.weight",
        "conv2.weight",
        "fc1.weight",
    }


# -- masked_weights = "reference": the study's TF pruning, against a plain re-implementation --


def normalised_net() -> torch.nn.Module:
    """Batch norm after every pruned layer (lr 1.6 at batch 16 stays finite); the classifier
    has a bias, which "reference" decays."""
    nn = torch.nn
    return nn.Sequential(
        *(nn.Conv2d(1, 8, 3, stride=2, bias=False), nn.BatchNorm2d(8), nn.ReLU()),
        *(nn.Conv2d(8, 16, 3, stride=2, bias=False), nn.BatchNorm2d(16), nn.ReLU()),
        *(nn.Flatten(), nn.Linear(16 * 6 * 6, 32, bias=False), nn.BatchNorm1d(32), nn.ReLU()),
        nn.Linear(32, 10),
    )


def hand_fires(step: int, last: int, begin: int, end: int, frequency: int) -> bool:
    return begin <= step <= end and last + frequency <= step


def hand_keep(raw: torch.Tensor, sparsity: float) -> torch.Tensor:
    """The reference's magnitude rule, in numpy: k = round(n (1 - s)) (float32, half to even),
    keep |w| >= the k-th largest |w|."""
    a = raw.abs().numpy()
    k = int(np.round(np.float32(a.size) * (np.float32(1) - np.float32(sparsity))))
    kth = np.sort(a.ravel())[::-1][k - 1]
    return torch.from_numpy(a >= kth)


def hand_sparsity(step: int, final: float, begin: int, end: int) -> float:
    p = min(max((step - begin) / (end - begin), 0.0), 1.0)
    return final * (1 - (1 - p) ** 3)


def hand_pie_keep(value: torch.Tensor, mask: torch.Tensor, sparsity: float) -> torch.Tensor:
    """pie's magnitude rule: masked weights first, then the smallest |w|, round(s n) in all."""
    scores = torch.where(mask, value.abs(), -1.0).flatten()
    order = sorted(range(scores.numel()), key=lambda i: (float(scores[i]), i))
    keep = torch.ones(scores.numel(), dtype=torch.bool)
    keep[order[: round(sparsity * scores.numel())]] = False
    return keep.view_as(value)


@pytest.mark.parametrize("mode", ["frozen", "reference"])
def test_magnitude_training_at_lr_1_6_follows_the_rule_by_hand(mode):
    """lr 1.6 (0.1 x 4096 / 256), Nesterov momentum 0.9, weight decay 1e-2 (large, so that its
    pull on masked raw weights shows), masks to 80 % at steps 2, 4, 6, 8 ("reference": last_update
    starts at 0) or 1, 3, 5, 7, 8 ("frozen"): the trained parameters
    after every step equal SGD by hand on (w * mask) with the mode's masks, gradients, momentum
    and weight-decay groups; under "reference" masked raw weights keep moving and some pruned
    weights return, under "frozen" they stay 0 with zero momentum and never return."""
    torch.manual_seed(0)
    model = normalised_net()
    stock = normalised_net()  # the hand computation's forward: a stock copy, weights passed in
    stock.load_state_dict(model.state_dict())
    lr, momentum, wd = 1.6, 0.9, 1e-2
    begin, end, frequency, final = 1, 8, 2, 0.8
    reference = mode == "reference"
    schedule = Schedule(final, begin, end, frequency, reference=reference)
    weights = prunable_weights(model)
    names = list(weights)
    cls = ReferencePruner if reference else Pruner
    args = (model,) if reference else ()
    pruner = cls(*args, weights, "magnitude", schedule, torch.Generator().manual_seed(1))
    groups = param_groups(model, wd, mode)
    opt = torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=True)

    # the hand state: every parameter (raw), its momentum, the masks, the bn statistics
    params = {n: p.detach().clone() for n, p in stock.named_parameters()}
    stats = {n: b.clone() for n, b in stock.named_buffers()}
    bn = {n for n in params if n.split(".")[0] in ("1", "4", "8")}  # the batch-norm modules
    if reference:  # every parameter but batch norm's
        decayed = {n for n in params if n not in bn}
    else:  # conv and dense weights
        decayed = {n for n in params if params[n].ndim > 1}
    assert ("10.bias" in decayed) == reference
    buf = {n: torch.zeros_like(p) for n, p in params.items()}
    keep = {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}
    last, revived, moved = 0, 0, 0
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g)
    for step in range(12):
        fires = (
            hand_fires(step, last, begin, end, frequency)
            if reference
            else (
                step in (1, 3, 5, 7, 8)  # pie's rule: begin, every 2 steps, and end
            )
        )
        assert pruner.update(step, opt) == fires
        if fires:
            s = hand_sparsity(step, final, begin, end)
            for n in names:
                new = hand_keep(params[n], s) if reference else hand_pie_keep(params[n], keep[n], s)
                revived += int((new & ~keep[n]).sum())
                keep[n] = new
                if not reference:  # frozen: the value and the momentum of a masked weight go
                    params[n] = params[n] * new
                    buf[n] = buf[n] * new
            last = step
        assert all(torch.equal(pruner.masks[n], keep[n]) for n in names)
        # by hand: loss of the stock net at w * mask, gradient to the raw w, then Nesterov SGD
        leaves = {n: p.clone().requires_grad_() for n, p in params.items()}
        effective = {n: leaves[n] * keep[n] if n in keep else leaves[n] for n in leaves}
        out = torch.func.functional_call(stock, {**effective, **stats}, (x,))
        torch.nn.functional.cross_entropy(out, y).backward()
        for n in params:
            grad = leaves[n].grad.clone()
            if not reference and n in keep:
                grad = grad * keep[n]
            if n in decayed:
                grad = grad + wd * params[n]
            buf[n] = momentum * buf[n] + grad
            params[n] = params[n] - lr * (grad + momentum * buf[n])
        # the real thing
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
        trained = {n: p.detach() for n, p in model.named_parameters()}
        trained = {n.replace(".parametrizations.weight.original", ".weight"): p
                   for n, p in trained.items()}  # fmt: skip
        assert trained.keys() == params.keys()
        for n in params:
            assert torch.allclose(trained[n], params[n], rtol=1e-4, atol=1e-5), (step, n)
        for n in names:
            masked = ~keep[n]
            if reference:
                moved += int((trained[n][masked] != 0).sum())
            else:
                assert (trained[n][masked] == 0).all()
                assert (opt.state[weights[n]]["momentum_buffer"][masked] == 0).all()
    masked_fraction = sum(int((~k).sum()) for k in keep.values()) / sum(
        k.numel() for k in keep.values()
    )
    assert masked_fraction == pytest.approx(final, abs=0.005)
    assert (moved > 0) == reference  # masked raw weights still train under "reference"
    assert (revived > 0) == reference  # and some pruned ones come back


def test_reference_magnitude_brings_back_a_weight_whose_raw_value_grew():
    """4 weights, targets 0, 0.4375, 0.5 at steps 1, 2, 3 (k = round(4 (1 - s)) = 4, 2, 2 kept):
    step 2 keeps .3 and .4; the masked raw .1 then grows to .9, and step 3 keeps it again."""
    layer = torch.nn.Sequential(torch.nn.Linear(4, 1, bias=False), torch.nn.Linear(1, 1))
    with torch.no_grad():
        layer[0].weight.copy_(torch.tensor([[0.1, -0.2, 0.3, -0.4]]))
    schedule = Schedule(0.5, begin_step=1, end_step=3, frequency=1, reference=True)
    pruner = ReferencePruner(
        layer, prunable_weights(layer), "magnitude", schedule, torch.Generator()
    )
    raw = pruner.weights["0.weight"]
    assert [pruner.update(t) for t in range(3)] == [False, True, True]
    assert pruner.masks["0.weight"].tolist() == [[False, False, True, True]]
    assert layer[0].weight[0].tolist() == pytest.approx([0.0, 0.0, 0.3, -0.4])  # w * mask
    assert raw[0].tolist() == pytest.approx([0.1, -0.2, 0.3, -0.4])  # the raw values stay
    with torch.no_grad():
        raw[0, 0] = 0.9
    assert pruner.update(3)
    assert pruner.masks["0.weight"].tolist() == [[True, False, False, True]]
    assert layer[0].weight[0].tolist() == pytest.approx([0.9, 0.0, 0.0, -0.4])
    assert not pruner.update(4)  # after end_step


def reference_pruner(values: list[float]) -> ReferencePruner:
    model = torch.nn.Sequential(torch.nn.Linear(len(values), 1, bias=False), torch.nn.Linear(1, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([values]))
    schedule = Schedule(0.5, 0, 0, 1, reference=True)
    return ReferencePruner(model, prunable_weights(model), "magnitude", schedule, torch.Generator())


def test_reference_keeps_ties_with_the_kth_largest_and_rounds_k_half_to_even():
    tied = reference_pruner([0.5, 0.2, 0.2, 0.2, 0.1])
    # k = round(5 * 0.6) = 3: the 3rd largest |w| is .2, and every .2 is kept
    assert tied.compute(0.4)["0.weight"].tolist() == [[True, True, True, True, False]]
    distinct = reference_pruner([0.5, -0.4, 0.3, -0.2, 0.1])
    # k = round(5 * 0.5) = round(2.5) = 2, half to even as tf.round (half up would keep 3)
    assert distinct.compute(0.5)["0.weight"].tolist() == [[True, True, False, False, False]]
    assert distinct.compute(0.4)["0.weight"].tolist() == [[True, True, True, False, False]]
    assert not distinct.compute(0.95)["0.weight"].any()  # k = round(0.25) = 0 keeps nothing


@pytest.mark.parametrize(
    ("begin", "end", "frequency", "reference", "expected"),
    [
        (3, 20, 5, True, [5, 10, 15, 20]),  # last_update 0: first at 0 + 5 >= begin
        (7, 20, 5, True, [7, 12, 17]),  # none forced at end_step
        (0, 30, 10, True, [10, 20, 30]),  # step 0 never fires: 0 + 10 > 0
        (0, 0, 1, True, []),
        (3, 20, 5, False, [3, 8, 13, 18, 20]),  # pie: begin, every 5, and end
        (0, 0, 1, False, [0]),
    ],
)
def test_update_firing_rule_at_hand_chosen_steps(begin, end, frequency, reference, expected):
    schedule = Schedule(0.5, begin, end, frequency, reference)
    assert schedule.update_steps() == expected
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))
    weights = prunable_weights(model)
    generator = torch.Generator()
    if reference:
        pruner = ReferencePruner(model, weights, "magnitude", schedule, generator)
    else:
        pruner = Pruner(weights, "magnitude", schedule, generator)
    fired, last = [], 0
    for step in range(40):
        by_hand = begin <= step <= end and (
            last + frequency <= step
            if reference
            else (step - begin) % frequency == 0 or step == end
        )
        last = step if by_hand else last
        assert pruner.update(step) == by_hand
        fired += [step] if by_hand else []
    assert fired == expected


def test_random_independent_reference_mask_is_a_scaled_bernoulli_draw():
    """tf.nn.dropout(ones, keep_prob = 1 - s): kept entries 1 / (1 - s), kept fraction ~ 1 - s
    (10,000 weights at s = 0.7: the binomial's sd is 0.0046); the forward pass and, after
    `finish`, the stock weight are raw w times that mask; a new draw at each update."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(100, 100, bias=False), torch.nn.Linear(100, 3))
    raw = model[0].weight.detach().clone()
    schedule = Schedule(0.7, begin_step=1, end_step=2, frequency=1, reference=True)
    pruner = ReferencePruner(
        model, prunable_weights(model), "random_independent", schedule, torch.Generator()
    )
    assert not pruner.update(0)
    assert pruner.update(1)  # s = 0 at begin_step: everything kept, scale 1
    assert pruner.masks["0.weight"].all() and torch.equal(model[0].weight, raw)
    assert pruner.update(2)  # s = 0.7
    factor = model[0].parametrizations.weight[0].mask
    keep = pruner.masks["0.weight"]
    scale = torch.tensor(1 / (1 - 0.7), dtype=torch.float32)
    assert torch.equal(factor[keep], scale.expand(int(keep.sum())))
    assert (factor[~keep] == 0).all()
    assert abs(keep.float().mean().item() - 0.3) < 0.015
    x = torch.randn(5, 100)
    expected = x @ (raw * factor).T
    assert torch.allclose(model[0](x), expected)
    pruner.finish()
    assert list(model.state_dict()) == ["0.weight", "1.weight", "1.bias"]  # stock names
    assert torch.equal(model[0].weight.detach(), raw * factor)
    assert torch.equal(model[0].weight.detach()[keep], raw[keep] * scale)
