"""The polynomial schedule, the mask rules and the pruner, on hand-made tensors."""

from __future__ import annotations

import itertools

import pytest
import torch

from pie.models import create, prunable_weights
from train.pruning import (
    Pruner,
    Schedule,
    global_magnitude_masks,
    magnitude_masks,
    polynomial_sparsity,
    random_cumulative_masks,
    sparsity_report,
)


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
