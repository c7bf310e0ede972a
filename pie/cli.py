"""The `pie` command: wires each stage's typer app into one CLI.

This is the only module that imports the stages. A user's mistake (`PieError`) is printed as
one `error:` line with exit code 2; Ctrl-C exits 130 without a traceback. Heavy modules (torch,
scipy, duckdb, polars) are imported inside the commands, so `pie --help` stays fast.
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
for stage in (ingest_cli, train_cli, infer_cli, analytics_cli, report_cli):
    app.add_typer(stage.app)


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


def main() -> None:
    app()
