"""The model registry: architecture name -> constructor, and which weights are prunable.

Every constructor takes `(num_classes, in_channels, image_size)` and returns a stock
module, so a checkpoint's plain `state_dict` loads into `create(arch, ...)` with nothing
else. Prunable weights follow the reference: every convolution (the stem included) and
every dense layer except the final classifier.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torchvision

from pie.errors import PieError

Constructor = Callable[[int, int, int], nn.Module]
ARCHS: dict[str, Constructor] = {}


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


def torchvision_resnet(name: str) -> Constructor:
    def build(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
        if in_channels != 3:
            raise PieError(f"{name} takes 3-channel input; set the preprocessing channels to 3")
        return getattr(torchvision.models, name)(weights=None, num_classes=num_classes)

    return build


for _name in ("resnet18", "resnet34", "resnet50", "resnet101"):
    register(_name)(torchvision_resnet(_name))


@register("resnet18_cifar")
def resnet18_cifar(num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """torchvision's ResNet-18 for 32 px inputs (the usual CIFAR variant): a 3x3 stride-1 stem
    and no max-pooling; same module names as resnet18, so its state_dict loads the same way."""
    model = torchvision_resnet("resnet18")(num_classes, in_channels, image_size)
    model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()
    return model


def create(arch: str, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    if arch not in ARCHS:
        raise PieError(f"unknown arch {arch!r} (known: {', '.join(sorted(ARCHS))})")
    return ARCHS[arch](num_classes, in_channels, image_size)


def prunable_weights(
    model: nn.Module, layers: str = "reference", keep: Sequence[str] = ()
) -> dict[str, nn.Parameter]:
    """Conv and dense weights by state_dict name, in module order.

    layers: "reference" (every conv, the stem included, and every dense layer but the last),
    "convs" (convolutions only) or "all" (every conv and dense layer); `keep` lists fnmatch
    patterns of weight names left out (e.g. "conv1.weight" to spare the stem).
    """
    if layers not in ("reference", "convs", "all"):
        raise PieError(f"unknown layer set {layers!r} (known: reference, convs, all)")
    found = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    head = classifier(model)
    out = {}
    for name, module in found:
        weight = f"{name}.weight"
        if layers == "reference" and head is not None and name == head[0]:
            continue
        if layers == "convs" and not isinstance(module, nn.Conv2d):
            continue
        if any(fnmatch.fnmatchcase(weight, pattern) for pattern in keep):
            continue
        out[weight] = module.weight
    return out


def classifier(model: nn.Module) -> tuple[str, nn.Linear] | None:
    """The final classifier (the layer producing the logits): the last `nn.Linear` in module
    order, by its module name; None for a model without one. Every registered arch ends in it
    (`fc`)."""
    return next(
        ((n, m) for n, m in reversed(list(model.named_modules())) if isinstance(m, nn.Linear)),
        None,
    )


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)
