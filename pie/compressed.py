"""Compressed programs (`pie compress`): how a quantised checkpoint is rebuilt from its
state_dict and how it runs.

A checkpoint's sidecar `compression["format"]` says what `model.pt` holds (no entry: the stock
float32 model, pruned or not):
- "float16", "bfloat16": the stock state_dict in that dtype; it loads into the stock model
  cast to the dtype and runs in it (`InDtype`: the input cast to the dtype, the logits back to
  float32, autocast off). torch has float16 and bfloat16 convolution and matmul kernels on
  CPU (oneDNN) as on CUDA.
- "int8_hybrid": int8 weights (per output channel, symmetric), float activations. Every
  `nn.Linear` is torch's dynamically quantised linear (`quantize_dynamic`: int8 weights,
  activations quantised per batch on the fly, fbgemm/x86 int8 matmul). torch has no dynamic
  int8 convolution kernel, so every `nn.Conv2d` becomes `Int8WeightConv2d`: its weight is held
  as a qint8 tensor and dequantised to float32 at each forward pass, the convolution itself in
  float32 (int8 storage, float compute).
- "int8_full": int8 weights and activations, the activation ranges calibrated on training
  images: FX graph mode quantisation (`prepare_fx` / `convert_fx`, torch's default qconfig
  mapping for the "x86" engine: batch norm folded into the convolutions, every convolution and
  linear layer a quantized module running x86 int8 kernels, quint8 activations). To load it,
  the same program is rebuilt from the stock model (`prepare_fx` with the same mapping and an
  input of the model's shape, then `convert_fx`) and the saved state_dict (weights, biases,
  scales and zero points) loaded into it.
Both int8 programs run only on the CPU (torch's quantized kernels are CPU kernels): `OnCpu`
keeps them there whatever device the rest of inference uses, and moves inputs and logits.

torch.ao.quantization warns that it is deprecated in favour of torchao (whose `quantize_`
covers `nn.Linear` only; its PT2E path needs torch.export): it still runs real int8 kernels in
torch 2.14, and its warnings are silenced here.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from pie.errors import PieError

ENGINE = "x86"
FLOATS = {"float16": torch.float16, "bfloat16": torch.bfloat16}
INT8 = ("int8_hybrid", "int8_full")
FORMATS = (*FLOATS, *INT8)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """torch.ao.quantization's deprecation and observer warnings silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def use_engine() -> None:
    """Select the x86 int8 engine; a torch build without it is refused in one line."""
    if ENGINE not in torch.backends.quantized.supported_engines:
        engines = ", ".join(torch.backends.quantized.supported_engines) or "none"
        raise PieError(f"this torch has no {ENGINE} int8 kernels (quantized engines: {engines})")
    torch.backends.quantized.engine = ENGINE


class Program(nn.Module):
    """A compressed model ready to run: `module` is what the checkpoint's state_dict loads
    into (stock names)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


class InDtype(Program):
    """A stock model whose weights are float16 or bfloat16, run in that dtype."""

    def __init__(self, module: nn.Module, dtype: torch.dtype) -> None:
        super().__init__(module.to(dtype))
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.module(x.to(self.dtype)).float()


class OnCpu(Program):
    """An int8 program: stays on the CPU when the model is moved, takes inputs from any
    device and returns float32 logits on the input's device."""

    def _apply(self, fn: Callable, recurse: bool = True) -> OnCpu:
        return self  # `.to(device)`, `.half()`...: the int8 program stays as it is

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False), int8_kernels():
            return self.module(x.float().cpu()).to(x.device)


@contextlib.contextmanager
def int8_kernels() -> Iterator[None]:
    """torch's quantized CPU ops run even where a process asked for deterministic algorithms
    only (a training process): they declare no deterministic variant (quantized_resize_cpu_),
    though on the CPU they compute the same result every run."""
    strict = torch.are_deterministic_algorithms_enabled()
    warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(strict, warn_only=warn)


class Int8WeightConv2d(nn.Module):
    """A convolution whose weight is stored as qint8 (per output channel, symmetric) and
    dequantised to float32 at each forward pass (torch has no int8 dynamic convolution)."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.stride, self.padding = conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups
        w = conv.weight.detach().float()
        scale = (w.abs().amax(dim=tuple(range(1, w.dim()))) / 127).clamp_min(1e-12)
        zero = torch.zeros(len(scale), dtype=torch.int64)
        with quiet():
            self.register_buffer(
                "qweight", torch.quantize_per_channel(w, scale, zero, 0, torch.qint8)
            )
        bias = conv.bias.detach().float() if conv.bias is not None else None
        self.register_buffer("qbias", bias)

    def weight(self) -> torch.Tensor:
        return self.qweight

    def bias(self) -> torch.Tensor | None:
        return self.qbias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.qweight.dequantize()
        return F.conv2d(x, w, self.qbias, self.stride, self.padding, self.dilation, self.groups)


def hybrid(model: nn.Module) -> nn.Module:
    """`model` (float, eval mode) with int8 weights and float activations: linear layers
    dynamically quantised, convolutions `Int8WeightConv2d`."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    use_engine()
    with quiet():
        model = quantize_dynamic(model, {nn.Linear: per_channel_dynamic_qconfig})
    for name, module in list(model.named_modules()):
        if isinstance(module, nn.Conv2d):
            model.set_submodule(name, Int8WeightConv2d(module))
    return model


def full_int8(
    model: nn.Module, example: torch.Tensor, calibrate: Callable[[nn.Module], None] | None = None
) -> nn.Module:
    """`model` (float, eval mode) as an int8 FX program for the x86 engine; `calibrate` runs
    the observed program on calibration images before conversion (None: observers left empty,
    for a program whose state_dict is loaded next)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    use_engine()
    with quiet():
        prepared = prepare_fx(model.eval(), get_default_qconfig_mapping(ENGINE), (example,))
        if calibrate is not None:
            with torch.inference_mode(), int8_kernels():
                calibrate(prepared)
        return convert_fx(prepared)


def structure(model: nn.Module, fmt: str, channels: int, size: int) -> nn.Module:
    """The module a `fmt` checkpoint's state_dict loads into, from the stock `model`."""
    if fmt in FLOATS:
        return model.to(FLOATS[fmt])
    if fmt == "int8_hybrid":
        return hybrid(model.eval())
    if fmt == "int8_full":
        return full_int8(model, torch.zeros(1, channels, size, size))
    raise PieError(f"unknown compressed format {fmt!r} (known: {', '.join(FORMATS)})")


def runnable(module: nn.Module, fmt: str) -> Program:
    """The loaded `structure` wrapped to run (`InDtype` or `OnCpu`), in eval mode."""
    if fmt in FLOATS:
        return InDtype(module, FLOATS[fmt]).eval()
    return OnCpu(module).eval()


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every convolution and linear weight as float32, by state_dict name (`<module>.weight`;
    a `Program`'s own prefix dropped): quantised ones dequantised."""
    if isinstance(model, Program):
        model = model.module
    out = {}
    for name, module in model.named_modules():
        w: Any = getattr(module, "weight", None)
        if callable(w) and not isinstance(w, torch.Tensor):
            w = w()  # a quantized module's packed weight
        elif not isinstance(module, nn.Conv2d | nn.Linear):
            continue
        if isinstance(w, torch.Tensor):
            out[f"{name}.weight"] = (w.dequantize() if w.is_quantized else w).detach().float()
    return out
