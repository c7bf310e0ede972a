"""`pie train` and `pie models` (list, show, import)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import click
import typer
from typer.core import TyperGroup

from pie import config, options
from pie.paths import open_root
from train.config import TrainConfig

app = typer.Typer()


@app.command()
def train(
    sparsities: Annotated[
        list[str] | None,
        typer.Option("--sparsity", "-s", help="Target sparsities, 0 = dense [default: config]"),
    ] = None,
    seeds: Annotated[int | None, typer.Option(help="Models per sparsity")] = None,
    methods: Annotated[
        list[str] | None, typer.Option("--method", "-m", help="Pruning methods [default: config]")
    ] = None,
    epochs: Annotated[float | None, typer.Option()] = None,
    init_from: Annotated[
        str | None,
        typer.Option(
            "--init-from",
            help="Start every job from these dense weights (a pie checkpoint directory or a "
            "state_dict file) and prune while fine-tuning",
        ),
    ] = None,
    data: Annotated[str | None, typer.Option(help="Input path: auto, memory or stream")] = None,
    save_every: Annotated[
        int | None, typer.Option(help="Steps between resumable states (0 = none)")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Models trained in parallel")] = None,
    loader_workers: Annotated[
        int | None, typer.Option(help="DataLoader worker processes per process (streaming)")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda")] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the plan (steps, epochs, memory, disk; `pie plan`) and train nothing",
        ),
    ] = False,
    cfg_path: options.Config = options.DEFAULT,
    root: options.Root = None,
) -> None:
    """Train the config's population: dense and pruned models, every seed and sparsity.

    Several processes or GPUs: `torchrun --nproc_per_node=N -m pie train ...` (see
    pie.distributed for several machines). A killed run resumes when run again.
    """
    from train import plan, population

    levels = options.numbers(sparsities, float, "--sparsity")
    cfg = config.load(
        TrainConfig,
        cfg_path,
        "train",
        dict(
            sparsities=levels,
            seeds=seeds,
            methods=options.split_list(methods),
            epochs=epochs,
            init_from=init_from,
            data=data,
            save_every=save_every,
            workers=workers,
            loader_workers=loader_workers,
            device=device,
        ),
    )
    if dry_run:
        plan.dry_run(open_root(root, create=False), cfg)
        return
    population.main(open_root(root), cfg)


class ModelsGroup(TyperGroup):
    """`pie models` lists the models and `pie models ID` shows one (`list` and `show`, named or
    not); `pie models import` imports."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args or (args[0].startswith("-") and args[0] != "--help"):
            args = ["list", *args]
        elif args[0] not in self.commands and not args[0].startswith("-"):
            args = ["show", *args]
        return super().parse_args(ctx, args)


models = typer.Typer(
    name="models", cls=ModelsGroup, help="The models: list, show one, import weights."
)
app.add_typer(models)


@models.command("list")
def list_models(root: options.Root = None) -> None:
    """Every model under the work root, from its sidecar (`pie models` alone does the same)."""
    from train import listing

    listing.main(open_root(root, create=False), None)


@models.command()
def show(
    model_id: Annotated[str, typer.Argument(help="A model's id")], root: options.Root = None
) -> None:
    """One model's sidecar and per-layer sparsity (`pie models ID` does the same)."""
    from train import listing

    listing.main(open_root(root, create=False), model_id)


@models.command("import")
def import_models(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Weights files (.pt/.pth state_dicts, .safetensors): one model each"),
    ],
    arch: Annotated[
        str, typer.Option(help="pie's, torchvision's (resnet50, vit_b_16...) or timm:<name>")
    ],
    method: Annotated[str, typer.Option(help="The population's method")] = "dense",
    sparsity: Annotated[float, typer.Option(help="The population's level (target sparsity)")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed of the first file, counting up")] = 0,
    experiment: Annotated[
        str | None, typer.Option(help="\\[default: the config's]", show_default=False)
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            help="The training set they stand for: its label space gives the class count"
            " \\[default: the config's]",
            show_default=False,
        ),
    ] = None,
    eval_dataset: Annotated[
        str | None, typer.Option(help="\\[default: the config's]", show_default=False)
    ] = None,
    image_size: Annotated[
        int | None,
        typer.Option(
            help="Input size \\[default: the model's metadata, else the config's]",
            show_default=False,
        ),
    ] = None,
    cfg_path: options.Config = options.DEFAULT,
    root: options.Root = None,
) -> None:
    """Register weights trained elsewhere as members of population (experiment, method,
    sparsity): checked against the arch, sparsity measured, sha256 pinned; then `pie infer`
    and `pie analyze` treat them as any other model."""
    from train import imports

    cfg = config.load(TrainConfig, cfg_path, "train")
    request = imports.Request(
        tuple(paths), arch, method, sparsity, seed, experiment, dataset, eval_dataset, image_size
    )
    imports.main(open_root(root), cfg, request)
