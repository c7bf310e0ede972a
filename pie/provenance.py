"""Which pie made something: its version and, in a git checkout, the commit of its code.

Recorded in every checkpoint sidecar, `inference_runs` row and `runs` row (each stage's run,
`pie analyze` included), and printed by `pie --version`. The commit is `git rev-parse HEAD` of
the directory pie's code is in, with `-dirty` when the tree has uncommitted changes; None when
pie is not in a git checkout (an installed wheel) or git is missing. Computed once per process.
"""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

CODE = Path(__file__).resolve().parent.parent  # the checkout (or site-packages) pie is in


@functools.cache
def version() -> str:
    try:
        return metadata.version("pie")
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


@functools.cache
def commit(directory: Path = CODE) -> str | None:
    """HEAD of the git checkout `directory` is in, `-dirty` if it has changes; else None."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(directory), *args], capture_output=True, text=True, timeout=10
        )
        if done.returncode != 0:
            raise OSError(done.stderr)
        return done.stdout.strip()

    try:
        if git("rev-parse", "--show-toplevel") != str(directory.resolve()):
            return None  # pie installed inside some other repository's tree
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):  # not a checkout, no git, no commit yet
        return None
    return f"{head}-dirty" if dirty else head


def describe() -> str:
    """`pie <version>` and the commit when there is one."""
    found = commit()
    return f"pie {version()}" + (f" (commit {found})" if found else "")
