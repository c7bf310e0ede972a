"""A population = (experiment, method, level), as the SQL defines it (sql/staging/populations.sql):
how to name one, tell the dense one, and choose one from the command line.

level is the target sparsity for dense and pruned populations and the bit width for quantised
ones (a model whose `compression` records `bits`); the dense population of an experiment is its
models of method 'dense' at level 0, and every other population is compared with it. The
exemplars of a pruned population are PIEs (pruning identified exemplars), those of any other
compression CIEs (compression identified exemplars): the same modal rule.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pie.errors import PieError

DENSE = "dense"


def is_dense(row: Mapping[str, Any]) -> bool:
    """The row (any relation with method and level) is of the dense population."""
    return row["method"] == DENSE and row["level"] == 0


def level_text(level: float, quantised: bool | None = False) -> str:
    """0.9 -> '0.9' (a sparsity), 8 quantised -> '8-bit'."""
    return f"{level:g}-bit" if quantised else f"{level:g}"


def label(method: str, level: float, quantised: bool | None = False) -> str:
    """'magnitude 0.9', 'int8_full 8-bit', 'dense 0'."""
    return f"{method} {level_text(level, quantised)}"


def exemplars(quantised: bool | None) -> str:
    """What the population's exemplars are called: CIEs for a quantised one, else PIEs."""
    return "CIEs" if quantised else "PIEs"


def sort_key(row: Mapping[str, Any]) -> tuple:
    """Dense first, then by method and level: each method's levels side by side."""
    return (not is_dense(row), row["method"], row["level"])


def chosen_level(level: float | None, sparsity: float | None) -> float | None:
    """The level a command asks for: --level, else --sparsity (a pruning method's level is its
    sparsity); both given and different is a user mistake."""
    if level is not None and sparsity is not None and level != sparsity:
        raise PieError(
            f"--level {level:g} and --sparsity {sparsity:g} disagree: give one"
            " (a pruning method's level is its sparsity)"
        )
    return level if level is not None else sparsity
