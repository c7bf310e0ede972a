"""`pie compress`: derived populations, one derived model per model of a parent population.

Every model of the parent population (experiment, `parent`: 'dense' by default, or
'<method>@<level>') gets one derived model per method and level,
`<parent_id>.<method>-<level>`: same experiment, seed, architecture and training record as its
parent, `parent_id` its parent's id, so that each derived model pairs with its parent seed by
seed; from a parent other than dense, its population's method is `population_method`'s.
Methods:
- oneshot_magnitude, oneshot_global_magnitude: magnitude pruning of the trained weights at each
  of `sparsities` (level = sparsity; `train.sparsify`), optionally fine-tuned `finetune_steps`
  steps with the masks held;
- semistructured_<n>_<m> (2_4: NVIDIA's 2:4): n of every m consecutive weights kept along the
  reduction dimension (level = 1 - n/m);
- float16, bfloat16 (level 16), int8_hybrid, int8_full (level 8): quantisation
  (`train.quantise`, `pie.compressed`); int8_full is calibrated on `calibration` training images.
Each derived model's test top-1 is measured on its parent's evaluation set, with the program
as it is stored (int8 programs with their int8 kernels, on the CPU), and its sidecar records
the method's settings (`compression`), its sparsity, parameter counts and bytes on disk.

Before anything is written, every check that can fail runs: the methods and levels, the
device (int8 programs have CPU kernels only: `--device cuda` is refused for them), the parent
population, the evaluation and (int8_full) training shards. A rerun makes only what is missing;
a derived checkpoint made with other settings is refused in one line, as `pie train` does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import torch

from pie import catalog, checkpoints, compressed, console, store
from pie.config import differences, to_dict
from pie.distributed import World
from pie.errors import PieError
from pie.images import Preprocess, normalize
from pie.models import resolve_device
from pie.paths import WorkRoot, check_name
from train import data, loaders, quantise, sparsify
from train.config import ONESHOT, SEMISTRUCTURED, CompressConfig
from train.pruning import sparsity_report

MEASURED = ("skipped", "finetune_loss")  # compression entries measured, not asked


@dataclass(frozen=True)
class Job:
    parent: checkpoints.Sidecar
    method: str  # what is done to the parent
    level: float
    recipe: dict[str, Any]  # the settings that make it (its sidecar's `compression`, asked)
    population: str  # the method its population is named by (`population_method`)

    @property
    def model_id(self) -> str:
        return f"{self.parent.model_id}.{self.method}-{self.level:g}"


def recipes(
    cfg: CompressConfig, method: str, parent: checkpoints.Sidecar
) -> list[tuple[float, dict[str, Any]]]:
    """(level, settings) of each model `method` derives from `parent`: all that is asked, so
    that a rerun compares them with what a derived model on disk was made with."""
    if method in ONESHOT:
        steps = {"finetune_steps": cfg.finetune_steps}
        if cfg.finetune_steps:
            steps["finetune_lr"] = cfg.finetune_lr
        return [
            (s, {"method": method, "rule": ONESHOT[method], "sparsity": s, **steps})
            for s in sorted(cfg.sparsities)
        ]
    pattern = SEMISTRUCTURED.match(method)
    if pattern:
        n, m = int(pattern[1]), int(pattern[2])
        return [(1 - n / m, {"method": method, "n": n, "m": m})]
    calibration = None
    if method == "int8_full":
        calibration = {
            "dataset": parent.train_dataset, "images": cfg.calibration, "seed": cfg.calibration_seed
        }  # fmt: skip
    return [(float(quantise.BITS[method]), quantise.description(method, calibration))]


def check_device(cfg: CompressConfig) -> torch.device:
    device = resolve_device(cfg.device)
    int8 = [m for m in cfg.methods if m in compressed.INT8]
    if int8 and device.type != "cpu":
        raise PieError(
            f"{int8[0]} runs torch's {compressed.ENGINE} int8 kernels, which exist on the CPU only:"
            f" --device {cfg.device} has none (use --device cpu)"
        )
    if int8:
        compressed.use_engine()
    return device


def population_method(parent: str, method: str) -> str:
    """The method a derived population is named by: the compression's own name from the dense
    population, `<method>_of_<parent method>_<parent level>` from another one, so that int8
    models of a 90 % pruned population are not pooled with int8 models of the dense one."""
    if parent == "dense":
        return method
    parent_method, parent_level = parent.split("@")
    return f"{method}_of_{parent_method}_{float(parent_level):g}"


def find_jobs(con, root: WorkRoot, cfg: CompressConfig) -> tuple[list[Job], int]:
    """The pending jobs and the number already on disk (those registered if they were not);
    every check runs here, before anything is made."""
    parent_method, level = ("dense", 0.0) if cfg.parent == "dense" else cfg.parent.split("@")
    rows = store.rows(
        con,
        "select model_id from models where experiment = ? and method = ? and level = ?"
        " and parent_id is null order by model_id",
        [cfg.experiment, parent_method, float(level)],
    )
    if not rows:
        raise PieError(
            f"no models of population ({cfg.experiment}, {parent_method}, level"
            f" {float(level):g}) to compress: run `pie train` first (or name another parent"
            " population with --parent METHOD@LEVEL)"
        )
    parents = [checkpoints.read_sidecar(root.checkpoint(r[0])) for r in rows]
    registered = {m.model_id: m.sha256 for m in catalog.model_rows(con)}
    pending, existing = [], 0
    for parent in parents:
        data.shard_set(root.shards(parent.eval_dataset), parent.eval_dataset)
        if "int8_full" in cfg.methods:
            data.shard_set(root.shards(parent.train_dataset), parent.train_dataset)
        for method in cfg.methods:
            for level, recipe in recipes(cfg, method, parent):
                job = Job(parent, method, level, recipe, population_method(cfg.parent, method))
                check_name(job.model_id.replace(".", "-"), "model id")
                directory = root.checkpoint(job.model_id)
                if not (directory / checkpoints.SIDECAR).exists():
                    pending.append(job)
                    continue
                made = checkpoints.read_sidecar(directory).compression
                differ = differences(made, recipe, MEASURED)
                if differ:
                    raise PieError(
                        f"checkpoint {job.model_id} was made with {differ[0]}, this run asks"
                        f" {differ[1]}: delete {directory} to make it again"
                    )
                checkpoints.reconcile(con, root, job.model_id, registered.get(job.model_id))
                existing += 1
    return pending, existing


def evaluation(root: WorkRoot, con, parent: checkpoints.Sidecar) -> loaders.Input:
    """The parent's evaluation set as its model sees it, read without augmentation."""
    dataset = catalog.dataset(con, parent.eval_dataset)
    pre = Preprocess.from_dict(parent.preprocess).for_dataset(dataset)
    shards = data.shard_set(root.shards(parent.eval_dataset), parent.eval_dataset)
    kind = loaders.PATHS[data.choose_path("auto", shards.n_images, pre, shards.remote)]
    return kind(shards, pre, None, 0, World(), loaders.EVAL_BATCH, 1, 0, False)


