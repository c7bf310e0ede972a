"""One error line everywhere: `pie export`, `pie infer` and `pie analyze` on bad input end in
exactly one `error:` line naming the problem, exit code 2, no traceback."""

from __future__ import annotations

import json

import pytest
from conftest import assert_one_line_error, pie
from test_export import pie_root
from test_train import sidecar_for
from torch._utils import ExceptionWrapper

from infer import loader
from pie import catalog, checkpoints, store
from pie.errors import PieError
from pie.models import create
from pie.paths import open_root
from pie.shards import shard_paths


def check_fails(root, *args: str, expected: str) -> None:
    result = pie(*args, "--root", str(root.path), ok=False)
    assert result.exit_code == 2, result.output
    assert_one_line_error(result, expected)


def with_model(root):
    """`root` with an untrained model registered: fmnist-test is pending for it."""
    sidecar = checkpoints.save(root, create("small_cnn", 10, 1, 28), sidecar_for("m"))
    with store.connect(root) as con:
        catalog.register_model(con, sidecar)
    return root


def test_infer_analyze_and_export_on_bad_input_end_in_one_error_line(packed, tmp_path, monkeypatch):
    empty = open_root(tmp_path / "empty")
    check_fails(empty, "export", expected="no database at")
    check_fails(empty, "infer", "--device", "cpu", expected="no models yet: run `pie train` first")
    check_fails(empty, "analyze", expected="no predictions: run `pie infer` first")

    # a model, no predictions; then fmnist-test's shard cut short, then gone
    root = with_model(packed)
    infer = ("infer", "--device", "cpu", "--workers", "0")
    check_fails(root, *infer, "--dataset", "nosuch", expected="unknown dataset 'nosuch'")
    check_fails(root, "analyze", expected="no predictions: run `pie infer` first")
    (shard,) = shard_paths(root.shards("fmnist-test"))
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    cut = f"shard {shard} has {len(data) // 2} bytes, its index says {len(data)}: truncated"
    check_fails(root, *infer, expected=cut)  # found before a loader starts
    shard.write_bytes(data)
    with monkeypatch.context() as m:  # an error raised in a loader worker process
        m.setattr(loader, "read_chunk", in_a_worker(PieError(f"shard {shard}: cut short")))
        check_fails(root, *infer, expected=f"shard {shard}: cut short")
    shard.unlink()
    check_fails(root, *infer, expected=f"shard {shard} is missing")

    exported = open_root(tmp_path / "pies")  # dataset d with two PIEs at 0.9
    pie_root(exported).close()
    (tmp_path / "exp.toml").write_text('name = "exp"\n')
    export = ("export", "--config", str(tmp_path / "exp.toml"), "-d", "d")
    check_fails(exported, *export[:3], "-d", "nosuch", expected="unknown dataset 'nosuch'")
    check_fails(exported, *export, "--sparsity", "0.5", expected="no PIE data for d / exp")
    (shard,) = shard_paths(exported.shards("d"))
    shard.unlink()
    check_fails(exported, *export, "--sparsity", "0.9", expected=f"shard {shard} is missing")


def in_a_worker(error: Exception):
    """A reader that fails as a DataLoader worker's failure reaches the main process: re-raised
    by torch's ExceptionWrapper, with the worker's traceback in the message."""

    def read_chunk(chunk, reader):
        try:
            raise error
        except type(error):
            ExceptionWrapper(where="in DataLoader worker process 0").reraise()

    return read_chunk


@pytest.mark.slow
def test_an_error_in_a_real_loader_worker_is_one_line(packed):
    root = with_model(packed)
    (shard,) = shard_paths(root.shards("fmnist-test"))
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    index = json.loads((shard.parent / "index.json").read_text())
    index["shardlist"][0]["filesize"] = len(data) // 2  # the size check passes: the worker reads
    (shard.parent / "index.json").write_text(json.dumps(index))
    infer = ("infer", "--device", "cpu", "--workers", "1")
    check_fails(root, *infer, expected=f"shard {shard} is truncated")  # read at its stored offsets
