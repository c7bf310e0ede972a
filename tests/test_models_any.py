"""The registry beyond pie's own archs: any torchvision classifier and timm:<name>, built at
a small input, pruned, saved and strictly reloaded; which weights are prunable in attention
models; preprocessing from the model's own metadata, and decode honouring its interpolation."""

from __future__ import annotations

import io
import math
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn as nn
import torchvision
from PIL import Image

from pie import checkpoints, models
from pie.errors import PieError
from pie.images import Preprocess, decode
from pie.models import classifier, create, final_layer, model_preprocess, prunable_weights
from train.pruning import Pruner, ReferencePruner, Schedule

# arch -> (image size, its final classifier's module name); timm's test_vit: a 0.3 M ViT
ARCHS = {
    "mobilenet_v3_small": (32, "classifier.3"),
    "efficientnet_b0": (32, "classifier.1"),
    "timm:test_vit": (32, "head"),
}
HEAVY = {  # 28 M, 86 M and 5.5 M parameters: tens of seconds on 2 busy cores
    "convnext_tiny": (32, "classifier.2"),
    "vit_b_16": (32, "heads.head"),
    "timm:vit_tiny_patch16_224": (32, "head"),
}


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a busy machine, two threads spent seconds waiting on each other in
    these small convolutions."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def sidecar(arch: str, size: int) -> checkpoints.Sidecar:
    return checkpoints.Sidecar(
        model_id=arch.replace(":", "_"),
        experiment="t",
        arch=arch,
        num_classes=5,
        label_space="ls",
        method="magnitude",
        target_sparsity=0.5,
        achieved_sparsity=0.5,
        layer_sparsity={},
        seed=0,
        torch_seed=0,
        train_dataset="a",
        eval_dataset="b",
        test_top1=None,
        train_loss=None,
        steps=0,
        schedule={},
        preprocess=Preprocess(size, 3, (0.5,) * 3, (0.5,) * 3).to_dict(),
        config={},
        torch_version=torch.__version__,
        device="cpu",
        seconds=0.0,
    )


def build_prune_save_reload(root, arch: str, size: int, head: str) -> int:
    """Build, prune to 50 % by magnitude, save, strictly reload: the saved tensors hold
    round(n / 2) zeros in every weight that is a conv or dense layer but the classifier (counted
    from the file, not from the pruner), none elsewhere; the reloaded model's logits are the
    pruned model's. Returns the number of pruned tensors."""
    torch.manual_seed(0)
    model = create(arch, 5, 3, size).eval()
    assert classifier(model)[0] == head
    weights = prunable_weights(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruner = Pruner(weights, "magnitude", Schedule(0.5, 0, 0, 1), torch.Generator())
    assert pruner.update(0)
    saved = checkpoints.save(root, model, sidecar(arch, size))

    state = torch.load(saved.directory(root) / checkpoints.WEIGHTS, weights_only=True)
    layers = {
        f"{n}.weight"
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear) and n != head
    }
    attention = {
        f"{n}.in_proj_weight"
        for n, m in model.named_modules()
        if isinstance(m, nn.MultiheadAttention)
    }
    assert set(weights) == layers | attention
    for name, tensor in state.items():
        if name in weights:
            assert int((tensor == 0).sum()) == round(tensor.numel() / 2), name
        else:
            assert torch.equal(tensor, before[name]), name  # untouched by pruning
    reloaded, _ = checkpoints.load(saved.directory(root))
    x = torch.randn(2, 3, size, size)
    with torch.inference_mode():
        assert torch.equal(reloaded(x), model(x))
    return len(weights)


@pytest.mark.parametrize("arch", ARCHS)
def test_any_arch_builds_prunes_saves_and_reloads_strictly(root, arch):
    if arch.startswith(models.TIMM):
        pytest.importorskip("timm")
    assert build_prune_save_reload(root, arch, *ARCHS[arch]) >= 2  # a stem and more


@pytest.mark.slow
@pytest.mark.parametrize("arch", HEAVY)
def test_heavier_archs_build_prune_save_and_reload_strictly(root, arch):
    if arch.startswith(models.TIMM):
        pytest.importorskip("timm")
    assert build_prune_save_reload(root, arch, *HEAVY[arch]) >= 2


