"""`pie infer`."""

from __future__ import annotations

from typing import Annotated

import typer

from infer.config import InferConfig
from pie import config, options
from pie.paths import open_root

app = typer.Typer()


@app.command()
def infer(
    datasets: Annotated[
        list[str] | None,
        typer.Option(
            "--dataset",
            "-d",
            help="Datasets to evaluate, training sets too [default: every eval set]",
        ),
    ] = None,
    workers: Annotated[int | None, typer.Option(help="DataLoader processes decoding")] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda")] = None,
    precision: Annotated[str | None, typer.Option(help="fp32, or bf16 autocast (CUDA)")] = None,
    channels_last: Annotated[
        bool | None, typer.Option("--channels-last/--no-channels-last", help="CUDA only")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run", help="Print the plan (pairs, rows, memory, disk) and evaluate nothing"
        ),
    ] = False,
    cfg_path: options.Config = options.DEFAULT,
    root: options.Root = None,
) -> None:
    """Evaluate every model on every dataset it has not seen; resumable, never duplicates.

    `torchrun --nproc_per_node=N -m pie infer` splits the batches across N processes."""
    from infer import plan, run

    cfg = config.load(
        InferConfig,
        cfg_path,
        "infer",
        dict(
            datasets=options.split_list(datasets),
            workers=workers,
            batch_size=batch_size,
            device=device,
            precision=precision,
            channels_last=channels_last,
        ),
    )
    if dry_run:
        plan.dry_run(open_root(root, create=False), cfg)
        return
    run.main(open_root(root), cfg)
