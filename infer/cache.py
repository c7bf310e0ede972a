"""The models one process keeps loaded for inference, bounded by a memory budget.

`ModelCache.get(key)` returns the model `load(key)` builds, prepared by `place` (moved to the
device), and keeps it for the next call. The models kept hold at most `budget` bytes of
parameters and buffers: before a new model is placed, the least recently used ones are evicted
until it fits; a model larger than the whole budget is kept alone. Used by `pie infer`'s main
process (models on the device) and by each CPU loader worker that scores (models in RAM).

`shrink(keep)` is the out-of-memory step: it evicts the least recently used model other than
`keep` and lowers the budget to the bytes still resident with `keep`, so the cache does not
grow back.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch


def nbytes(model: torch.nn.Module) -> int:
    """Bytes of a model's parameters and buffers."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


class ModelCache:
    def __init__(
        self,
        budget: int,
        load: Callable[[Hashable], torch.nn.Module],
        place: Callable[[torch.nn.Module], torch.nn.Module] = lambda model: model,
    ) -> None:
        self.budget = budget
        self.load = load  # key -> the model, on the CPU
        self.place = place  # the model -> the model ready to run (on the device)
        self.resident: OrderedDict[Hashable, tuple[torch.nn.Module, int]] = OrderedDict()
        self.used = 0  # bytes of the resident models
        self.sizes: dict[Hashable, int] = {}  # bytes of every model loaded so far

    def get(self, key: Hashable) -> torch.nn.Module:
        """The model of `key`, now the most recently used; loaded (and others evicted) if
        it is not resident."""
        if key in self.resident:
            self.resident.move_to_end(key)
            return self.resident[key][0]
        model = self.load(key)
        size = self.sizes[key] = nbytes(model)
        while self.resident and self.used + size > self.budget:
            self.evict(next(iter(self.resident)))
        model = self.place(model)
        self.resident[key] = (model, size)
        self.used += size
        return model

    def evict(self, key: Hashable) -> None:
        _, size = self.resident.pop(key)
        self.used -= size

    def shrink(self, keep: Hashable) -> bool:
        """Evict the least recently used model but `keep` and lower the budget to the bytes
        left with `keep` (resident, or the one being loaded); False when there is no other
        model to evict."""
        victim = next((k for k in self.resident if k != keep), None)
        if victim is None:
            return False
        self.evict(victim)
        self.budget = self.used + (0 if keep in self.resident else self.sizes.get(keep, 0))
        return True
