"""Terminal output: progress bars on stderr, results and one-line summaries on stdout."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

out = Console(highlight=False)
if not out.is_terminal:  # logs and pipes: wide enough for the summary table
    out = Console(highlight=False, width=170)
err = Console(stderr=True, highlight=False)


class Rate(ProgressColumn):
    """Items per second, e.g. `1,234 img/s`."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        return Text(f"{task.speed or 0:,.0f} {self.unit}/s")


@contextmanager
def progress(
    description: str, total: int | None, unit: str | None = None
) -> Iterator[Callable[[int], None]]:
    """A transient progress bar (done of total, `unit`s per second when given, time spent and
    left); yields `advance(n)`. Drawn on a terminal only, and under torchrun by rank 0 only
    (the other ranks share its work)."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *([Rate(unit)] if unit else []),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal or os.environ.get("RANK", "0") != "0",
    )
    with bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)


def say(message: str) -> None:
    """A result line (the one-line summary a stage ends with)."""
    out.print(message)
