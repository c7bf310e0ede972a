"""`pie infer`: evaluate every model on every evaluation dataset whose predictions are missing
or stale, decoding each dataset once for all of them (once per wave, below).

A pair's predictions are pinned to a fingerprint (`inference_runs.checkpoint_sha256`, the
models row's sha256, and `inference_runs.dataset_hash`, pie.shards.dataset_hash of its shards)
and to the decoding (`inference_runs.preprocess` records pie.images.DECODE_VERSION; rows made
before decoding matched torchvision have none). Every registered checkpoint is checked on disk
first (`checkpoints.reconcile`: size and mtime, hashed again when they changed): one replaced by
a consistent pair of weights and sidecar is registered again with its new sha256, so its pairs
are pending; weights that do not match their own sidecar stop the run in one line. A pair never
evaluated, or evaluated from another checkpoint, another packing of the dataset or another
decoding, is pending; evaluating it again replaces its rows in one transaction (infer.sink),
which also deletes the `class_tstats` rows of the model's experiment on that dataset and its
`robustness_tstats` rows: they described the old predictions, and `pie analyze` must be run
again to get them back.

The pending pairs are grouped by dataset and preprocessing geometry (pie.images: size, channels,
crop fraction, and the dataset's rule, resize-then-crop or center crop only), and a group's
models are cut into waves whose weights fit in `infer.model_memory` together (`waves`; each wave
is a group of its own). A group's shards are streamed by DataLoader workers (infer.stream), each
batch decoded once and sent through every model of the group (each normalising with its own mean
and std) before the next one; each model streams its rows into a Parquet part (infer.predict).
On CPU with loader workers, the workers run the models too (processes in parallel, one thread
each; the main process only writes), as intra-op threads of one process scale worse on a few
shared cores. Each process that runs models keeps them in an infer.cache.ModelCache bounded by
`infer.model_memory` (unset: half the CUDA device's free memory at the start, or
`CPU_MODEL_MEMORY` per process on CPU), least recently used evicted, so the models of the next
group are still loaded when they fit. When a group is done its parts are loaded by a background
thread, one short write connection per group, while the next group is evaluated.
An image that cannot be decoded is skipped and recorded in `decode_errors`.

The run holds the work root's writer lock (pie.store.writer_lock) throughout, so a second writer
stops at once, but the database only for the planning step and each load step: `pie sql` and
`pie summary` work meanwhile (a reader meeting a load step waits and retries).

Under torchrun every rank evaluates its share of each group's batches into its own parts; rank 0
plans, holds the lock and loads. At the start of a run, `.tmp` parts (a run killed mid-write) are
removed, complete leftover pairs are loaded, or dropped if their checkpoint, dataset or decoding
changed since; a part that cannot be read (a crash before its data reached the disk) is dropped.
Kill it at any point and rerun: finished pairs stay, nothing is duplicated or partial.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
import torch
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from infer import stream
from infer.cache import ModelCache
from infer.config import InferConfig
from infer.predict import PartWriter, Precision, Scorer, load_model, rows
from infer.predict import prepare as prepare_model
from infer.sink import (
    Fingerprint,
    closing_meta,
    complete_pairs,
    load_pair,
    part_meta,
    part_path,
    read_leftovers,
    read_part_info,
)
from pie import catalog, checkpoints, console, distributed, store
from pie.config import to_dict
from pie.errors import PieError
from pie.images import DECODE_VERSION, Preprocess
from pie.models import resolve_device
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
class Plan:
    groups: tuple[Group, ...]
    model_memory: int  # bytes of models each scoring process keeps loaded (every rank: rank 0's)
    done: int  # pairs already stored from the current checkpoint, dataset and decoding
    stale: int  # pending pairs stored from another checkpoint, dataset or decoding
    leftover_rows: int  # rows loaded from complete parts of an interrupted run
    dropped: int  # leftover parts dropped (stale or incomplete)

    @property
    def pairs(self) -> int:
        return sum(len(g.members) for g in self.groups)


def main(root: WorkRoot, cfg: InferConfig) -> int:
    """Returns the number of (model, dataset) pairs evaluated."""
    started, t0 = datetime.now(), time.time()
    device = resolve_device(cfg.device)
    if device.type != "cuda" and (cfg.precision != "fp32" or cfg.channels_last):
        raise PieError(
            f"infer.precision = {cfg.precision} and channels_last = {cfg.channels_last}:"
            " bf16 and channels_last need a CUDA device, this run is on cpu"
        )
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    world = distributed.init(device)
    device = distributed.device_of(world, device)
    try:
        with contextlib.ExitStack() as lock:
            failure, plan = None, None
            if world.is_main:
                try:
                    command = "pie infer" + (
                        f" (torchrun, {world.size} ranks)" if world.distributed else ""
                    )
                    lock.enter_context(store.writer_lock(root, command))
                    plan = prepare(root, cfg, model_budget(cfg, device))
                except Exception as e:
                    failure = e
            message, plan = distributed.broadcast_object(
                world, (str(failure) if failure else None, plan)
            )
            if failure is not None:
                raise failure
            if message is not None:
                raise PieError(message)
            written = evaluate(root, cfg, plan, world, device)
            if world.is_main:
                finish(root, cfg, plan, written, started, time.time() - t0)
        distributed.barrier(world)
    finally:
        distributed.shutdown(world)
    return plan.pairs


def model_budget(cfg: InferConfig, device: torch.device) -> int:
    """`infer.model_memory` in bytes; unset: half the free memory of the CUDA device now, or
    `CPU_MODEL_MEMORY` per scoring process on CPU."""
    if cfg.model_memory is not None:
        return int(cfg.model_memory * GiB)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] // 2
    return CPU_MODEL_MEMORY


def prepare(root: WorkRoot, cfg: InferConfig, budget: int) -> Plan:
    """Clean up after an interrupted run and list what is pending (one short write step):
    pairs never evaluated, or stored from another checkpoint, dataset or `DECODE_VERSION`,
    grouped by dataset and geometry, each group's models split into waves within `budget`."""
    with store.connect(root) as con:
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
        datasets = (
            [catalog.dataset(con, name) for name in cfg.datasets]
            if cfg.datasets
            else catalog.eval_datasets(con)
        )
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
            member = Member(m.model_id, m.experiment, m.sha256, pre)
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
    return Plan(tuple(groups), budget, done, stale, leftover_rows, dropped)


