"""bf16 inference keeps fp32 logits: the classifier (the last nn.Linear) runs in float32 on its
input cast to float32, so near-tied classes keep fp32's order and p_label is fp32's.

The Scorer's forward runs under CPU bf16 autocast here (it takes the autocast device type from
its device); the expected logits are computed by hand in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from infer.score import Float32, ModelCache, Precision, Scorer, prepare
from pie.errors import PieError
from pie.images import Preprocess
from pie.models import ARCHS, classifier, create, prunable_weights

CPU = torch.device("cpu")
BF16 = Precision(bf16=True)
EPS = 2.0**-20
# bf16 keeps 8 significant bits: 1 + 2^-8 - EPS rounds down to 1, 1 + 2^-8 + EPS up to 1 + 2^-7
HEAD = [[1 + 2**-8 - EPS, 2**-9], [1 + 2**-8 + EPS, 0.0]]


def near_tie() -> nn.Module:
    """A 2x2 one-channel image of 1.0s -> features [1, 1] (exact in bf16: a conv of 0.25s)
    -> logits 1 + 2^-8 + 2^-9 - EPS (class 0) and 1 + 2^-8 + EPS (class 1), 0.002 apart. In
    bf16 arithmetic the weights round so that class 1 wins: 1.0078 against 1.0."""
    conv = nn.Conv2d(1, 2, 2, bias=False)
    head = nn.Linear(2, 2)
    with torch.no_grad():
        conv.weight.fill_(0.25)
        head.weight.copy_(torch.tensor(HEAD, dtype=torch.float32))
        head.bias.zero_()
    return nn.Sequential(conv, nn.Flatten(), head)


def test_near_tied_logits_keep_fp32_argmax_and_probabilities():
    pre = Preprocess(2, 1, (0.0,), (1.0,))
    pixels = torch.full((3, 1, 2, 2), 255, dtype=torch.uint8)  # normalised: all 1.0
    labels = torch.tensor([0, 1, 1])
    logits = np.array(HEAD, dtype=np.float64).sum(axis=1)  # features [1, 1]
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert logits.argmax() == 0 and logits[0] - logits[1] < 2**-7  # under bf16 resolution

    cache = ModelCache(2**20, lambda key: near_tie(), lambda m: prepare(m, CPU, BF16))
    out = Scorer(cache, None, CPU, BF16)("m", pre, pixels, labels)
    assert out["pred"].tolist() == [0, 0, 0]
    assert out["top5"].tolist() == [[0, 1]] * 3
    np.testing.assert_allclose(out["p_label"].numpy(), probs[[0, 1, 1]], rtol=0, atol=1e-6)
    np.testing.assert_allclose(out["p_pred"].numpy(), [probs[0]] * 3, rtol=0, atol=1e-6)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_classifier_is_the_layer_whose_output_is_the_logits(arch):
    """For every registered arch, in fp32: the module `classifier` names produces the model's
    output, `prepare` under bf16 wraps exactly it, and pruning leaves exactly it out."""
    channels = 1 if arch == "small_cnn" else 3
    model = create(arch, 10, channels, 32).eval()
    name, head = classifier(model)
    seen = {}
    head.register_forward_hook(lambda m, args, out: seen.update(out=out))
    with torch.inference_mode():
        assert torch.equal(model(torch.randn(1, channels, 32, 32)), seen["out"])
    linears = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert linears - set(prunable_weights(model)) == {f"{name}.weight"}
    wrapped = prepare(model, CPU, BF16).get_submodule(name)
    assert isinstance(wrapped, Float32) and wrapped.module is head


@pytest.mark.parametrize("arch", ["small_cnn", "resnet18"])
def test_under_bf16_autocast_the_logits_are_the_classifiers_fp32_product(arch):
    """Under CPU bf16 autocast the prepared model's logits are float32 and equal the float64
    product of the classifier's weights with the features it receives."""
    channels = 1 if arch == "small_cnn" else 3
    torch.manual_seed(0)
    model = create(arch, 10, channels, 32)
    name, _ = classifier(model)
    model = prepare(model, CPU, BF16)
    head = model.get_submodule(name)  # the Float32 wrapper
    seen = {}
    head.register_forward_hook(lambda m, args, out: seen.update(x=args[0]))
    with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
        logits = model(torch.randn(2, channels, 32, 32))
    assert seen["x"].dtype == torch.bfloat16  # the features did come from bf16 arithmetic
    assert logits.dtype == torch.float32
    weight, bias = head.module.weight.detach().double(), head.module.bias.detach().double()
    by_hand = seen["x"].double() @ weight.T + bias
    np.testing.assert_allclose(logits.double().numpy(), by_hand.numpy(), rtol=1e-6, atol=1e-6)


def test_a_model_without_a_dense_layer_is_refused_under_bf16():
    with pytest.raises(PieError, match=r"no nn\.Linear"):
        prepare(nn.Sequential(nn.Conv2d(1, 2, 1), nn.Flatten()), CPU, BF16)
