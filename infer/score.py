"""Scoring: a decoded uint8 batch through a group's models, to each image's top-1, top-5 and
probabilities.

`ModelCache.get(key)` returns the model `load(key)` builds, prepared by `place` (moved to the
device), and keeps it for the next call. The models kept hold at most `budget` bytes of
parameters and buffers: before a new model is placed, the least recently used ones are evicted
until it fits; a model larger than the whole budget is kept alone. `shrink(keep)` is the
out-of-memory step: it evicts the least recently used model other than `keep` and lowers the
budget to the bytes still resident with `keep`, so the cache does not grow back.

`prepare` makes a loaded model ready to score: on the device, channels_last when asked, and under
bf16 its classifier (`pie.models.classifier`, the last dense layer) wrapped in `Float32`, which
runs it with autocast off on its input cast to float32, so the logits are those of fp32
arithmetic on the features and near-tied classes keep fp32's order. A compressed program
(`pie compress`: float16/bfloat16 weights, int8) is left as `checkpoints.load` made it: it runs
in its own dtype, and an int8 one on the CPU, the device its kernels target, even when the run
scores on a GPU (its inputs go to the CPU and its logits come back).

`Scorer` takes a group's models from a `ModelCache` and, per micro-batch, normalises the uint8
batch with the model's own mean and std and runs the forward pass (bf16 autocast on the device's
type when asked), then takes top-1, top-5 and the probabilities in float32. Loading the model,
normalising and the forward pass are one out-of-memory retry: on `torch.cuda.OutOfMemoryError`
the least recently used other model is evicted and the cache's budget lowered, or, with no other
model resident, the micro-batch is halved and the smaller size kept; at one image with nothing
to evict the error stands. With a class subset (ImageNet-A/R) the logits of the other classes
are masked out, so the argmax and the softmax are taken among the subset only
(docs/definitions.md, class subsets).

`Scoring` is where a run's batches are scored, decided once for the run: in this process, on
its device, or, on CPU with loader workers, in the loader workers themselves (`InWorkers`:
each worker runs the models on the batch it has just decoded, one thread each, and sends back
the outputs instead of the pixels; the main process only writes). Processes in parallel beat
one process's intra-op threads on a few shared cores: bench/infer_throughput.py on 2 busy cores,
2 workers, 2 models over 4,096 images ran at 1.23 and 1.48 of the bare forward pass scored in
the workers, 0.78 and 0.89 scored in the main process (4 models: 1.17 and 1.02).
"""

from __future__ import annotations

import dataclasses
import functools
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from infer.loader import Batch
from infer.pending import Group
from pie import checkpoints, compressed
from pie.errors import PieError
from pie.images import Preprocess, normalize
from pie.models import classifier

Outputs = dict[str, np.ndarray]  # pred, top5, p_label, p_pred of each image of a batch


