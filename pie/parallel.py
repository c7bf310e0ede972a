"""Run independent tasks in worker processes (or in this one when workers = 1).

Workers are spawned, not forked (torch and DuckDB do not survive a fork well), and only
compute and write files; the caller, the single database writer, records each result as it
arrives.

Workers die with the process that started them, however it ends (SIGKILL included): on
Linux the kernel sends them SIGKILL when it dies (`prctl(PR_SET_PDEATHSIG)`), and everywhere
a daemon thread in each worker checks every `WATCH_SECONDS` that its parent is still the one
that started it and ends the worker at once (`os._exit`) when it is not.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

R = TypeVar("R")
WATCH_SECONDS = 0.5
PR_SET_PDEATHSIG = 1


def run_tasks(fn: Callable[..., R], tasks: Sequence[tuple[Any, ...]], workers: int) -> Iterator[R]:
    """Yield `fn(*task)` for every task, in completion order."""
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield fn(*task)
        return
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        min(workers, len(tasks)),
        mp_context=context,
        initializer=die_with_parent,
        initargs=(os.getpid(),),
    ) as pool:
        futures = [pool.submit(fn, *task) for task in tasks]
        try:
            for future in as_completed(futures):
                yield future.result()
        except BaseException:
            for future in futures:
                future.cancel()
            raise


def die_with_parent(parent: int) -> None:
    """Worker initializer: end this process when process `parent` is gone."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(AttributeError, OSError):  # else the watcher alone covers it
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
    threading.Thread(target=watch, args=(parent,), name="die-with-parent", daemon=True).start()


def watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(WATCH_SECONDS)
    os._exit(1)
