"""CLI options shared by every stage command (typer `Annotated` aliases)."""

from __future__ import annotations

from typing import Annotated

import typer

from pie.config import DEFAULT_CONFIG

Root = Annotated[
    str | None,
    typer.Option(
        "--root", envvar="PIE_ROOT", help="Work root [default: ./work]", show_default=False
    ),
]
Config = Annotated[
    str,
    typer.Option("--config", "-c", envvar="PIE_CONFIG", help="Experiment TOML file"),
]
DEFAULT = DEFAULT_CONFIG


def split_list(values: list[str] | None) -> tuple[str, ...] | None:
    """`-x a,b -x c` -> ('a', 'b', 'c'); None when the option was not given."""
    if not values:
        return None
    return tuple(v.strip() for value in values for v in value.split(",") if v.strip())
