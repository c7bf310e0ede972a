"""`pie infer`: evaluate every model on every evaluation dataset (or on the datasets named with
`--dataset`: a training set is evaluated only when named) whose predictions are missing or stale,
decoding each dataset once for all of them (once per wave of models).

The stage, top to bottom: list the pending (model, dataset) pairs in groups (infer.pending);
for each group, for each batch of its images (infer.loader: read and decoded by DataLoader
workers), score it with every model of the group (infer.score) and append each model's rows to
its Parquet part (infer.parts); when the group is done, load its parts into the database
(infer.sink), in a background thread while the next group is scored; then one summary line.
Evaluating a pair again replaces its rows in one transaction, which also deletes the
`class_tstats` rows of the model's experiment on that dataset and its `robustness_tstats` rows:
they described the old predictions, and `pie analyze` must be run again to get them back. An
image that cannot be decoded is skipped and recorded in `decode_errors`.

The run holds the work root's writer lock (pie.store.writer_lock) throughout, so a second writer
stops at once, but the database only for the planning step and each load step: `pie sql` and
`pie summary` work meanwhile (a reader meeting a load step waits and retries).

Under torchrun every rank scores its share of each group's batches into its own parts; rank 0
plans, holds the lock and loads. Kill it at any point and rerun: finished pairs stay, nothing
is duplicated or partial (infer.pending cleans up what a killed run left).
"""

from __future__ import annotations

import contextlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
import torch

from infer import loader, pending
from infer.config import InferConfig
from infer.parts import PartWriter, rows
from infer.pending import Group, Work
from infer.score import Precision, Scoring
from infer.sink import Fingerprint, closing_meta, load_pair, part_meta, part_path, read_part_info
from pie import console, distributed, store
from pie.config import to_dict
from pie.errors import PieError
from pie.models import resolve_device
from pie.paths import WorkRoot
from pie.shards import dataset_hash


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
            failure, work = None, None
            if world.is_main:
                try:
                    command = "pie infer" + (
                        f" (torchrun, {world.size} ranks)" if world.distributed else ""
                    )
                    lock.enter_context(store.writer_lock(root, command))
                    work = pending.pending(root, cfg, pending.model_budget(cfg, device))
                except Exception as e:
                    failure = e
            message, work = distributed.broadcast_object(
                world, (str(failure) if failure else None, work)
            )
            if failure is not None:
                raise failure
            if message is not None:
                raise PieError(message)
            tally = evaluate(root, cfg, work, world, device)
            if world.is_main:
                finish(root, cfg, work, tally, started, time.time() - t0)
        distributed.barrier(world)
    finally:
        distributed.shutdown(world)
    return work.pairs


@dataclass
class Tally:
    rows: int = 0
    images: int = 0  # images decoded and evaluated by this process (each through every model)
    skipped: int = 0  # images that could not be decoded
    changed: int = 0  # groups whose dataset was re-packed while they were evaluated


