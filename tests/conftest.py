"""Shared test helpers: fixtures (a work root in a temp dir, an in-memory store, a packed tiny
Fashion-MNIST), the `pie(...)` CLI runner, IDX and shard helpers, row builders for views."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from pie import store
from pie.cli import app
from pie.paths import WorkRoot, open_root
from pie.shards import shard_paths
from train.config import TrainConfig

FMNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
runner = CliRunner()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--reverse",
        action="store_true",
        help="run the collected tests in reverse order (a test must not depend on another's)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--reverse"):
        items.reverse()


# A few seconds of CPU training on the `packed` fixture.
TINY_TRAIN = TrainConfig(
    experiment="t",
    epochs=3,
    batch_size=16,
    prune_start_epoch=0.5,
    prune_end_epoch=2,
    prune_frequency=1,
    device="cpu",
)


def pie(*args: str, ok: bool = True):
    """Run the `pie` CLI in-process (stdout is not a terminal); `ok`: expect exit code 0."""
    result = runner.invoke(app, list(args))
    if ok:
        assert result.exit_code == 0, result.output + repr(result.exception)
    return result


def assert_one_line_error(result, expected: str) -> None:
    """A user mistake: non-zero exit, no traceback, exactly one `error:` line naming it."""
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert expected in lines[0], lines[0]


def write_idx(path: Path, array: np.ndarray) -> None:
    """A gzipped IDX file (the Fashion-MNIST format) of a uint8 array."""
    magic = 2048 + array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def shard_digests(directory) -> list[str]:
    """sha256 of each shard of a dataset directory, in shard order."""
    return [hashlib.sha256(p.read_bytes()).hexdigest() for p in shard_paths(directory)]


@pytest.fixture
def root(tmp_path: Path) -> WorkRoot:
    return open_root(tmp_path / "work")


@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    connection = store.memory()
    yield connection
    connection.close()


def pack_tiny(root: WorkRoot, scratch: Path) -> WorkRoot:
    """`root` with a random 64-image fmnist-train and 20-image fmnist-test packed (IDX files
    written to `scratch`)."""
    from ingest import pack, sources
    from ingest.config import IngestConfig

    rng = np.random.default_rng(0)
    for stem, n in (("train", 64), ("t10k", 20)):
        write_idx(scratch / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(scratch / f"{stem}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    pack.main(root, IngestConfig(), [sources.fashion_mnist(scratch, s) for s in ("train", "test")])
    return root


@pytest.fixture
def packed(root: WorkRoot, tmp_path: Path) -> WorkRoot:
    """`root` with a random 64-image fmnist-train and 20-image fmnist-test packed."""
    return pack_tiny(root, tmp_path)


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
    frame = pa.table(
        {
            "model_id": [model_id] * len(rows),
            "dataset": [dataset] * len(rows),
            "key": [key for key, _, _ in rows],
            "label": pa.array([label for _, label, _ in rows], pa.int32()),
            "pred": pa.array([pred for _, _, pred in rows], pa.int32()),
            "top5": pa.array(
                [[pred] if pred == label else [pred, label] for _, label, pred in rows],
                pa.list_(pa.int32()),
            ),
            "p_label": pa.array([p_label] * len(rows), pa.float32()),
            "p_pred": pa.array([0.9] * len(rows), pa.float32()),
        }
    )
    con.register("_rows", frame)
    store.insert_predictions(con, "select * from _rows")
    con.unregister("_rows")


class Stopped(Exception):
    """Raised by a training job inside `stopped_after_first_save`."""


def stopped_after_first_save(job) -> None:
    """Run `job()` (a training job with `save_every` set) as if killed right after it wrote its
    first resumable state: `train.resume.save` writes the state, then the job stops (the state
    is where `train.resume.state_path` says)."""
    from train import resume

    real = resume.save

    def save_then_stop(*args, **kwargs):
        real(*args, **kwargs)
        raise Stopped

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(resume, "save", save_then_stop)
        with pytest.raises(Stopped):
            job()