def nbytes(model: torch.nn.Module) -> int:
    """Bytes of a model's parameters and buffers (a compressed program's: every tensor of its
    state_dict, quantized modules holding their weights outside both)."""
    tensors = [*model.parameters(), *model.buffers()]
    if isinstance(model, compressed.Program):
        values = model.state_dict().values()
        tensors = [t for v in values for t in (v if isinstance(v, tuple) else (v,))]
        tensors = [t for t in tensors if isinstance(t, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


class ModelCache:
    """The models one process keeps loaded, least recently used evicted beyond `budget`."""

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


@dataclass(frozen=True)
class Precision:
    """How the forward pass runs: bf16 autocast (the classifier in fp32), channels_last."""

    bf16: bool = False
    channels_last: bool = False


class Float32(torch.nn.Module):
    """Runs `module` in float32 whatever autocast is on around it: its input is cast to
    float32 and autocast is off inside."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.module(x.float())


def load_model(directory: str) -> torch.nn.Module:
    """The model of a checkpoint directory, on the CPU, its weights verified and memory-mapped
    from the file, so that an evicted model's memory goes back to the system (a `ModelCache`
    loader, keyed by the directory)."""
    return checkpoints.load(Path(directory), mmap=True)[0]


def prepare(model: torch.nn.Module, device: torch.device, precision: Precision) -> torch.nn.Module:
    """The loaded model on `device` in eval mode, channels_last if asked; under bf16 its
    classifier wrapped in `Float32` (a model without an `nn.Linear` is refused). A compressed
    program (`pie.compressed`) runs in its own dtype, an int8 one on the CPU, whatever is asked:
    neither channels_last nor bf16 applies to it."""
    model = model.to(device).eval()
    if isinstance(model, compressed.Program):
        return model
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if precision.bf16:
        head = classifier(model)
        if head is None:
            raise PieError(
                "bf16 inference keeps the classifier in fp32, this model has no nn.Linear"
            )
        model.set_submodule(head[0], Float32(head[1]))
    return model


class Scorer:
    """Scores uint8 batches with the models of a `ModelCache`, among `class_subset` if given."""

    def __init__(
        self,
        models: ModelCache,
        class_subset: list[int] | tuple[int, ...] | None,
        device: torch.device,
        precision: Precision = Precision(),
        micro_batch: int | None = None,
    ) -> None:
        self.models = models
        self.subset = list(class_subset) if class_subset else None
        self.device = device
        self.precision = precision
        self.micro_batch = micro_batch  # None: the whole batch at once

    @torch.inference_mode()
    def logits(self, key: Hashable, pre: Preprocess, pixels: torch.Tensor) -> torch.Tensor:
        """float32 logits of model `key` on a uint8 batch already on the device."""
        while True:
            size = self.micro_batch or len(pixels)
            try:  # load (or find) the model, then normalise and run `size` images at a time
                model = self.models.get(key)
                micro = [pixels[i : i + size] for i in range(0, len(pixels), size)]
                return torch.cat([self.forward(model, pre, x) for x in micro])
            except torch.cuda.OutOfMemoryError:
                if not self.models.shrink(key):
                    if size == 1:
                        raise
                    self.micro_batch = size // 2
            torch.cuda.empty_cache()  # out of the except block: the failed try's tensors are gone

    def forward(
        self, model: torch.nn.Module, pre: Preprocess, pixels: torch.Tensor
    ) -> torch.Tensor:
        x = normalize(pixels, pre)
        if self.precision.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.precision.bf16):
            return model(x).float()

    @torch.inference_mode()
    def __call__(
        self, key: Hashable, pre: Preprocess, pixels: torch.Tensor, labels: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """pred, top5 (k = min(5, classes allowed)), p_label and p_pred of each image."""
        logits = self.logits(key, pre, pixels)
        if self.subset is not None:
            allowed = torch.zeros(logits.shape[1], dtype=torch.bool, device=logits.device)
            allowed[self.subset] = True
            logits = logits.masked_fill(~allowed, float("-inf"))
        probs = logits.softmax(dim=1)
        top5 = probs.topk(min(5, len(self.subset or range(logits.shape[1]))), dim=1).indices
        return {
            "pred": top5[:, 0],
            "top5": top5,
            "p_label": probs.gather(1, labels.view(-1, 1)).squeeze(1),
            "p_pred": probs.gather(1, top5[:, :1]).squeeze(1),
        }


def outputs(scorer: Scorer, group: Group, batch: Batch) -> dict[str, Outputs]:
    """Every model's outputs on a batch, on the host, by model_id (none for an empty batch)."""
    if not batch.keys:
        return {}
    x = batch.pixels.to(scorer.device, non_blocking=True)
    y = batch.labels.to(scorer.device, non_blocking=True)
    return {
        m.model_id: {k: v.cpu().numpy() for k, v in scorer(m.checkpoint, m.pre, x, y).items()}
        for m in group.members
    }


WORKER_MODELS: ModelCache | None = None  # a loader worker's models, when the workers score


@dataclass(frozen=True)
class InWorkers:
    """Scoring in a CPU loader worker, on the batch it has just decoded (`infer.loader.shares`
    runs it there); the pixels are not sent back. Each worker keeps its models in a
    `ModelCache` of `model_memory` bytes."""

    groups: tuple[Group, ...]  # the run's, by index
    model_memory: int

    def __call__(self, batch: Batch) -> Batch:
        global WORKER_MODELS
        if WORKER_MODELS is None:
            WORKER_MODELS = ModelCache(self.model_memory, load_model)
        group = self.groups[batch.group]
        scorer = Scorer(WORKER_MODELS, group.class_subset, torch.device("cpu"))
        return dataclasses.replace(
            batch, pixels=batch.pixels[:0], outputs=outputs(scorer, group, batch)
        )


class Scoring:
    """A run's scoring: each batch's outputs by model_id, from the loader worker that scored it
    (`in_workers`, the step to hand the loader) or scored here on `device`."""

    def __init__(
        self,
        groups: Sequence[Group],
        model_memory: int,
        device: torch.device,
        precision: Precision,
        in_workers: bool,
    ) -> None:
        self.groups = tuple(groups)
        self.in_workers = InWorkers(self.groups, model_memory) if in_workers else None
        place = functools.partial(prepare, device=device, precision=precision)
        models = ModelCache(model_memory, load_model, place)  # keyed by checkpoint directory
        self.scorers = [Scorer(models, g.class_subset, device, precision) for g in self.groups]

    def __call__(self, batch: Batch) -> dict[str, Outputs]:
        if batch.outputs is not None:
            return batch.outputs
        return outputs(self.scorers[batch.group], self.groups[batch.group], batch)
