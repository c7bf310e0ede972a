"""`pie models import`: weights trained outside pie become members of a population.

Each file (a torch `state_dict`, `.pt`/`.pth`, as torchvision and timm save them, `module.`
prefixes and `state_dict`/`model` wrappers allowed, or `.safetensors`; read by `pie.weights`)
becomes one checkpoint of population (experiment, method, level = the sparsity given), seeds
counting up from `--seed`. Its class count is the label space's of the training set it stands
for (`--dataset`, default the config's); its preprocessing is the model's own (`pie.models.
model_preprocess`: timm's pretrained config, torchvision's weights metadata), else the
config's `[train]` one; `--image-size` sets the size. Every file is read and checked against
the model first (names and shapes exactly the model's, refused in one line naming the first
mismatch), so a bad file writes nothing.

A checkpoint is then written as pie writes its own (`checkpoints.save`: `model.pt` as a plain
state_dict, sha256, parameter counts and size pinned in the sidecar) and registered in
`models`: achieved and per-layer sparsity are measured from the weights (exact zeros among
`pie.models.prunable_weights`), `compression` records the source file's name and sha256, and
test_top1 is left empty (null): `pie infer` evaluates the model like any other. A file
imported again under the same id (same source sha256) is left as it is; another file under an
existing id is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import torch

from pie import catalog, checkpoints, console, store, weights
from pie.errors import PieError
from pie.images import Preprocess
from pie.models import create, model_preprocess, prunable_weights
from pie.paths import WorkRoot
from pie.shards import sha256_file
from train import data
from train.config import TrainConfig
from train.pruning import sparsity_report
from train.trainer import make_job

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]*")  # a method: part of a directory name


@dataclass(frozen=True)
class Request:
    """What `pie models import` was asked (None: the config's)."""

    paths: tuple[Path, ...]
    arch: str
    method: str = "dense"
    sparsity: float = 0.0
    seed: int = 0
    experiment: str | None = None
    dataset: str | None = None
    eval_dataset: str | None = None
    image_size: int | None = None


def model_id(experiment: str, method: str, level: float, seed: int) -> str:
    """The id pie would give a trained member: `<experiment>-dense-seed<n>`,
    `<experiment>-<method>-s<level>-seed<n>`."""
    if method == "dense" or level > 0:
        return make_job(experiment, method, level, seed).model_id
    return f"{experiment}-{method}-s0-seed{seed}"


def preprocess(arch: str, cfg: TrainConfig, image_size: int | None) -> Preprocess:
    """The model's own preprocessing where its metadata has one, else the config's."""
    own = model_preprocess(arch)
    pre = Preprocess.from_dict({**own, "channels": 3}) if own else data.preprocess(cfg)
    return pre if image_size is None else replace(pre, size=image_size)


def check(request: Request) -> None:
    if request.method != "dense" and not NAME.fullmatch(request.method):
        raise PieError(
            f"--method {request.method!r}: letters, digits and underscores only (it names"
            " checkpoint directories)"
        )
    if request.method == "dense" and request.sparsity != 0:
        raise PieError("--method dense goes with --sparsity 0 (the dense population)")
    if not 0.0 <= request.sparsity < 1.0:
        raise PieError(f"--sparsity must be in [0, 1), got {request.sparsity}")
    if request.seed < 0:
        raise PieError(f"--seed must be >= 0, got {request.seed}")
    for path in request.paths:
        if not path.is_file():
            raise PieError(f"models import: no such weights file {path}")


def loaded(path: Path, arch: str, num_classes: int, pre: Preprocess) -> torch.nn.Module:
    """`arch` with the weights of `path`, refused in one line unless they fit it exactly."""
    model = create(arch, num_classes, pre.channels, pre.size)
    state = weights.read(path, "models import:")
    weights.load_into(model, state, f"{path} does not fit {arch}", num_classes)
    return model.eval()


def main(root: WorkRoot, cfg: TrainConfig, request: Request) -> list[checkpoints.Sidecar]:
    """Import every file of `request`; returns the sidecars written (none for a file already
    imported under its id)."""
    started = datetime.now()
    check(request)
    experiment = request.experiment or cfg.experiment
    with store.writer_lock(root, "pie models import"), store.connect(root) as con:
        train_set = catalog.dataset(con, request.dataset or cfg.dataset)
        eval_name = request.eval_dataset or cfg.eval_dataset
        catalog.dataset(con, eval_name)  # known, or one line listing the known ones
        space = train_set["label_space"]
        num_classes = catalog.n_classes(con, space)
        pre = preprocess(request.arch, cfg, request.image_size)

        plan = []  # (path, model id, source sha256): every file checked before any is written
        for seed, path in enumerate(request.paths, request.seed):
            loaded(path, request.arch, num_classes, pre)
            ident = model_id(experiment, request.method, request.sparsity, seed)
            digest = sha256_file(path)
            directory = root.checkpoint(ident)
            if (directory / checkpoints.SIDECAR).exists():
                there = checkpoints.read_sidecar(directory).compression.get("sha256_source")
                if there != digest:
                    raise PieError(
                        f"model {ident} exists and is not {path.name}: give another --seed,"
                        f" --method or --experiment, or delete {directory}"
                    )
                console.say(f"models import: {path} is already {ident}")
                continue
            plan.append((path, ident, digest, seed))

        written = []
        for path, ident, digest, seed in plan:
            model = loaded(path, request.arch, num_classes, pre)
            achieved, per_layer = sparsity_report(
                {k: v.detach() for k, v in prunable_weights(model).items()}
            )
            sidecar = checkpoints.Sidecar(
                model_id=ident,
                experiment=experiment,
                arch=request.arch,
                num_classes=num_classes,
                label_space=space,
                method=request.method,
                target_sparsity=request.sparsity,
                achieved_sparsity=achieved,
                layer_sparsity=per_layer,
                seed=seed,
                torch_seed=0,
                train_dataset=train_set["name"],
                eval_dataset=eval_name,
                test_top1=None,
                train_loss=None,
                steps=0,
                schedule={},
                preprocess=pre.to_dict(),
                config={},
                torch_version=torch.__version__,
                device="",
                seconds=0.0,
                compression={"source": path.name, "sha256_source": digest},
            )
            sidecar = checkpoints.save(root, model, sidecar)
            checkpoints.register(con, root, sidecar)
            written.append(sidecar)
            console.say(
                f"models import: {path} -> {ident} ({request.arch}, {num_classes} classes,"
                f" achieved sparsity {achieved:.4f}, sha256 {sidecar.sha256[:12]})"
            )
        population = f"{experiment}/{request.method}/{request.sparsity:g}"
        there = len(request.paths) - len(written)
        summary = f"models import: {len(written)} models into {population}, {there} already there"
        if written:
            settings = {
                "arch": request.arch,
                "sources": [str(p) for p in request.paths],
                "preprocess": pre.to_dict(),
            }
            store.record_run(con, "import", experiment, settings, summary, started)
    console.say(summary)
    return written
