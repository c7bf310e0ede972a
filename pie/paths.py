"""The work root: every file a run produces lives under it, so deleting it resets the project.

<root>/pie.duckdb                                    the database
<root>/config.toml                                   the experiment config, when there is one
<root>/shards/<dataset>/<dataset>-000000.tar         WebDataset shards + index.json (wids)
<root>/checkpoints/<model_id>/model.pt, model.json   weights with zeros baked in + sidecar
<root>/parts/<table>/*.parquet                       staging written by parallel workers
<root>/exports/<dataset>/<sparsity>/<method>/        exported PIE / non-PIE shards
<root>/report/                                       the report
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from pie.errors import PieError

DEFAULT_ROOT = "work"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def check_name(name: str, what: str = "name") -> str:
    """A dataset or experiment name becomes a directory under the work root: letters, digits,
    `-` and `_` only, not starting with `-` or `_` (no path separators, no leading dot)."""
    if not isinstance(name, str) or not NAME.match(name):
        raise PieError(
            f"invalid {what} {name!r}: use letters, digits, '-' and '_' "
            "(starting with a letter or digit)"
        )
    return name


def format_sparsity(sparsity: float) -> str:
    """0.9 -> '0.9', 0.0 -> '0': the spelling used in paths and dataset names."""
    return f"{sparsity:g}"


@dataclass(frozen=True)
class WorkRoot:
    path: Path

    @property
    def db(self) -> Path:
        return self.path / "pie.duckdb"

    @property
    def config(self) -> Path:
        return self.path / "config.toml"

    def shards(self, dataset: str) -> Path:
        return self.path / "shards" / dataset

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    def checkpoint(self, model_id: str) -> Path:
        return self.checkpoints / model_id

    def parts(self, table: str) -> Path:
        return self.path / "parts" / table

    def export(self, dataset: str, sparsity: float, method: str) -> Path:
        return self.path / "exports" / dataset / format_sparsity(sparsity) / method

    @property
    def report(self) -> Path:
        return self.path / "report"


def root_path(root: str | os.PathLike | None = None) -> Path:
    """The work root's path: the argument, else $PIE_ROOT, else ./work (nothing is created)."""
    return Path(root or os.environ.get("PIE_ROOT") or DEFAULT_ROOT).expanduser()


def open_root(root: str | os.PathLike | None = None, *, create: bool = True) -> WorkRoot:
    """The work root at `root_path(root)`.

    create=True (the stages that write): the directory is made if missing and must be writable.
    create=False (commands that only read): it must already exist; nothing is created.
    """
    path = root_path(root)
    if not create:
        if not path.is_dir():
            what = "is not a directory" if path.exists() else "does not exist"
            raise PieError(f"no work root at {path}: it {what} (check --root or PIE_ROOT)")
        return WorkRoot(path.resolve())
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PieError(f"cannot create work root {path}: {e.strerror or e}") from None
    if not os.access(path, os.W_OK):
        raise PieError(f"work root {path} is not writable")
    return WorkRoot(path.resolve())
