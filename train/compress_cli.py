"""`pie compress`."""

from __future__ import annotations

from typing import Annotated

import typer

from pie import config, options
from pie.paths import open_root
from train.config import CompressConfig

app = typer.Typer()


@app.command()
def compress(
    methods: Annotated[
        list[str] | None,
        typer.Option(
            "--method",
            "-m",
            help="oneshot_magnitude, oneshot_global_magnitude, semistructured_<n>_<m> (e.g. "
            "semistructured_2_4), float16, bfloat16, int8_hybrid, int8_full \\[default: config]",
            show_default=False,
        ),
    ] = None,
    sparsities: Annotated[
        list[str] | None,
        typer.Option("--sparsity", "-s", help="The one-shot methods' sparsities [default: config]"),
    ] = None,
    parent: Annotated[
        str | None,
        typer.Option(
            help="The parent population: dense, or METHOD@LEVEL (magnitude@0.9) \\[default: dense]",
            show_default=False,
        ),
    ] = None,
    finetune_steps: Annotated[
        int | None, typer.Option(help="One-shot methods: fine-tune steps with the masks held")
    ] = None,
    finetune_lr: Annotated[float | None, typer.Option(help="The fine-tune's learning rate")] = None,
    calibration: Annotated[
        int | None, typer.Option(help="int8_full: training images calibrating the activations")
    ] = None,
    device: Annotated[
        str | None, typer.Option(help="auto, cpu or cuda (int8 methods: cpu only)")
    ] = None,
    cfg_path: options.Config = options.DEFAULT,
    root: options.Root = None,
) -> None:
    """Derive a population from every model of another one (by default the dense one): pruned
    one-shot or N:M, or quantised (float16, bfloat16, int8); each derived model records its
    parent. A rerun makes only what is missing."""
    from train import compress as run

    cfg = config.load(
        CompressConfig,
        cfg_path,
        "compress",
        dict(
            methods=options.split_list(methods),
            sparsities=options.numbers(sparsities, float, "--sparsity"),
            parent=parent,
            finetune_steps=finetune_steps,
            finetune_lr=finetune_lr,
            calibration=calibration,
            device=device,
        ),
    )
    run.main(open_root(root), cfg)