def waves(root: WorkRoot, members: list[Member], budget: int) -> list[list[Member]]:
    """The members in runs of consecutive ones whose weights fit in `budget` together (one
    alone if it does not fit): each run is a group of its own, streamed once with all its
    models loaded, so models that do not fit together are never loaded once per batch. A
    model's size is its weights file (the state_dict's bytes, a little more)."""
    out: list[list[Member]] = []
    used = 0
    for m in members:
        size = (root.checkpoint(m.model_id) / checkpoints.WEIGHTS).stat().st_size
        if not out or used + size > budget:
            out.append([])
            used = 0
        out[-1].append(m)
        used += size
    return out


def decoded_now(preprocess: str | None) -> bool:
    """Whether stored predictions (their `preprocess` JSON) were made by today's decoding."""
    return json.loads(preprocess or "{}").get("decode") == DECODE_VERSION


def preprocess_json(pre: Preprocess) -> str:
    return json.dumps({**pre.to_dict(), "decode": DECODE_VERSION}, sort_keys=True)


@dataclass
class Written:
    rows: int = 0
    images: int = 0  # images decoded and evaluated by this process (each through every model)
    skipped: int = 0  # images that could not be decoded
    changed: int = 0  # groups whose dataset was re-packed while they were evaluated


def evaluate(
    root: WorkRoot, cfg: InferConfig, plan: Plan, world: distributed.World, device: torch.device
) -> Written:
    """Stream every group through its models into parts; rank 0 loads them group by group."""
    in_workers = device.type == "cpu" and cfg.workers > 0  # processes, not threads, on CPU
    laid_out = stream.shares(
        [stream.chunks(g.directory, cfg.batch_size, i, g.pre) for i, g in enumerate(plan.groups)],
        world.rank,
        world.size,
        cfg.workers,
    )
    shares = [
        [
            dataclasses.replace(
                c,
                models=worker_models(root, g),
                class_subset=g.class_subset,
                model_memory=plan.model_memory,
            )
            if in_workers
            else c
            for c in share
        ]
        for share, g in zip(laid_out, plan.groups, strict=True)
    ]
    batches = iter(
        stream.loader([c for s in shares for c in s], cfg.workers, device.type == "cuda")
    )
    precision = Precision(cfg.precision == "bf16", cfg.channels_last)
    place = functools.partial(prepare_model, device=device, precision=precision)
    models = ModelCache(plan.model_memory, load_model, place)  # keyed by checkpoint directory
    written = Written()
    loads: list[Future[int]] = []
    failed = threading.Event()

    def load(group: Group) -> int:
        """Load a group unless an earlier load failed (the run stops at the first failure)."""
        if failed.is_set():
            return 0
        try:
            return load_group(root, group, world.size)
        except BaseException:
            failed.set()
            raise

    with (
        ThreadPoolExecutor(1, thread_name_prefix="pie-load") as loader,
        progress_bar(world.is_main) as bar,
    ):
        for group, share in zip(plan.groups, shares, strict=True):
            started = time.time()
            scorer = Scorer(models, group.class_subset, device, precision)
            fingerprint = Fingerprint(None, group.dataset_hash)
            writers = {
                m.model_id: PartWriter(
                    part_path(root, m.model_id, group.dataset, world.rank, world.size),
                    part_meta(
                        m.model_id,
                        group.dataset,
                        m.experiment,
                        Fingerprint(m.sha256, fingerprint.dataset_hash),
                        world.rank,
                        world.size,
                        preprocess_json(m.pre),
                    ),
                )
                for m in group.members
            }
            task = bar.add_task(
                f"{group.dataset} x {len(group.members)} models",
                total=sum(c.stop - c.start for c in share),
            )
            errors: list[tuple[str, str]] = []
            for _ in share:
                batch = next(batches)
                errors.extend(batch.errors)
                if batch.keys and batch.outputs is not None:
                    labels = batch.labels.numpy()
                    for model_id, out in batch.outputs.items():
                        writers[model_id].add(rows(batch.keys, labels, out))
                elif batch.keys:
                    x = batch.pixels.to(device, non_blocking=True)
                    y = batch.labels.to(device, non_blocking=True)
                    labels = batch.labels.numpy()
                    for m in group.members:
                        scored = scorer(str(root.checkpoint(m.model_id)), m.pre, x, y)
                        out = {k: v.cpu().numpy() for k, v in scored.items()}
                        writers[m.model_id].add(rows(batch.keys, labels, out))
                written.images += len(batch.keys)
                bar.advance(task, len(batch.keys) + len(batch.errors))
            written.skipped += len(errors)
            if dataset_hash(group.directory) != group.dataset_hash:
                for w in writers.values():  # re-packed meanwhile: the next run evaluates it
                    w.abandon()
                written.changed += 1
            else:
                for w in writers.values():
                    w.close(closing_meta(time.time() - started, errors))
            distributed.barrier(world)  # every rank's parts of the group are there
            if world.is_main:
                loads.append(loader.submit(load, group))
                for f in loads:
                    if f.done():
                        f.result()  # a failed load stops the run now
        written.rows = sum(f.result() for f in loads)
    return written


