"""One model's predictions on a decoded batch, and the Parquet part they stream into.

`Scorer` normalises the batch with the model's own mean and std, runs the forward pass (bf16
autocast and channels_last when asked, on CUDA only; a batch that does not fit in GPU memory is
split in halves until it does, and the smaller size is kept) and takes top-1, top-5 and the
probabilities in float32. With a class subset (ImageNet-A/R) the logits of the other classes are
masked out, so the argmax and the softmax are taken among the subset only (REFERENCE.md).

`PartWriter` appends each batch's rows to `<model>__<dataset>.<rank>-of-<world>.parquet.tmp`,
a row group every `ROW_GROUP` rows, and renames it when the rank's share of the dataset is done
(infer.sink reads it back).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from pie import durable
from pie.images import Preprocess, normalize

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
    """How the forward pass runs: bf16 autocast and channels_last are CUDA-only options."""

    bf16: bool = False
    channels_last: bool = False


class Scorer:
    def __init__(
        self,
        model: torch.nn.Module,
        pre: Preprocess,
        class_subset: list[int] | tuple[int, ...] | None,
        device: torch.device,
        precision: Precision = Precision(),
        micro_batch: int | None = None,
    ) -> None:
        self.model = model.to(device).eval()
        if precision.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.pre = pre
        self.subset = list(class_subset) if class_subset else None
        self.device = device
        self.precision = precision
        self.micro_batch = micro_batch  # None: the whole batch at once

    @torch.inference_mode()
    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """float32 logits of a uint8 batch already on the device."""
        x = normalize(pixels, self.pre)
        if self.precision.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        while True:
            size = self.micro_batch or len(x)
            try:
                return torch.cat([self.forward(x[i : i + size]) for i in range(0, len(x), size)])
            except torch.cuda.OutOfMemoryError:
                if size == 1:
                    raise
                self.micro_batch = size // 2
                torch.cuda.empty_cache()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cuda", torch.bfloat16, enabled=self.precision.bf16):
            return self.model(x).float()

    @torch.inference_mode()
    def __call__(self, pixels: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """pred, top5 (k = min(5, classes allowed)), p_label and p_pred of each image."""
        logits = self.logits(pixels)
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