@torch.inference_mode()
def top1(model: torch.nn.Module, test: loaders.Input, device: torch.device) -> float:
    model.eval()
    correct = total = 0
    for x, y in test.evaluation():
        pred = model(normalize(x.to(device), test.pre)).argmax(1).cpu()
        correct, total = correct + int((pred == y).sum()), total + len(y)
    return correct / max(1, total)


def make(root: WorkRoot, job: Job, test: loaders.Input, device: torch.device, cfg: CompressConfig):
    """The derived model of `job`, evaluated and saved; returns its sidecar."""
    started = time.time()
    parent = job.parent
    model, _ = checkpoints.load(root.checkpoint(parent.model_id))
    train_cfg = sparsify.trained_with(parent.config)
    recipe = dict(job.recipe)
    if job.method in quantise.METHODS:
        pre = Preprocess.from_dict(parent.preprocess)
        calibration = []
        if job.method == "int8_full":
            count, seed = recipe["calibration"]["images"], recipe["calibration"]["seed"]
            calibration = quantise.calibration_images(root, parent.train_dataset, pre, count, seed)
        stored = quantise.quantise(model, job.method, pre, calibration)
        runnable = compressed.runnable(stored, job.method)
        target, run_on = parent.target_sparsity, torch.device("cpu")
        if job.method in compressed.FLOATS:
            run_on = device
    else:
        weights = sparsify.prunable(model, train_cfg)
        if job.method in ONESHOT:
            masks = sparsify.oneshot_masks(weights, job.level, ONESHOT[job.method])
        else:
            masks, skipped = sparsify.n_m_masks(weights, recipe["n"], recipe["m"])
            recipe["skipped"] = skipped
        sparsify.apply(masks, weights)
        if recipe.get("finetune_steps"):
            recipe["finetune_loss"] = sparsify.finetune(
                model, masks, root, train_cfg, cfg.finetune_steps, cfg.finetune_lr,
                parent.torch_seed, device,
            )  # fmt: skip
        stored = runnable = model
        target, run_on = job.level, device
    names = set(parent.layer_sparsity)
    achieved, per_layer = sparsity_report(
        {n: w for n, w in compressed.weights(stored).items() if n in names}
    )
    sidecar = replace(
        parent,
        model_id=job.model_id,
        method=job.population,
        target_sparsity=target,
        level=job.level,
        parent_id=parent.model_id,
        compression=recipe,
        achieved_sparsity=achieved,
        layer_sparsity=per_layer,
        test_top1=top1(runnable.to(run_on), test, run_on),
        torch_version=torch.__version__,
        device=str(run_on),
        seconds=round(time.time() - started, 2),
    )
    return checkpoints.save(root, stored, sidecar)


def main(root: WorkRoot, cfg: CompressConfig) -> list[str]:
    """Make every derived model that is missing; returns the model ids made."""
    started = datetime.now()
    if not cfg.methods:
        raise PieError("no compression methods: give --method or set compress.methods")
    device = check_device(cfg)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    made: list[checkpoints.Sidecar] = []
    with store.writer_lock(root, "pie compress"):
        with store.connect(root) as con:
            pending, existing = find_jobs(con, root, cfg)
            tests = {j.parent.model_id: evaluation(root, con, j.parent) for j in pending}
        console.say(f"compress: {len(pending)} models to make, {existing} already there")
        with console.progress(f"compressing {len(pending)} models", len(pending)) as advance:
            for job in pending:
                sidecar = make(root, job, tests[job.parent.model_id], device, cfg)
                with store.connect(root) as con:
                    checkpoints.register(con, root, sidecar)
                made.append(sidecar)
                advance(1)
        summary = f"compress: {len(made)} models made, {existing} already there"
        if made:
            with store.connect(root) as con:
                store.record_run(con, "compress", cfg.experiment, to_dict(cfg), summary, started)
    console.say(summary)
    return sorted(s.model_id for s in made)