def test_attention_projections_and_mlps_are_pruned_never_tokens_norms_or_embeddings():
    """torchvision's ViT layout (a small one): the patch projection (the stem), the packed q/k/v
    projection, the output projection and the MLP Linears are prunable; the class token, the
    positional embedding, layer norms, biases and the head are not. Under the reference's
    masking the packed projection (a Parameter, not a module's `weight`) is masked too."""
    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=16, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32,
        num_classes=5,
    )  # fmt: skip
    layer = "encoder.layers.encoder_layer_0"
    assert list(prunable_weights(model)) == [
        "conv_proj.weight",
        f"{layer}.self_attention.in_proj_weight",
        f"{layer}.self_attention.out_proj.weight",
        f"{layer}.mlp.0.weight",
        f"{layer}.mlp.3.weight",
    ]
    assert "heads.head.weight" in prunable_weights(model, "all")
    assert list(prunable_weights(model, "convs")) == ["conv_proj.weight"]

    weights = prunable_weights(model)
    pruner = ReferencePruner(model, weights, "magnitude", Schedule(0.5, 0, 1, 1, reference=True),
                             torch.Generator())  # fmt: skip
    assert pruner.update(1)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        masked = model(x)
    pruner.finish()
    state = model.state_dict()
    assert set(state) >= {f"{layer}.self_attention.in_proj_weight", "class_token"}
    for name in weights:  # reference rule: keep |w| >= the k-th largest, k = n / 2 (no ties)
        assert int((state[name] == 0).sum()) == state[name].numel() // 2, name
    with torch.inference_mode():
        assert torch.equal(model(x), masked)  # the stock module computes the masked forward


def test_timm_classifier_is_its_own_and_its_attention_is_pruned():
    pytest.importorskip("timm")
    model = create("timm:test_vit", 5, 3, 32)
    names = prunable_weights(model)
    assert classifier(model)[0] == model.pretrained_cfg["classifier"] == "head"
    assert "blocks.0.attn.qkv.weight" in names and "blocks.0.attn.proj.weight" in names
    assert "blocks.0.mlp.fc1.weight" in names and "blocks.0.mlp.fc2.weight" in names
    assert not {"cls_token", "pos_embed", "head.weight", "blocks.0.norm1.weight"} & set(names)
    assert create("timm:resnet10t", 5, 1, 32).conv1[0].in_channels == 1  # in_chans


def test_squeezenets_classifier_is_its_last_conv():
    """A model without a Linear: its last convolution makes the logits and is not pruned."""
    model = create("squeezenet1_1", 5, 3, 64)
    assert classifier(model) is None and final_layer(model)[0] == "classifier.1"
    assert "classifier.1.weight" not in prunable_weights(model)


def test_preprocessing_comes_from_the_models_metadata():
    """torchvision: its default weights' crop and resize sizes (efficientnet_b0: 224 of 256,
    bicubic); timm: input size, mean, std, and the resize timm computes, floor(size /
    crop_pct)."""
    pre = Preprocess.from_dict({**model_preprocess("efficientnet_b0"), "channels": 3})
    assert (pre.size, round(pre.size / pre.crop_fraction), pre.interpolation) == (
        224, 256, "bicubic",
    )  # fmt: skip
    assert pre.mean == (0.485, 0.456, 0.406) and pre.std == (0.229, 0.224, 0.225)
    assert model_preprocess("small_cnn") is None
    timm = pytest.importorskip("timm")
    config = timm.get_pretrained_cfg("resnet10t")
    pre = Preprocess.from_dict({**model_preprocess("timm:resnet10t"), "channels": 3})
    assert pre.size == config.input_size[-1] == 176
    assert round(pre.size / pre.crop_fraction) == math.floor(176 / config.crop_pct) == 201
    assert (pre.interpolation, pre.mean, pre.std) == ("bicubic", config.mean, config.std)


def test_decode_resizes_with_the_specs_interpolation():
    """The resize filter is the spec's: the pixels equal PIL's own resize with that filter
    (shorter side 256, the longer one truncated) and center crop; bicubic and bilinear differ."""
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    pre = Preprocess(224, 3, (0.0,) * 3, (1.0,) * 3, crop_fraction=0.875)
    out = {}
    for name, resample in (("bilinear", Image.BILINEAR), ("bicubic", Image.BICUBIC)):
        out[name] = decode(buffer.getvalue(), replace(pre, interpolation=name))
        resized = np.asarray(image.resize((int(256 * 60 / 40), 256), resample))
        top, left = round((256 - 224) / 2), round((384 - 224) / 2)
        expected = resized[top : top + 224, left : left + 224].transpose(2, 0, 1)
        np.testing.assert_array_equal(out[name], expected)
    assert not np.array_equal(out["bilinear"], out["bicubic"])
    assert replace(pre, interpolation="bicubic").spec != pre.spec  # infer groups them apart
    with pytest.raises(ValueError, match="interpolation"):
        replace(pre, interpolation="cubic")


def test_unknown_arch_one_channel_torchvision_and_missing_timm_are_one_line(monkeypatch):
    with pytest.raises(PieError, match=r"unknown arch 'resnet9'.*list_models"):
        create("resnet9", 5, 3, 32)
    with pytest.raises(PieError, match="mobilenet_v3_small takes 3-channel input"):
        create("mobilenet_v3_small", 5, 1, 32)
    with pytest.raises(PieError, match="vit_b_16 needs an image size divisible by 16"):
        create("vit_b_16", 5, 3, 40)

    def no_timm(name):
        raise ImportError(name)

    monkeypatch.setattr(models.importlib, "import_module", no_timm)
    expected = "timm:resnet10t needs the optional extra: pip install 'pie[timm]'"
    with pytest.raises(PieError, match=re.escape(expected)):
        create("timm:resnet10t", 5, 3, 32)
