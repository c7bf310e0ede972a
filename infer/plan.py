"""`pie plan` and `pie infer --dry-run`: what evaluating a population will take, without
loading a checkpoint or decoding an image: (model, dataset) pairs and prediction rows, GPU
memory per process, /dev/shm for the loader workers, disk for the predictions.

The models resident at once are bounded by `infer.model_memory` as `pie infer` bounds them
(`infer.pending.waves`: consecutive models whose weights fit together form a wave, each wave
decodes the dataset once); unset, the budget is half the device's free memory when the run
starts, which a plan cannot know, so the plan shows every model resident and says so. The
loader's prefetch is read from the DataLoader `infer.loader.data_loader` builds (not
iterated); model sizes and activations come from `pie.footprint`.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from dataclasses import dataclass

from infer import loader
from infer.config import InferConfig
from pie import catalog, checkpoints, console, store
from pie.errors import PieError
from pie.footprint import footprint, human
from pie.images import Preprocess
from pie.paths import WorkRoot

# A prediction row, uncompressed: label, pred, p_label, p_pred, key_id, model_ord (4 bytes
# each), top5 (5 x 4 bytes and an 8-byte list entry), and about 20 bytes for the key, model id
# and dataset strings once DuckDB has dictionary-compressed them. An estimate: DuckDB's
# compression usually stores less.
BYTES_PER_ROW = 6 * 4 + 5 * 4 + 8 + 20


@dataclass(frozen=True)
class ModelSpec:
    """What the plan needs of a model: how to build it and its input geometry."""

    arch: str
    classes: int
    channels: int
    image_size: int


def plan(
    models: list[ModelSpec], datasets: list[tuple[str, int]], cfg: InferConfig, world_size: int
) -> list[str]:
    """The lines of the inference plan: every model on every dataset (name, images)."""
    bf16 = cfg.precision == "bf16"
    images = sum(n for _, n in datasets)
    rows = len(models) * images
    kinds = Counter(models)
    prints = {m: footprint(m.arch, m.classes, m.channels, m.image_size, bf16) for m in kinds}
    sizes = [prints[m].state_dict_bytes for m in models]
    if cfg.model_memory is None:
        waves = [sizes]
        budget = "infer.model_memory unset: up to half the device's free memory at the start"
    else:
        waves = []
        for size in sizes:  # as infer.pending.waves cuts a group's models
            if not waves or sum(waves[-1]) + size > cfg.model_memory * 1024**3:
                waves.append([])
            waves[-1].append(size)
        budget = f"infer.model_memory = {cfg.model_memory:g} GiB"
    weights = max(sum(w) for w in waves)
    resident = max(len(w) for w in waves)
    biggest = max(kinds, key=lambda m: prints[m].infer_activation_bytes)
    activations = cfg.batch_size * prints[biggest].infer_activation_bytes
    pixels = max(m.channels * m.image_size**2 for m in kinds)
    with warnings.catch_warnings():  # more workers than this machine's cores: only a plan
        warnings.simplefilter("ignore")
        fetch = loader.data_loader([], cfg.workers, False).prefetch_factor or 0
    shm = cfg.workers * fetch * cfg.batch_size * pixels
    names = ", ".join(f"{name} ({n:,})" for name, n in datasets[:3])
    if len(datasets) > 3:
        names += f" and {len(datasets) - 3} more ({sum(n for _, n in datasets[3:]):,} images)"
    return [
        f"infer plan: {len(models)} models x {len(datasets)} datasets = "
        f"{len(models) * len(datasets)} (model, dataset) pairs, {rows:,} prediction rows "
        f"({len(models)} x {images:,} images), {world_size} ranks",
        f"  datasets        {names}",
        f"  GPU memory      per process, estimated: {human(weights + activations)} = "
        f"{resident} models resident at once ({human(weights)}; {budget}: {len(waves)} wave"
        f"{'s' * (len(waves) > 1)} of models, each decoding a dataset once) + activations "
        f"{human(activations)} "
        f"({cfg.batch_size:,} images x {human(prints[biggest].infer_activation_bytes)} for "
        f"{biggest.arch} at {cfg.precision}, measured by pie.footprint)",
        f"  /dev/shm        {human(shm)} per process = {cfg.workers} loader workers x {fetch} "
        f"batches x {cfg.batch_size:,} images x {pixels:,} bytes; {human(shm * world_size)} "
        f"for {world_size} ranks on one machine",
        f"  predictions     {human(rows * BYTES_PER_ROW)} = {rows:,} rows x {BYTES_PER_ROW} bytes "
        "(uncompressed estimate), as Parquet parts first, then in the database",
    ]


def dry_run(root: WorkRoot, cfg: InferConfig) -> None:
    """`pie infer --dry-run`: the plan for every registered model on the config's datasets
    (every evaluation set when it names none), from the database and the checkpoints'
    sidecars, on the world size torchrun gives (WORLD_SIZE; 1 without it), printed by rank 0.
    Pairs already evaluated are counted too."""
    if not root.db.exists():
        raise PieError(f"no database at {root.db}: run `pie ingest` and `pie train` first")
    with store.connect(root, read_only=True) as con:
        rows = catalog.model_rows(con)
        found = (
            [catalog.dataset(con, name) for name in cfg.datasets]
            if cfg.datasets
            else catalog.eval_datasets(con)
        )
    if not rows:
        raise PieError("no models yet: run `pie train` first")
    models = []
    for row in rows:
        sidecar = checkpoints.read_sidecar(root.checkpoint(row.model_id))
        pre = Preprocess.from_dict(sidecar.preprocess)
        models.append(ModelSpec(sidecar.arch, sidecar.num_classes, pre.channels, pre.size))
    datasets = [(d["name"], int(d["n_images"])) for d in found]
    lines = plan(models, datasets, cfg, int(os.environ.get("WORLD_SIZE", "1")))
    if int(os.environ.get("RANK", "0")) == 0:
        for line in lines:
            console.out.print(line, markup=False, soft_wrap=True)
