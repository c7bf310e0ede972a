"""The `pie` command: wires each stage's typer app into one CLI.

This is the only module that imports the stages. A user's mistake (`PieError`) is printed as
one `error:` line with exit code 2; Ctrl-C exits 130 without a traceback. Heavy modules (torch,
scipy, duckdb) are imported inside the commands, so `pie --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from analytics import cli as analytics_cli
from infer import cli as infer_cli
from ingest import cli as ingest_cli
from pie import console, options
from pie.errors import PieError
from pie.paths import open_root
from report import cli as report_cli
from train import cli as train_cli
from train import compress_cli


class PieGroup(TyperGroup):
    """Turns user errors into one line and a non-zero exit, for every subcommand."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PieError as e:
            console.err.print(f"error: {message(e)}", markup=False, soft_wrap=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            console.err.print("interrupted: nothing half-written was kept", markup=False)
            ctx.exit(130)


def message(error: PieError) -> str:
    """The error's message. One raised in a DataLoader worker comes back re-raised by torch
    with the worker's traceback in its text ("Caught PieError in DataLoader worker process 0.
    Original Traceback ..."): its last line holds the worker's own message."""
    text = str(error)
    if text.startswith("Caught PieError"):
        return text.rstrip().splitlines()[-1].removeprefix("pie.errors.PieError: ")
    return text


app = typer.Typer(
    name="pie",
    cls=PieGroup,
    help="What pruning does to an image classifier beyond top-1.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
for stage in (ingest_cli, train_cli, compress_cli, infer_cli, analytics_cli, report_cli):
    app.add_typer(stage.app)


def print_version(value: bool) -> None:
    if value:
        from pie import provenance

        console.out.print(provenance.describe(), markup=False, soft_wrap=True)
        raise typer.Exit()


@app.callback()
def options_of_pie(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=print_version, is_eager=True, help="pie's version and commit"
        ),
    ] = False,
) -> None:
    """What pruning does to an image classifier beyond top-1."""


@app.command()
def sql(
    statement: Annotated[str, typer.Argument(help="One SQL query (select, describe, explain...)")],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="table, csv, json or parquet")
    ] = "table",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write to FILE")] = None,
    max_rows: Annotated[
        int | None,
        typer.Option(help="Rows shown by --format table \\[default: 50]", show_default=False),
    ] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Stop the query after SECONDS", show_default=False)
    ] = None,
    root: options.Root = None,
) -> None:
    """One query over the predictions database (tables and views); writes no file but --out."""
    from pie import query

    query.main(open_root(root, create=False), statement, fmt, out, max_rows, timeout)


@app.command()
def tables(root: options.Root = None) -> None:
    """Every table and view of the database: its grain (one row per ...) and row count."""
    from pie import query

    query.tables(open_root(root, create=False))


@app.command()
def plan(
    world_size: Annotated[
        int | None,
        typer.Option(
            help="Ranks (torchrun processes) \\[default: $WORLD_SIZE, else 1]", show_default=False
        ),
    ] = None,
    loader_workers: Annotated[
        int | None,
        typer.Option(help="Loader workers per rank \\[default: config]", show_default=False),
    ] = None,
    train_images: Annotated[
        int | None, typer.Option(help="Training images (instead of the work root's shard index)")
    ] = None,
    eval_images: Annotated[
        int | None, typer.Option(help="Evaluation images (with --train-images)")
    ] = None,
    shard_images: Annotated[
        int, typer.Option(help="Images per shard (with --train-images), the last shard short")
    ] = 10_000,
    remote: Annotated[
        bool,
        typer.Option("--remote/--local", help="Shards on an object store (with --train-images)"),
    ] = False,
    classes: Annotated[
        int | None,
        typer.Option(
            help="Classes \\[default: the work root's database, else 1000]", show_default=False
        ),
    ] = None,
    cfg_path: options.Config = options.DEFAULT,
    root: options.Root = None,
) -> None:
    """What `pie train` and `pie infer` will do with this config, without training or decoding:
    jobs, steps, each epoch's per-rank batches, mask updates, resume cadence, GPU memory,
    /dev/shm and disk. A config that cannot run to its end is refused in one line."""
    import os

    from infer import plan as infer_plan
    from infer.config import InferConfig
    from pie import config
    from train import plan as train_plan
    from train.config import TrainConfig

    path = Path(cfg_path)
    cfg = config.load(TrainConfig, path, "train", dict(loader_workers=loader_workers))
    check_corrupt_geometry(config.read_toml(path).get("corrupt", {}), cfg, path)
    if train_images is None:
        if eval_images is not None:
            raise PieError("--eval-images goes with --train-images")
        work = open_root(root, create=False)
        train = train_plan.from_index(work.shards(cfg.dataset), cfg.dataset)
        evalset = train_plan.from_index(work.shards(cfg.eval_dataset), cfg.eval_dataset)
        classes_from = "--classes" if classes else "the database"
        classes = classes or train_plan.classes_in(work, cfg.dataset)
    else:
        if eval_images is None:
            raise PieError("--train-images needs --eval-images too")
        classes_from = "--classes"
        train = train_plan.from_counts(cfg.dataset, train_images, shard_images, remote)
        evalset = train_plan.from_counts(cfg.eval_dataset, eval_images, shard_images, remote)
    world = world_size or int(os.environ.get("WORLD_SIZE", "1"))
    if world < 1:
        raise PieError(f"--world-size must be at least 1, got {world}")
    if not classes:
        classes, classes_from = 1000, "assumed: give --classes"
    found = train_plan.plan(cfg, train, evalset, world, classes, classes_from)
    variants = corruption_variants(path, cfg.eval_dataset)
    datasets = [(evalset.name, evalset.images)] + [(v, evalset.images) for v in variants]
    spec = infer_plan.ModelSpec(cfg.arch, classes, cfg.channels, cfg.image_size)
    infer_cfg = config.load(InferConfig, path, "infer")
    lines = found.lines + infer_plan.plan([spec] * found.n_jobs, datasets, infer_cfg, world)
    for line in lines:
        console.out.print(line, markup=False, soft_wrap=True)


def check_corrupt_geometry(table: dict, cfg, path: Path) -> None:
    """A `[corrupt]` table whose image size or channels differ from the training geometry
    (the parent's, which the models are fed) is refused: its variants would not be the
    parent's images corrupted."""
    for key, want in (("image_size", cfg.image_size), ("channels", cfg.channels)):
        if key in table and table[key] != want:
            raise PieError(
                f"corrupt.{key} = {table[key]} in {path}, but the models see {cfg.dataset} at "
                f"{key} = {want} (train.{key}): corruptions must be made at the parent's geometry"
            )


def corruption_variants(path: Path, eval_dataset: str) -> list[str]:
    """The corrupted variants of `eval_dataset` the config's `[corrupt]` table makes (none
    without one, or when it corrupts another dataset)."""
    from ingest.config import CorruptConfig
    from pie import config

    if "corrupt" not in config.read_toml(path):
        return []
    corrupt = config.load(CorruptConfig, path, "corrupt")
    if corrupt.dataset != eval_dataset:
        return []
    return [f"{eval_dataset}-{c}-{s}" for c in corrupt.corruptions for s in corrupt.severities]


def main() -> None:
    app()
