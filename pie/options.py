"""CLI options shared by every stage command (typer `Annotated` aliases). Help texts are rich
markup: a literal `[` is written `\\[`.

`--root` is eager (click processes it before the other options), so that `--config`'s callback
can look for `<root>/config.toml`: a stage command receives the resolved config file's path.
"""

from __future__ import annotations

from typing import Annotated

import typer

from pie import config
from pie.errors import PieError

Root = Annotated[
    str | None,
    typer.Option(
        "--root",
        envvar="PIE_ROOT",
        is_eager=True,
        help="Work root \\[default: ./work]",
        show_default=False,
    ),
]


def resolve_config(ctx: typer.Context, value: str | None) -> str:
    """--config, else $PIE_CONFIG, else <root>/config.toml if present, else the packaged one."""
    return str(config.resolve(value, ctx.params.get("root")))


Config = Annotated[
    str | None,
    typer.Option(
        "--config",
        "-c",
        envvar="PIE_CONFIG",
        callback=resolve_config,
        help="Experiment TOML file \\[default: <root>/config.toml if present, else the packaged "
        "fashion-mnist.toml]",
        show_default=False,
    ),
]
DEFAULT = None  # resolved by `resolve_config`


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
