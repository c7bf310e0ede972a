"""Predictions on a decoded batch, and the Parquet part they stream into.

`prepare` makes a loaded model ready to score: on the device, channels_last when asked, and
under bf16 its classifier (`pie.models.classifier`, the last dense layer) wrapped in `Float32`,
which runs it with autocast off on its input cast to float32, so the logits are those of fp32
arithmetic on the features and near-tied classes keep fp32's order.

`Scorer` takes a group's models from a `ModelCache` (infer.cache) and, per micro-batch,
normalises the uint8 batch with the model's own mean and std and runs the forward pass (bf16
autocast on the device's type when asked), then takes top-1, top-5 and the probabilities in
float32. Loading the model, normalising and the forward pass are one out-of-memory retry: on
`torch.cuda.OutOfMemoryError` the least recently used other model is evicted and the cache's
budget lowered (`ModelCache.shrink`), or, with no other model resident, the micro-batch is
halved and the smaller size kept; at one image with nothing to evict the error stands. With a
class subset (ImageNet-A/R) the logits of the other classes are masked out, so the argmax and
the softmax are taken among the subset only (docs/definitions.md, class subsets).

`PartWriter` appends each batch's rows to `<model>__<dataset>.<rank>-of-<world>.parquet.tmp`,
a row group every `ROW_GROUP` rows, and renames it when the rank's share of the dataset is done
(infer.sink reads it back).
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from infer.cache import ModelCache
from pie import checkpoints, durable
from pie.errors import PieError
from pie.images import Preprocess, normalize
from pie.models import classifier

ROW_GROUP = 32_768
SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("label", pa.int32()),
        ("pred", pa.int32()),
        ("top5", pa.list_(pa.int32())),
        ("p_label", pa.float32()),
        ("p_pred", pa.float32()),
    ]
)


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
    classifier wrapped in `Float32` (a model without an `nn.Linear` is refused)."""
    model = model.to(device).eval()
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
            try:
                return self.attempt(key, pre, pixels, size)
            except torch.cuda.OutOfMemoryError:
                if not self.models.shrink(key):
                    if size == 1:
                        raise
                    self.micro_batch = size // 2
            torch.cuda.empty_cache()  # out of the except block: the failed try's tensors are gone

    def attempt(
        self, key: Hashable, pre: Preprocess, pixels: torch.Tensor, size: int
    ) -> torch.Tensor:
        """Load (or find) the model, then normalise and run `size` images at a time."""
        model = self.models.get(key)
        return torch.cat(
            [self.forward(model, pre, pixels[i : i + size]) for i in range(0, len(pixels), size)]
        )

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


def rows(keys: list[str], labels: np.ndarray, out: dict[str, np.ndarray]) -> pa.Table:
    top5 = out["top5"].astype(np.int32)
    return pa.table(
        {
            "key": pa.array(keys, pa.string()),
            "label": pa.array(labels.astype(np.int32)),
            "pred": pa.array(out["pred"].astype(np.int32)),
            "top5": pa.FixedSizeListArray.from_arrays(
                pa.array(top5.reshape(-1)), top5.shape[1]
            ).cast(pa.list_(pa.int32())),
            "p_label": pa.array(out["p_label"].astype(np.float32)),
            "p_pred": pa.array(out["p_pred"].astype(np.float32)),
        },
        schema=SCHEMA,
    )


class PartWriter:
    """One pair's rows from one rank, streamed into a `.tmp` Parquet file."""

    def __init__(self, path: Path, meta: dict[str, str]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.tmp = path.with_name(path.name + ".tmp")
        self.writer = pq.ParquetWriter(self.tmp, SCHEMA.with_metadata(meta))
        self.pending: list[pa.Table] = []
        self.buffered = 0
        self.n = 0

    def add(self, table: pa.Table) -> None:
        self.pending.append(table)
        self.buffered += table.num_rows
        self.n += table.num_rows
        if self.buffered >= ROW_GROUP:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.writer.write_table(pa.concat_tables(self.pending))
        self.pending, self.buffered = [], 0

    def close(self, extra: dict[str, str]) -> Path:
        """Finish the file (`extra`: metadata known only now) and rename it into place."""
        self.flush()
        self.writer.add_key_value_metadata(extra)
        self.writer.close()
        durable.replace(self.tmp, self.path)
        return self.path

    def abandon(self) -> None:
        self.writer.close()
        self.tmp.unlink(missing_ok=True)


def errors_json(errors: list[tuple[str, str]]) -> str:
    return json.dumps(errors)
