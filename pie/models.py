"""The model registry: architecture name -> model, and which weights are prunable.

An arch is one of pie's own (`ARCHS`: small_cnn, tiny_cnn, resnet18_cifar, for small inputs),
any classification model of `torchvision.models` by its name (`torchvision.models.list_models`:
resnet50, mobilenet_v3_small, efficientnet_b0, convnext_tiny, vit_b_16, swin_t...), or
`timm:<name>` for any model of timm (`timm.list_models()`; the optional extra `pie[timm]`).
Every one is built untrained (never a download) by `create(arch, num_classes, in_channels,
image_size)` as a stock module, so a checkpoint's plain `state_dict` loads into it with nothing
else. torchvision's models take 3-channel input only (a 1-channel set is read as RGB by setting
the preprocessing channels to 3); timm's take any (`in_chans`).

Prunable weights follow the reference: every convolution (the stem, a ViT's patch projection,
included) and every dense layer except the final classifier. For attention that covers the
query/key/value and output projections (timm's `qkv` and `proj` Linears, the packed
`in_proj_weight` of `nn.MultiheadAttention` and its `out_proj`) and the MLPs' Linears; never
biases, norms, embeddings (`nn.Embedding`), positional embeddings or class tokens.

`model_preprocess(arch)` gives a model's own preprocessing where it has some: timm's pretrained
config, torchvision's default weights' transforms (both read from metadata, no download).
"""

from __future__ import annotations

import fnmatch
import importlib
import math
from collections.abc import Callable, Sequence
from functools import cache, partial
from types import ModuleType
from typing import Any

import torch
import torch.nn as nn
import torchvision

from pie.errors import PieError
from pie.images import INTERPOLATIONS

Constructor = Callable[[int, int, int], nn.Module]
ARCHS: dict[str, Constructor] = {}
TIMM = "timm:"
CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def register(name: str) -> Callable[[Constructor], Constructor]:
    def add(fn: Constructor) -> Constructor:
        ARCHS[name] = fn
        return fn

    return add


class SmallCNN(nn.Module):
    """Two strided 3x3 convolutions and a hidden dense layer, for 28-32 px inputs.

    Strided convolutions rather than max-pooling: on CPU, max-pooling dominated the step
    time at this size (bench/train_throughput.py).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int,
        image_size: int,
        width: int = 16,
        hidden: int = 256,
    ):
        super().__init__()
        side = math.ceil(math.ceil(image_size / 2) / 2)
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.fc1 = nn.Linear(2 * width * side * side, hidden)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x):
        x = self.bn1(self.conv1(x)).relu()
        x = self.bn2(self.conv2(x)).relu()
        return self.fc(self.fc1(x.flatten(1)).relu())


@register("small_cnn")
def small_cnn(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return SmallCNN(num_classes, in_channels, image_size)


class TinyCNN(nn.Module):
    """A test arch, not for studies: SmallCNN's layout (two strided 3x3 convolutions, a hidden
    dense layer, the classifier) at width 8 and 32 hidden units, without batch norm.

    Without batch norm a training step does not depend on how the global batch is split over
    processes (batch-norm statistics are per process under DistributedDataParallel), so a
    multi-process run can be checked weight for weight against a one-process run.
    """

    def __init__(self, num_classes: int, in_channels: int, image_size: int, width: int = 8):
        super().__init__()
        side = math.ceil(math.ceil(image_size / 2) / 2)
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.fc1 = nn.Linear(2 * width * side * side, 32)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.conv2(self.conv1(x).relu()).relu()
        return self.fc(self.fc1(x.flatten(1)).relu())


@register("tiny_cnn")
def tiny_cnn(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    return TinyCNN(num_classes, in_channels, image_size)


@cache
def torchvision_names() -> frozenset[str]:
    """The classification models of torchvision (not detection, segmentation or video)."""
    return frozenset(torchvision.models.list_models(module=torchvision.models))


def torchvision_model(name: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """torchvision's `name`, untrained; a ViT is built for `image_size` (a multiple of its
    patch size)."""
    if in_channels != 3:
        raise PieError(f"{name} takes 3-channel input; set the preprocessing channels to 3")
    extra: dict[str, Any] = {}
    if name.startswith("vit_"):
        patch = int(name.rpartition("_")[2])
        if image_size % patch:
            raise PieError(f"{name} needs an image size divisible by {patch}, got {image_size}")
        extra["image_size"] = image_size
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **extra)


for _name in ("resnet18", "resnet34", "resnet50", "resnet101"):  # torchvision's, named here
    register(_name)(partial(torchvision_model, _name))


@register("resnet18_cifar")
def resnet18_cifar(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """torchvision's ResNet-18 for 32 px inputs (the usual CIFAR variant): a 3x3 stride-1 stem
    and no max-pooling; same module names as resnet18, so its state_dict loads the same way."""
    model = torchvision_model("resnet18", num_classes, in_channels, image_size)
    model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def timm_module(name: str) -> ModuleType:
    """timm, imported on first use (a few seconds); missing: one line saying how to get it."""
    try:
        return importlib.import_module("timm")
    except ImportError:
        raise PieError(f"{TIMM}{name} needs the optional extra: pip install 'pie[timm]'") from None


def timm_config(name: str) -> Any:
    """timm's pretrained config of model `name` (metadata only, nothing downloaded)."""
    timm = timm_module(name)
    if not timm.is_model(name):
        raise PieError(f"unknown timm model {name!r} (see timm.list_models())")
    return timm.get_pretrained_cfg(name)


