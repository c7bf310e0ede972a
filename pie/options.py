"""CLI options shared by every stage command (typer `Annotated` aliases)."""

from __future__ import annotations

from typing import Annotated

import typer

from pie.config import DEFAULT_CONFIG
from pie.errors import PieError

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


def numbers(values: list[str] | None, kind: type, flag: str) -> tuple | None:
    """`-s 0,0.5 -s 0.9` -> (0.0, 0.5, 0.9) for kind float; a bad number is a user error."""
    items = split_list(values)
    if items is None:
        return None
    try:
        return tuple(kind(v) for v in items)
    except ValueError:
        raise PieError(f"{flag} takes {kind.__name__} values, got {', '.join(items)}") from None
