"""Streaming without re-scanning: each shard's sample offsets, labels and keys are stored at
ingest; training and inference read samples by them and never walk a tar's headers; an index
written before offsets were stored is scanned once, in the parent; training's loader workers
serve every epoch."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_TRAIN as TINY
from conftest import assert_one_line_error, pie, write_idx
from test_infer import query
from test_ingest_scale import pack_tree, tree  # noqa: F401  (tree: a fixture)
from test_train_scale import feed, tiny_toml

from infer.config import InferConfig
from infer.run import main as infer
from ingest import pack, sources
from ingest.config import IngestConfig
from pie import checkpoints, shards, store
from pie.distributed import World
from pie.paths import WorkRoot, open_root
from pie.shards import Sample, read_index, shard_paths, write_shards
from pie.shards import read as shard_read
from train import data, population

STREAM = dataclasses.replace(TINY, data="stream", loader_workers=2, sparsities=(0.5,), seeds=1)
PREDICTIONS = "select model_id, dataset, key, label, pred, p_pred from predictions order by all"


def pack_multi(root: WorkRoot, tmp_path: Path) -> WorkRoot:
    """64 training images in 4 shards, 20 test images in 2, packed by `pie ingest`'s code."""
    rng = np.random.default_rng(1)
    for stem, n in (("train", 64), ("t10k", 20)):
        write_idx(tmp_path / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(tmp_path / f"{stem}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    found = [sources.fashion_mnist(tmp_path, s) for s in ("train", "test")]
    pack.main(root, IngestConfig(shard_max_count=16), found)
    return root


@pytest.fixture
def multi(root: WorkRoot, tmp_path: Path) -> WorkRoot:
    return pack_multi(root, tmp_path)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[WorkRoot, checkpoints.Sidecar, list]:
    """`multi`, one model trained on it (streamed) and its predictions (read by offsets)."""
    path = tmp_path_factory.mktemp("reference")
    root = pack_multi(open_root(path / "work"), path)
    return root, *train_and_infer(root, 0)


def by_tarfile(path: Path) -> list[tuple[str, int, int, int]]:
    """(key, image data offset, image size, label) of every sample, found by `tarfile`."""
    samples: dict[str, list] = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            key, _, ext = m.name.partition(".")  # keys here have no dots in their directories
            row = samples.setdefault(key, [key, None, None, None])
            if ext == "cls":
                row[3] = int(tar.extractfile(m).read())
            elif ext in shards.IMAGE_EXTS:
                row[1:3] = m.offset_data, m.size
    return [tuple(r) for r in samples.values()]


def stored_rows(directory: Path) -> list[list[tuple[str, int, int, int]]]:
    """The offsets files named by a dataset's index, as (key, offset, size, label) per shard."""
    out = []
    for entry in read_index(directory)["shardlist"]:
        table = np.load(directory / entry["offsets"], allow_pickle=False)
        out.append(
            [(r["key"].decode(), int(r["offset"]), int(r["size"]), int(r["label"])) for r in table]
        )
    return out


def test_offsets_written_at_ingest_are_what_tarfile_finds(tmp_path, tree):  # noqa: F811
    """JPEGs in class directories (keys with a '/'), packed by 1 and 2 workers into 3 shards;
    and keys past ustar's 100 characters (pax headers), written by write_shards."""
    stored = []
    for workers in (1, 2):
        root = pack_tree(tmp_path / f"w{workers}", tree, "train", workers=workers,
                         shard_max_count=5)  # fmt: skip
        directory = root.shards("t")
        names = [e["offsets"] for e in read_index(directory)["shardlist"]]
        assert names == [p.name.replace(".tar", ".idx.npy") for p in shard_paths(directory)]
        rows = stored_rows(directory)
        assert rows == [by_tarfile(p) for p in shard_paths(directory)]
        assert [len(r) for r in rows] == [5, 5, 2] and "/" in rows[0][0][0]
        stored.append([(directory / n).read_bytes() for n in names])
    assert stored[0] == stored[1]  # the same bytes whoever wrote them

    long = [Sample("a/b/" + "x" * 150, 3, b"\xff\xd8jpeg", "jpg"), Sample("k", 4, b"png", "png")]
    write_shards(long, tmp_path / "ds", "ds")
    (rows,) = stored_rows(tmp_path / "ds")
    with tarfile.open(shard_paths(tmp_path / "ds")[0]) as tar:
        members = {m.name: m for m in tar.getmembers()}
    image = members["a/b/" + "x" * 150 + ".jpg"]
    assert rows == [("a/b/" + "x" * 150, image.offset_data, 6, 3),
                    ("k", members["k.png"].offset_data, 3, 4)]  # fmt: skip
    assert shards.scan_offsets(str(shard_paths(tmp_path / "ds")[0]), 2).tolist() == [
        (o, s, label, k.encode()) for k, o, s, label in rows
    ]  # the scan of an index written before offsets files finds the same


def wipe_all_but_images(directory: Path) -> None:
    """Overwrite every byte of each shard but its images' (headers, labels, metadata, padding)
    with zeros, keeping the size: a reader that walks the headers finds an empty tar."""
    for path in shard_paths(directory):
        keep = bytearray(path.stat().st_size)
        raw = path.read_bytes()
        for _, offset, size, _ in by_tarfile(path):
            keep[offset : offset + size] = raw[offset : offset + size]
        path.write_bytes(bytes(keep))


def clear_predictions(root: WorkRoot) -> None:
    """Every pair's predictions gone, so that `pie infer` evaluates them again."""
    with store.connect(root) as con:
        store.delete_predictions(con, "true")
        con.execute("delete from inference_runs")


def copy_root(root: WorkRoot, path: Path) -> WorkRoot:
    """A copy of a trained root, without its checkpoints or predictions."""
    shutil.copytree(root.path, path)
    copy = open_root(path)
    shutil.rmtree(copy.checkpoints)
    with store.connect(copy) as con:
        con.execute("delete from models")
    clear_predictions(copy)
    return copy


def train_and_infer(root: WorkRoot, workers: int) -> tuple[checkpoints.Sidecar, list]:
    """`pie train` (stream, 2 loader workers, the evaluation streamed too) then `pie infer`."""
    population.main(root, STREAM)
    infer(root, InferConfig(workers=workers, device="cpu", batch_size=6))
    (model_id,) = [p.name for p in root.checkpoints.iterdir()]
    return checkpoints.read_sidecar(root.checkpoint(model_id)), query(root, PREDICTIONS)


def test_training_and_inference_never_read_a_tars_headers(reference, tmp_path):
    """Every byte of the shards but their images zeroed: training gives the same checkpoint and
    inference the same predictions, so neither read a header, a label or metadata in a tar."""
    root, trained, predicted = reference
    wiped = copy_root(root, tmp_path / "wiped")
    for name in ("fmnist-train", "fmnist-test"):
        wipe_all_but_images(wiped.shards(name))
        for path in shard_paths(wiped.shards(name)):
            with tarfile.open(path) as tar:
                assert tar.getmembers() == []  # nothing left to find by the headers
    again, predicted_again = train_and_infer(wiped, 0)
    assert (again.sha256, again.test_top1) == (trained.sha256, trained.test_top1)
    assert predicted_again == predicted and len(predicted) == 20


def test_an_index_without_offsets_is_scanned_once_in_the_parent(reference, tmp_path, monkeypatch):
    """An index written before offsets files: each shard is scanned once by the process that
    makes the dataset (train: once for training, once for the evaluation; infer: once), never
    by a loader worker, and the results are those of the indexed dataset."""
    root, trained, predicted = reference
    old = copy_root(root, tmp_path / "old")
    for name in ("fmnist-train", "fmnist-test"):
        directory = old.shards(name)
        index = read_index(directory)
        for entry in index["shardlist"]:
            (directory / entry.pop("offsets")).unlink()
        (directory / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    parent, scanned = os.getpid(), []
    real = shards.scan_offsets

    def scan(path, expected):
        assert os.getpid() == parent, "a loader worker scanned a shard"
        scanned.append(Path(path).name)
        return real(path, expected)

    monkeypatch.setattr(shard_read, "scan_offsets", scan)
    population.main(old, STREAM)  # 2 forked loader workers: they would inherit the check
    again = checkpoints.read_sidecar(old.checkpoint(trained.model_id))
    assert (again.sha256, again.test_top1) == (trained.sha256, trained.test_top1)
    train_shards = [f"fmnist-train-{k:06d}.tar" for k in range(4)]
    test_shards = ["fmnist-test-000000.tar", "fmnist-test-000001.tar"]
    assert scanned == train_shards + test_shards
    scanned.clear()
    infer(old, InferConfig(workers=1, device="cpu", batch_size=6))  # a spawned worker
    assert scanned == test_shards
    assert query(old, PREDICTIONS) == predicted


def test_loader_workers_serve_every_epoch_in_the_order_of_the_memory_path(multi, monkeypatch):
    """One DataLoader for the run: the same 2 worker processes read epochs 0, 1 and 2, and the
    batches (resumed at step 2, mid-epoch) are those of the memory path, which has no loader."""
    log = multi.path / "pids"
    real = data.ShardSamples.__getitem__

    def logged(self, item):
        with log.open("a") as f:
            f.write(f"{item[1]} {os.getpid()}\n")
        return real(self, item)

    monkeypatch.setattr(data.ShardSamples, "__getitem__", logged)
    cfg = dataclasses.replace(STREAM, augment="crop_flip")
    ds = data.shard_set(multi.shards(cfg.dataset), cfg.dataset)
    streamed = list(feed(cfg, ds, World(), 2, 10))
    pids: dict[str, set[str]] = {}
    for line in log.read_text().splitlines():
        epoch, pid = line.split()
        pids.setdefault(epoch, set()).add(pid)
    memory = list(feed(dataclasses.replace(cfg, data="memory"), ds, World(), 2, 10))
    assert len(streamed) == len(memory) == 8  # steps 2-9 of epochs 0, 1, 2 (4 steps each)
    for (x, y), (xm, ym) in zip(streamed, memory, strict=True):
        assert x.equal(xm) and y.equal(ym)
    assert sorted(pids) == ["0", "1", "2"]
    assert pids["0"] == pids["1"] == pids["2"] and len(pids["0"]) == 2
    assert str(os.getpid()) not in pids["0"]


def test_a_missing_offsets_file_is_one_line(multi, tmp_path):
    directory = multi.shards("fmnist-train")
    (directory / "fmnist-train-000002.idx.npy").unlink()
    result = pie("train", "-c", str(tiny_toml(tmp_path)), "--root", str(multi.path), ok=False)
    assert_one_line_error(result, "offsets file")
    assert "fmnist-train-000002.idx.npy is missing: pack it again" in result.stderr