def timm_model(name: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """timm's `name`, untrained; a model with a fixed input size (ViTs) is built for
    `image_size`."""
    config = timm_config(name)
    extra = {"img_size": image_size} if config is not None and config.fixed_input_size else {}
    return timm_module(name).create_model(
        name, pretrained=False, num_classes=num_classes, in_chans=in_channels, **extra
    )


def create(arch: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """An untrained `arch` with `num_classes` outputs for `in_channels` x `image_size` input."""
    if arch in ARCHS:
        return ARCHS[arch](num_classes, in_channels, image_size)
    if arch.startswith(TIMM):
        return timm_model(arch.removeprefix(TIMM), num_classes, in_channels, image_size)
    if arch in torchvision_names():
        return torchvision_model(arch, num_classes, in_channels, image_size)
    raise PieError(
        f"unknown arch {arch!r}: pie's own are {', '.join(sorted(ARCHS))}; any name of"
        " torchvision.models.list_models() (resnet50, convnext_tiny, vit_b_16...) or"
        " timm:<name> of timm.list_models() work too"
    )


def model_preprocess(arch: str) -> dict[str, Any] | None:
    """The model's own preprocessing (`pie.images.Preprocess` fields size, mean, std,
    crop_fraction, interpolation) from its metadata, or None where it has none (pie's archs).

    timm: the pretrained config (input_size, crop_pct, interpolation, mean, std); the resize
    is timm's floor(size / crop_pct), so crop_fraction is size over that. torchvision: the
    default weights' transforms (crop_size, resize_size, interpolation, mean, std)."""
    if arch.startswith(TIMM):
        config = timm_config(arch.removeprefix(TIMM))
        if config is None:
            return None
        size = config.input_size[-1]
        return {
            "size": size,
            "mean": list(config.mean),
            "std": list(config.std),
            "crop_fraction": size / math.floor(size / config.crop_pct),
            "interpolation": config.interpolation  # else timm's "random" (training only)
            if config.interpolation in INTERPOLATIONS
            else "bilinear",
        }
    if arch not in torchvision_names():
        return None
    weights = torchvision.models.get_model_weights(arch).DEFAULT
    transforms = weights.transforms()
    crop, resize = transforms.crop_size[0], transforms.resize_size[0]
    return {
        "size": crop,
        "mean": list(transforms.mean),
        "std": list(transforms.std),
        "crop_fraction": crop / resize,
        "interpolation": transforms.interpolation.value,
    }


def prunable_weights(
    model: nn.Module, layers: str = "reference", keep: Sequence[str] = ()
) -> dict[str, nn.Parameter]:
    """Conv and dense weights by state_dict name, in module order (`nn.MultiheadAttention`'s
    packed input projection, `in_proj_weight`, counts as a dense layer).

    layers: "reference" (every conv, the stem included, and every dense layer but the final
    classifier), "convs" (convolutions only) or "all" (every conv and dense layer); `keep`
    lists fnmatch patterns of weight names left out (e.g. "conv1.weight" to spare the stem).
    """
    if layers not in ("reference", "convs", "all"):
        raise PieError(f"unknown layer set {layers!r} (known: reference, convs, all)")
    head = final_layer(model)
    out = {}
    for name, module in model.named_modules():
        if layers == "reference" and head is not None and module is head[1]:
            continue
        for weight, param in layer_weights(module, layers == "convs"):
            full = f"{name}.{weight}" if name else weight
            if not any(fnmatch.fnmatchcase(full, pattern) for pattern in keep):
                out[full] = param
    return out


def layer_weights(module: nn.Module, convs_only: bool) -> list[tuple[str, nn.Parameter]]:
    """The prunable weights a module holds itself, by attribute name."""
    if isinstance(module, CONVS) or (isinstance(module, nn.Linear) and not convs_only):
        return [("weight", module.weight)]
    if isinstance(module, nn.MultiheadAttention) and not convs_only:
        names = ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")
        return [(n, getattr(module, n)) for n in names if getattr(module, n) is not None]
    return []


def classifier(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The final classifier (the layer producing the logits) as a dense layer, by its module
    name: timm's own (`get_classifier()`, its pretrained config's `classifier`), else the last
    `nn.Linear` in module order (pie's archs: `fc`; torchvision's: `fc`, `classifier.3`,
    `heads.head`...); None for a model without one."""
    if hasattr(model, "get_classifier") and hasattr(model, "pretrained_cfg"):
        head = model.get_classifier()
        found = next((n for n, m in model.named_modules() if m is head), None)
        if found is not None and isinstance(head, nn.Linear):
            return found, head
    modules = reversed(list(model.named_modules()))
    return next(((n, m) for n, m in modules if isinstance(m, nn.Linear)), None)


def final_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The layer the reference layer set leaves dense: the classifier, or in a model without a
    dense layer its last convolution (squeezenet's `classifier.1` makes its logits)."""
    modules = reversed(list(model.named_modules()))
    return classifier(model) or next(((n, m) for n, m in modules if isinstance(m, CONVS)), None)


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)