def evaluate(
    root: WorkRoot, cfg: InferConfig, work: Work, world: distributed.World, device: torch.device
) -> Tally:
    """Score every group's batches into parts; rank 0 loads them group by group."""
    scoring = Scoring(
        work.groups,
        work.model_memory,
        device,
        Precision(cfg.precision == "bf16", cfg.channels_last),
        in_workers=device.type == "cpu" and cfg.workers > 0,
    )
    shares = loader.shares(
        [(g.directory, g.pre) for g in work.groups],
        cfg.batch_size,
        cfg.workers,
        world.rank,
        world.size,
        pin_memory=device.type == "cuda",
        then=scoring.in_workers,
    )
    tally, loads, failed = Tally(), [], threading.Event()
    with ThreadPoolExecutor(1, thread_name_prefix="pie-load") as pool:
        for group, (images, batches) in zip(work.groups, shares, strict=True):
            started = time.time()
            writers = {m.model_id: part_writer(root, group, m, world) for m in group.members}
            errors: list[tuple[str, str]] = []
            title = f"{group.dataset} x {len(group.members)} models"
            with console.progress(title, images, "img") as advance:
                for batch in batches:
                    labels = batch.labels.numpy()
                    for model_id, out in scoring(batch).items():
                        writers[model_id].add(rows(batch.keys, labels, out))
                    errors += batch.errors
                    tally.images += len(batch.keys)
                    advance(len(batch.keys) + len(batch.errors))
            tally.skipped += len(errors)
            if dataset_hash(group.directory) != group.dataset_hash:
                for w in writers.values():  # re-packed meanwhile: the next run evaluates it
                    w.abandon()
                tally.changed += 1
            else:
                for w in writers.values():
                    w.close(closing_meta(time.time() - started, errors))
            distributed.barrier(world)  # every rank's parts of the group are there
            if world.is_main:  # loaded in the background while the next group is scored
                loads.append(pool.submit(load_group, root, group, world.size, failed))
                for f in loads:
                    if f.done():
                        f.result()  # a failed load stops the run now
    tally.rows = sum(f.result() for f in loads)
    return tally


def part_writer(
    root: WorkRoot, group: Group, m: pending.Member, world: distributed.World
) -> PartWriter:
    """The part this rank writes for one pair of the group."""
    made_from = Fingerprint(m.sha256, group.dataset_hash)
    meta = part_meta(
        m.model_id, group.dataset, m.experiment, made_from, world.rank, world.size, m.preprocess
    )
    return PartWriter(part_path(root, m.model_id, group.dataset, world.rank, world.size), meta)


def load_group(root: WorkRoot, group: Group, world_size: int, failed: threading.Event) -> int:
    """Load a group's complete pairs in one short write step; returns the rows loaded. Nothing
    once a load has `failed` (set here): the run stops at the first failure."""
    if failed.is_set():
        return 0
    try:
        paths = [
            [part_path(root, m.model_id, group.dataset, r, world_size) for r in range(world_size)]
            for m in group.members
        ]
        infos = [[read_part_info(p) for p in pair] for pair in paths if all(map(Path.exists, pair))]
        if not infos:
            return 0
        if sum(pq.read_metadata(p.path).num_rows for p in infos[0]) == 0:
            errors = [e for p in infos[0] for e in p.errors]
            for p in (p for parts in infos for p in parts):
                p.path.unlink()
            key, why = errors[0] if errors else ("-", "no images")
            raise PieError(
                f"dataset {group.dataset}: no image can be decoded (first: {key}: {why})"
            )
        with store.connect(root) as con:
            return sum(
                load_pair(con, parts, replace_errors=group.first_of_dataset and i == 0)
                for i, parts in enumerate(infos)
            )
    except BaseException:
        failed.set()
        raise


def finish(
    root: WorkRoot, cfg: InferConfig, work: Work, tally: Tally, started: datetime, seconds: float
) -> None:
    """The closing line (and its `runs` row, when anything was written)."""
    rows_total = tally.rows + work.leftover_rows
    rate = tally.images / seconds if seconds else 0.0
    summary = (
        f"infer: {work.pairs} (model, dataset) pairs evaluated ({work.stale} again: checkpoint,"
        f" dataset or decoding changed), {rows_total} predictions written in {seconds:.0f}s"
        f" ({rate:,.0f} images/s, each through every pending model); {work.done} pairs were"
        f" already done; rows in {root.db}, table predictions"
    )
    if tally.skipped:
        summary += f"; {tally.skipped} images skipped (cannot be decoded: see table decode_errors)"
    if work.dropped:
        summary += f"; {work.dropped} stale staged parts dropped"
    if tally.changed:
        summary += f"; {tally.changed} datasets re-packed while evaluated: run again"
    if work.pairs or work.leftover_rows or work.dropped:
        with store.connect(root) as con:
            store.record_run(con, "infer", None, to_dict(cfg), summary, started)
    console.say(summary)
