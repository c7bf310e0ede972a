"""Shared fixtures: a work root in a temp dir, an in-memory store, row builders for views."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from pie import store
from pie.paths import WorkRoot, open_root

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def root(tmp_path: Path) -> WorkRoot:
    return open_root(tmp_path / "work")


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    connection = store.memory()
    yield connection
    connection.close()


@pytest.fixture
def fmnist_dir() -> Path:
    if not (FMNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.fail(f"Fashion-MNIST missing at {FMNIST_DIR}: run `make data` (make test does)")
    return FMNIST_DIR


def add_dataset(
    con,
    name: str,
    kind: str = "clean",
    parent: str | None = None,
    corruption: str | None = None,
    severity: int | None = None,
    label_space: str = "ls",
    origin: str = "released",
) -> None:
    con.execute(
        "insert into datasets (name, label_space, kind, split, parent, corruption, severity,"
        " n_images, path, source, origin) values (?, ?, ?, 'eval', ?, ?, ?, 0, '', 'test', ?)",
        [name, label_space, kind, parent, corruption, severity, origin],
    )


def add_model(con, model_id: str, method: str, sparsity: float, experiment: str = "exp") -> None:
    con.execute(
        "insert into models (model_id, experiment, arch, label_space, method, target_sparsity,"
        " achieved_sparsity, seed, train_dataset, path, sha256, config)"
        " values (?, ?, 'small_cnn', 'ls', ?, ?, ?, 0, 'train', '', '', '{}')",
        [model_id, experiment, method, sparsity, sparsity],
    )


def add_predictions(
    con, model_id: str, dataset: str, rows: list[tuple[str, int, int]], p_label: float = 0.5
) -> None:
    """rows: (key, label, pred); top5 = [pred, then the label when it differs]."""
    for key, label, pred in rows:
        top5 = [pred] if pred == label else [pred, label]
        con.execute(
            "insert into predictions values (?, ?, ?, ?, ?, ?, ?, ?)",
            [model_id, dataset, key, label, pred, top5, p_label, 0.9],
        )
