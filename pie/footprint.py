"""What a model occupies, measured rather than guessed, for `pie plan`: its parameters and
buffers, and the activations of one forward pass per image (training: what autograd keeps for
the backward pass; inference: the largest layer's input and output).

Activations are measured on the CPU with one real image of the model's input size (zeros: the
sizes do not depend on the values) and scale linearly with the batch. Training: the tensors
autograd saves during the forward pass (`torch.autograd.graph.saved_tensors_hooks`), counted
once per storage, parameters left out; under bf16 every saved floating-point tensor is counted
at 2 bytes an element, as CUDA autocast keeps the convolutions', batch norms' and activations'
outputs in bf16. Inference: twice the largest (input + output) of any layer (a residual block
holds its identity beside the branch), at 4 or 2 bytes an element. Left out: the CUDA context,
cuDNN workspaces and the caching allocator's slack (typically 1-3 GiB more per process).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from pie.models import create, prunable_weights


@dataclass(frozen=True)
class Footprint:
    parameters: int  # elements
    parameter_bytes: int  # fp32, as trained and saved
    buffer_bytes: int  # batch-norm statistics and counters
    prunable: int  # elements of the weights pruning masks
    train_activation_bytes: int  # per image, saved for backward, at the given precision
    infer_activation_bytes: int  # per image, inference peak, at the given precision

    @property
    def state_dict_bytes(self) -> int:
        """Bytes of the tensors of a checkpoint's `state_dict` (the file adds a little)."""
        return self.parameter_bytes + self.buffer_bytes


@functools.lru_cache(maxsize=16)
def footprint(
    arch: str,
    num_classes: int,
    channels: int,
    image_size: int,
    bf16: bool,
    prune_layers: str = "reference",
    keep_layers: tuple[str, ...] = (),
) -> Footprint:
    """The module's measurements for one architecture and input geometry."""
    model = create(arch, num_classes, channels, image_size)
    params = list(model.parameters())
    param_ptrs = {p.untyped_storage().data_ptr() for p in params}
    width = 2 if bf16 else 4
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in param_ptrs:
            size = storage.nbytes()
            if t.is_floating_point():
                size = size // t.element_size() * width
            saved[storage.data_ptr()] = size
        return t

    peak = [0]

    def layer(module, inputs, output) -> None:
        tensors = [*inputs, output]
        elements = sum(t.numel() for t in tensors if isinstance(t, torch.Tensor))
        peak[0] = max(peak[0], elements)

    x = torch.zeros(1, channels, image_size, image_size)
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x)
    hooks = [m.register_forward_hook(layer) for m in model.modules() if not list(m.children())]
    model.eval()
    with torch.inference_mode():
        model(x)
    for h in hooks:
        h.remove()
    return Footprint(
        parameters=sum(p.numel() for p in params),
        parameter_bytes=sum(p.numel() * p.element_size() for p in params),
        buffer_bytes=sum(b.numel() * b.element_size() for b in model.buffers()),
        prunable=sum(
            w.numel() for w in prunable_weights(model, prune_layers, keep_layers).values()
        ),
        train_activation_bytes=sum(saved.values()),
        infer_activation_bytes=2 * peak[0] * width,
    )


def human(n: float) -> str:
    """Bytes in binary units (1 KiB = 1024 bytes, 1 GiB = 2^30)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError
