"""Run one checkpoint over one decoded dataset and stage its predictions as a Parquet part.

Runs in a worker process, never touches the database: `infer.sink.write_part` writes the part
as `.tmp` and renames it, so a part on disk is complete, and stamps it with what it was made
from (the checkpoint's verified sha256, the dataset hash of the decoded pixels).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from infer.sink import Fingerprint, write_part
from pie import checkpoints
from pie.errors import PieError
from pie.images import Cached, Preprocess, load_cached, normalize
from pie.models import resolve_device
from pie.paths import WorkRoot
from pie.shards import dataset_hash


def part_path(root: WorkRoot, model_id: str, dataset: str) -> Path:
    return root.parts("predictions") / f"{model_id}__{dataset}.parquet"


def cached(root: WorkRoot, dataset: str, pre: Preprocess, center_crop_only: bool) -> Cached:
    """The decoded dataset (images that cannot be decoded left out; the caller records them),
    kept in memory per worker for the pairs that follow, as long as the shards do not change."""
    return _cached(root, dataset, pre, center_crop_only, dataset_hash(root.shards(dataset)))


@functools.lru_cache(maxsize=4)
def _cached(
    root: WorkRoot, dataset: str, pre: Preprocess, center_crop_only: bool, content: str
) -> Cached:
    return load_cached(root, dataset, pre, center_crop_only=center_crop_only, strict=False)


@torch.inference_mode()
def predict(
    model: torch.nn.Module,
    data: Cached,
    pre: Preprocess,
    class_subset: list[int] | None,
    batch_size: int,
    device: torch.device,
) -> dict[str, np.ndarray]:
    """Top-1, top-5 and the probabilities of the prediction and of the true label.

    With a class subset (ImageNet-A/R) the logits of the other classes are masked out, so the
    argmax and the softmax are taken among the subset only (REFERENCE.md).
    """
    n_classes = None
    preds, top5s, p_labels, p_preds = [], [], [], []
    for start in range(0, len(data), batch_size):
        x = torch.from_numpy(np.array(data.pixels[start : start + batch_size])).to(device)
        labels = torch.from_numpy(data.labels[start : start + batch_size]).to(device)
        logits = model(normalize(x, pre)).float()
        if n_classes is None:
            n_classes = logits.shape[1]
            allowed = torch.zeros(n_classes, dtype=torch.bool, device=device)
            allowed[class_subset if class_subset else slice(None)] = True
            k = min(5, int(allowed.sum()))
        logits = logits.masked_fill(~allowed, float("-inf"))
        probs = logits.softmax(dim=1)
        top5 = probs.topk(k, dim=1).indices
        preds.append(top5[:, 0])
        top5s.append(top5)
        p_preds.append(probs.gather(1, top5[:, :1]).squeeze(1))
        p_labels.append(probs.gather(1, labels.view(-1, 1)).squeeze(1))
    return {
        "pred": torch.cat(preds).cpu().numpy().astype(np.int32),
        "top5": torch.cat(top5s).cpu().numpy().astype(np.int32),
        "p_label": torch.cat(p_labels).cpu().numpy().astype(np.float32),
        "p_pred": torch.cat(p_preds).cpu().numpy().astype(np.float32),
    }


def run_pair(
    root: WorkRoot,
    model_id: str,
    experiment: str,
    checkpoint_sha256: str,
    dataset: str,
    center_crop_only: bool,
    class_subset: list[int] | None,
    batch_size: int,
    device_name: str,
    threads: int,
) -> Path:
    """Worker: evaluate one (model, dataset) pair into a complete Parquet part.

    `checkpoint_sha256` is the models row's: a checkpoint on disk that differs from it (trained
    again but not registered) is refused rather than evaluated under the wrong sha.
    """
    started = time.time()
    torch.set_num_threads(threads)
    device = resolve_device(device_name)
    model, sidecar = checkpoints.load(root.checkpoint(model_id), device)
    if sidecar.sha256 != checkpoint_sha256:
        raise PieError(
            f"checkpoint {root.checkpoint(model_id)} has sha256 {sidecar.sha256[:12]}, its"
            f" models row {checkpoint_sha256[:12]}: run `pie train` to register it again"
        )
    pre = Preprocess.from_dict(sidecar.preprocess)
    data = cached(root, dataset, pre, center_crop_only)
    out = predict(model, data, pre, class_subset, batch_size, device)
    n = len(data)
    table = pa.table(
        {
            "model_id": pa.array([model_id] * n, pa.string()),
            "dataset": pa.array([dataset] * n, pa.string()),
            "key": pa.array(data.keys.tolist(), pa.string()),
            "label": pa.array(data.labels.astype(np.int32)),
            "pred": pa.array(out["pred"]),
            "top5": pa.FixedSizeListArray.from_arrays(
                pa.array(out["top5"].reshape(-1)), out["top5"].shape[1]
            ).cast(pa.list_(pa.int32())),
            "p_label": pa.array(out["p_label"]),
            "p_pred": pa.array(out["p_pred"]),
        }
    )
    fingerprint = Fingerprint(sidecar.sha256, data.dataset_hash)
    path = part_path(root, model_id, dataset)
    return write_part(path, table, experiment, fingerprint, time.time() - started)