def worker_models(root: WorkRoot, group: Group) -> tuple[tuple[str, str, Preprocess], ...]:
    return tuple((m.model_id, str(root.checkpoint(m.model_id)), m.pre) for m in group.members)


def load_group(root: WorkRoot, group: Group, world_size: int) -> int:
    """Load a group's complete pairs in one short write step; returns the rows loaded."""
    infos = [
        [
            read_part_info(part_path(root, m.model_id, group.dataset, r, world_size))
            for r in range(world_size)
        ]
        for m in group.members
        if all(
            part_path(root, m.model_id, group.dataset, r, world_size).exists()
            for r in range(world_size)
        )
    ]
    if not infos:
        return 0
    n_images = sum(pq.read_metadata(p.path).num_rows for p in infos[0])
    if n_images == 0:
        errors = [e for p in infos[0] for e in p.errors]
        for parts in infos:
            for p in parts:
                p.path.unlink()
        key, why = errors[0] if errors else ("-", "no images")
        raise PieError(f"dataset {group.dataset}: no image can be decoded (first: {key}: {why})")
    n = 0
    with store.connect(root) as con:
        for i, parts in enumerate(infos):
            n += load_pair(con, parts, replace_errors=group.first_of_dataset and i == 0)
    return n


def finish(
    root: WorkRoot,
    cfg: InferConfig,
    plan: Plan,
    written: Written,
    started: datetime,
    seconds: float,
) -> None:
    """The closing line (and its `runs` row, when anything was written)."""
    rows_total = written.rows + plan.leftover_rows
    rate = written.images / seconds if seconds else 0.0
    summary = (
        f"infer: {plan.pairs} (model, dataset) pairs evaluated ({plan.stale} again: checkpoint,"
        f" dataset or decoding changed), {rows_total} predictions written in {seconds:.0f}s"
        f" ({rate:,.0f} images/s, each through every pending model); {plan.done} pairs were"
        f" already done; rows in {root.db}, table predictions"
    )
    if written.skipped:
        summary += (
            f"; {written.skipped} images skipped (cannot be decoded: see table decode_errors)"
        )
    if plan.dropped:
        summary += f"; {plan.dropped} stale staged parts dropped"
    if written.changed:
        summary += f"; {written.changed} datasets re-packed while evaluated: run again"
    if plan.pairs or plan.leftover_rows or plan.dropped:
        with store.connect(root) as con:
            store.record_run(con, "infer", None, to_dict(cfg), summary, started)
    console.say(summary)


class Rate(ProgressColumn):
    def render(self, task) -> Text:
        return Text(f"{task.speed or 0:,.0f} img/s")


@contextlib.contextmanager
def progress_bar(shown: bool):
    """One bar per group: images done, images per second, time left (stderr, terminals)."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        Rate(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console.err,
        disable=not (shown and console.err.is_terminal),
    )
    with bar:
        yield bar
