"""Run independent tasks in worker processes (or in this one when there is one worker).

`Workers(n)` is a pool of `n` worker processes, started at the first task that needs them and
shared by every call made under it (ingest packs several datasets with one). Workers are
spawned, not forked (torch and DuckDB do not survive a fork well), and only compute and write
files; the caller, the single database writer, records each result as it arrives. A task's
error is raised again in the caller as it was raised (a PieError stays one line).

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
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from itertools import chain, islice
from typing import Any, TypeVar

R = TypeVar("R")
WATCH_SECONDS = 0.5
PR_SET_PDEATHSIG = 1


class Workers:
    """`n` spawned worker processes, started at the first task (none when n = 1: tasks run in
    this process). Leaving the `with` block cancels what has not started and waits for the
    rest."""

    def __init__(self, n: int) -> None:
        self.n = n
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def ordered(self, fn: Callable[..., R], tasks: Iterable[tuple[Any, ...]]) -> Iterator[R]:
        """`fn(*task)` for every task, in task order, at most 2n tasks in flight (so memory
        stays flat however many tasks there are). Stopping early cancels the rest. A single
        task runs in this process: starting workers would cost more than it saves."""
        tasks = iter(tasks)
        head = list(islice(tasks, 2))
        if self.n <= 1 or len(head) < 2:
            for task in chain(head, tasks):
                yield fn(*task)
            return
        tasks = chain(head, tasks)
        pool = self.pool()
        pending: deque[Future[R]] = deque()
        try:
            for task in tasks:
                pending.append(pool.submit(fn, *task))
                if len(pending) >= 2 * self.n:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()

    def unordered(
        self, fn: Callable[..., R], tasks: Sequence[tuple[Any, ...]]
    ) -> Iterator[tuple[int, R]]:
        """(position, `fn(*task)`) for every task, as they complete: all submitted at once (the
        tasks must be small), so that uneven tasks keep every worker busy. Stopping early
        cancels the rest."""
        if self.n <= 1 or len(tasks) < 2:
            for i, task in enumerate(tasks):
                yield i, fn(*task)
            return
        pool = self.pool()
        futures = {pool.submit(fn, *task): i for i, task in enumerate(tasks)}
        try:
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            for future in futures:
                future.cancel()

    def pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.n,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=die_with_parent,
                initargs=(os.getpid(),),
            )
        return self._pool


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
