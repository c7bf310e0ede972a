"""`pie train`."""

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
    workers: Annotated[int | None, typer.Option(help="Models trained in parallel")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda")] = None,
    cfg_path: options.Config = options.DEFAULT,
    root: options.Root = None,
) -> None:
    """Train the config's population: dense and pruned models, every seed and sparsity."""
    from train import population

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
            workers=workers,
            device=device,
        ),
    )
    population.main(open_root(root), cfg)
