"""What `pie infer` has to do: the pending (model, dataset) pairs, grouped so that each dataset
is decoded once per group.

A pair's predictions are pinned to a fingerprint (`inference_runs.checkpoint_sha256`, the
models row's sha256, and `inference_runs.dataset_hash`, pie.shards.dataset_hash of its shards)
and to the decoding (`inference_runs.preprocess` records pie.images.DECODE_VERSION; rows made
before decoding matched torchvision have none). Every registered checkpoint is checked on disk
first (`checkpoints.reconcile`: size and mtime, hashed again when they changed): one replaced by
a consistent pair of weights and sidecar is registered again with its new sha256, so its pairs
are pending; weights that do not match their own sidecar stop the run in one line. A pair never
evaluated, or evaluated from another checkpoint, another packing of the dataset or another
decoding, is pending.

The pending pairs are grouped by dataset and preprocessing geometry (pie.images: size, channels,
crop fraction, and the dataset's rule, resize-then-crop or center crop only), and a group's
models are cut into waves whose weights fit in `infer.model_memory` together (`waves`; each wave
is a group of its own).

Before that, what an interrupted run left is cleaned up: `.tmp` parts (killed mid-write) are
removed, complete leftover pairs are loaded (infer.sink), or dropped if their checkpoint,
dataset or decoding changed since; a part that cannot be read is dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from infer.config import InferConfig
from infer.sink import Fingerprint, complete_pairs, load_pair, read_leftovers
from pie import catalog, checkpoints, store
from pie.errors import PieError
from pie.images import DECODE_VERSION, Preprocess
from pie.paths import WorkRoot
from pie.shards import INDEX, check_present, dataset_hash

GiB = 1024**3
CPU_MODEL_MEMORY = 2 * GiB  # infer.model_memory unset, on CPU: per process that scores


@dataclass(frozen=True)
class Member:
    """A pending pair of a group: the model and how its inputs are made."""

    model_id: str
    experiment: str
    sha256: str
    pre: Preprocess  # the model's, for this dataset (`Preprocess.for_dataset`)
    checkpoint: str  # its directory (infer.score's key for the model)

    @property
    def preprocess(self) -> str:
        """The JSON stored with its predictions (`inference_runs.preprocess`)."""
        return json.dumps({**self.pre.to_dict(), "decode": DECODE_VERSION}, sort_keys=True)


@dataclass(frozen=True)
class Group:
    """Pending pairs of one dataset sharing one decoding (geometry and rule)."""

    dataset: str
    directory: Path  # its shards (`datasets.path`: under shards/, or exports/ for an export)
    dataset_hash: str
    class_subset: tuple[int, ...] | None
    pre: Preprocess  # the decoding: geometry and rule (the first member's)
    members: tuple[Member, ...]
    first_of_dataset: bool  # its load replaces the dataset's decode_errors


@dataclass(frozen=True)
class Work:
    """The run's pending groups, and what the cleanup and the planning found."""

    groups: tuple[Group, ...]
    model_memory: int  # bytes of models each scoring process keeps loaded (every rank: rank 0's)
    done: int  # pairs already stored from the current checkpoint, dataset and decoding
    stale: int  # pending pairs stored from another checkpoint, dataset or decoding
    leftover_rows: int  # rows loaded from complete parts of an interrupted run
    dropped: int  # leftover parts dropped (stale or incomplete)

    @property
    def pairs(self) -> int:
        return sum(len(g.members) for g in self.groups)


def model_budget(cfg: InferConfig, device: torch.device) -> int:
    """`infer.model_memory` in bytes; unset: half the free memory of the CUDA device now, or
    `CPU_MODEL_MEMORY` per scoring process on CPU."""
    if cfg.model_memory is not None:
        return int(cfg.model_memory * GiB)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 2
    return CPU_MODEL_MEMORY


