"""Shard round trips on tiny fixtures: bytes in = bytes out, reproducible, wids-readable."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import numpy as np
import pytest
from conftest import shard_digests as digest
from PIL import Image

from pie.errors import PieError
from pie.shards import Sample, read_index, read_shards, shard_paths, write_shards


def png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((3, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def samples(n: int = 25) -> list[Sample]:
    return [
        Sample(f"ds-{i:03d}", i % 4, png(i), "png", {"i": i, "name": f"n{i}"}) for i in range(n)
    ]


def test_round_trip_keeps_bytes_labels_and_metadata(tmp_path):
    written = write_shards(samples(), tmp_path / "ds", "ds", max_count=10)
    assert written.n_shards == 3
    assert written.shards.count("ds-000000.tar") == 10 and written.shards[-1] == "ds-000002.tar"
    back = list(read_shards(tmp_path / "ds"))
    assert [s["__key__"] for s in back] == [s.key for s in samples()]
    for original, raw in zip(samples(), back, strict=True):
        assert raw["png"] == original.data
        assert raw["cls"] == original.label and raw["json"] == original.meta


def test_shards_are_byte_reproducible(tmp_path):
    write_shards(samples(), tmp_path / "a" / "ds", "ds", max_count=10)
    write_shards(samples(), tmp_path / "b" / "ds", "ds", max_count=10)
    assert digest(tmp_path / "a" / "ds") == digest(tmp_path / "b" / "ds")
    with tarfile.open(shard_paths(tmp_path / "a" / "ds")[0]) as tar:
        members = tar.getmembers()
    assert {m.mtime for m in members} == {0}
    assert [m.name for m in members[:3]] == ["ds-000.cls", "ds-000.json", "ds-000.png"]


def test_index_is_wids_format_and_readable_by_wids(tmp_path):
    wids = pytest.importorskip("wids")
    write_shards(samples(), tmp_path / "ds", "ds", max_count=10)
    index = read_index(tmp_path / "ds")
    assert index["wids_version"] == 1 and index["__kind__"] == "wids-shard-index-v1"
    assert [s["nsamples"] for s in index["shardlist"]] == [10, 10, 5]
    for shard, path in zip(index["shardlist"], shard_paths(tmp_path / "ds"), strict=True):
        assert shard["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert shard["filesize"] == path.stat().st_size
    dataset = wids.ShardListDataset(
        str(tmp_path / "ds" / "index.json"), transformations=[], cache_dir=str(tmp_path / "c")
    )
    assert len(dataset) == 25
    sample = dataset[12]  # random access: shard 1, position 2
    assert sample["__key__"] == "ds-012"
    assert sample[".png"].getvalue() == png(12)
    assert sample[".cls"].getvalue() == b"0"


def test_a_failed_write_leaves_nothing(tmp_path):
    def broken():
        yield from samples(3)
        raise RuntimeError("source died")

    with pytest.raises(RuntimeError):
        write_shards(broken(), tmp_path / "ds", "ds")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("key", ["has.dot", "has space", ""])
def test_bad_keys_are_user_errors(tmp_path, key):
    with pytest.raises(PieError, match="invalid sample key"):
        write_shards([Sample(key, 0, b"x", "png")], tmp_path / "ds", "ds")


def test_duplicate_keys_are_user_errors(tmp_path):
    s = Sample("k", 0, b"x", "png")
    with pytest.raises(PieError, match="duplicate"):
        write_shards([s, s], tmp_path / "ds", "ds")


def test_long_keys_and_directories_read_back_as_webdataset_reads_them(tmp_path):
    """Keys past ustar's 100-character names (pax headers) and with directories: pie's own
    tar reader groups members exactly as webdataset does."""
    import webdataset as wds

    keys = ["a/b/" + "x" * 150, "n01440764/ILSVRC2012_val_00000001", "plain"]
    written = [Sample(k, i, png(i), "png", {"k": k}) for i, k in enumerate(keys)]
    write_shards(written, tmp_path / "ds", "ds")
    ours = [(r["__key__"], r["png"], r["cls"], r["json"]) for r in read_shards(tmp_path / "ds")]
    theirs = [
        (r["__key__"], r["png"], int(r["cls"]), r["json"])
        for r in wds.WebDataset([str(p) for p in shard_paths(tmp_path / "ds")], shardshuffle=False)
    ]
    assert [(k, d, c, json.loads(m)) for k, d, c, m in theirs] == ours
    assert ours == [(s.key, s.data, s.label, s.meta) for s in written]


def test_a_failing_pipe_command_is_a_user_error(tmp_path):
    write_shards(samples(3), tmp_path / "ds", "ds")
    index = read_index(tmp_path / "ds")
    index["shardlist"][0]["url"] = "pipe:exit 3"
    (tmp_path / "ds" / "index.json").write_text(json.dumps(index))
    with pytest.raises(PieError, match="shard command 'exit 3' exited with status 3"):
        list(read_shards(tmp_path / "ds"))
