"""`pie train` and `pie models`."""

from __future__ import annotations

from typing import Annotated

import typer

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


@app.command()
def models(
    model_id: Annotated[
        str | None, typer.Argument(help="A model's id: its per-layer sparsity [default: list]")
    ] = None,
    root: options.Root = None,
) -> None:
    """List the trained models, or show one model's sidecar and per-layer sparsity."""
    from train import listing

    listing.main(open_root(root, create=False), model_id)