def pending(root: WorkRoot, cfg: InferConfig, budget: int) -> Work:
    """Clean up after an interrupted run and list what is pending (one short write step):
    on `cfg.datasets` (any ingested dataset, training sets included) or else on every evaluation
    dataset, pairs never evaluated, or stored from another checkpoint, dataset or `DECODE_VERSION`,
    grouped by dataset and geometry, each group's models split into waves within `budget`."""
    with store.connect(root) as con:
        # the datasets first: a name that is not an ingested dataset stops the run before
        # anything is cleaned up or written; a training set is evaluated only when named
        datasets = (
            [catalog.dataset(con, name) for name in cfg.datasets]
            if cfg.datasets
            else catalog.eval_datasets(con)
        )
        staging = root.parts("predictions")
        for tmp in staging.glob("*.tmp"):  # a run killed mid-write: never complete
            tmp.unlink()
        # a checkpoint replaced on disk is registered again (or refused): its pairs go stale
        sidecars = {}
        for m in catalog.model_rows(con):
            found = checkpoints.reconcile(con, root, m.model_id, m.sha256)
            if found is not None:
                sidecars[m.model_id] = found[0]
        models = {m.model_id: m for m in catalog.model_rows(con)}
        dirs = catalog.shard_dirs(con, root.path)

        def current(model_id: str, dataset: str) -> Fingerprint | None:
            """The pair's fingerprint now; None if the model or the dataset is gone."""
            shards = dirs.get(dataset, root.shards(dataset))
            if model_id not in models or not (shards / INDEX).exists():
                return None
            return Fingerprint(models[model_id].sha256, dataset_hash(shards))

        leftover_rows = 0
        readable, dropped = read_leftovers(sorted(staging.glob("*.parquet")))
        complete, incomplete = complete_pairs(readable)
        for parts in complete:
            info = parts[0]
            now = current(info.model_id, info.dataset)
            if info.fingerprint == now and decoded_now(info.preprocess):
                leftover_rows += load_pair(con, parts)
            else:
                for p in parts:
                    p.path.unlink()
                dropped += len(parts)
        for info in incomplete:
            info.path.unlink()
            dropped += 1

        if not models:
            raise PieError("no models yet: run `pie train` first")
        stored = {
            (m, d): (Fingerprint(sha, h), decoded_now(pre))
            for m, d, sha, h, pre in store.rows(
                con,
                "select model_id, dataset, checkpoint_sha256, dataset_hash, preprocess"
                " from inference_runs",
            )
        }
    specs: dict[str, Preprocess] = {}
    groups: list[Group] = []
    done, stale = 0, 0
    for d in datasets:
        content = dataset_hash(dirs[d["name"]])
        check_present(dirs[d["name"]])
        by_geometry: dict[str, list[Member]] = {}
        for m in models.values():
            if m.label_space != d["label_space"]:
                continue
            if stored.get((m.model_id, d["name"])) == (Fingerprint(m.sha256, content), True):
                done += 1
                continue
            stale += int((m.model_id, d["name"]) in stored)
            if m.model_id not in specs:
                if m.model_id not in sidecars:  # no checkpoint on disk: one line naming it
                    checkpoints.read_sidecar(root.checkpoint(m.model_id))
                specs[m.model_id] = Preprocess.from_dict(sidecars[m.model_id].preprocess)
            pre = specs[m.model_id].for_dataset(d)
            directory = str(root.checkpoint(m.model_id))
            member = Member(m.model_id, m.experiment, m.sha256, pre, directory)
            by_geometry.setdefault(member.pre.spec, []).append(member)
        first = True
        for spec in sorted(by_geometry):
            for members in waves(root, by_geometry[spec], budget):
                subset = d["class_subset"]
                groups.append(
                    Group(
                        d["name"],
                        dirs[d["name"]],
                        content,
                        tuple(subset) if subset else None,
                        members[0].pre,
                        tuple(members),
                        first_of_dataset=first,
                    )
                )
                first = False
    return Work(tuple(groups), budget, done, stale, leftover_rows, dropped)


def waves(root: WorkRoot, members: list[Member], budget: int) -> list[list[Member]]:
    """The members in runs of consecutive ones whose weights fit in `budget` together (one
    alone if it does not fit): each run is a group of its own, streamed once with all its
    models loaded, so models that do not fit together are never loaded once per batch. A
    model's size is its weights file (the state_dict's bytes, a little more)."""
    out: list[list[Member]] = []
    used = 0
    for m in members:
        size = (Path(m.checkpoint) / checkpoints.WEIGHTS).stat().st_size
        if not out or used + size > budget:
            out.append([])
            used = 0
        out[-1].append(m)
        used += size
    return out


def decoded_now(preprocess: str | None) -> bool:
    """Whether stored predictions (their `preprocess` JSON) were made by today's decoding."""
    return json.loads(preprocess or "{}").get("decode") == DECODE_VERSION
