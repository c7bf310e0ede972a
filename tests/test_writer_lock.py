"""One writer per work root, never aborting: `pie ingest`, `pie corrupt` and `pie export` take
the writer lock (beside another writer they stop at once, naming it), keep the database closed
while they pack or corrupt images, and a writer waits for readers as long as it must."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, pie, write_idx
from test_export import pie_root

from ingest import corrupt, pack, sources
from ingest.config import CorruptConfig, IngestConfig
from pie import store
from pie.errors import PieError

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PIE_ROOT": ""}
HOLDER = "pie train -e big"


def reader(db: Path, seconds: float) -> subprocess.Popen:
    """A process holding `db` open read-only for `seconds` (it prints 'open' once it has it)."""
    code = (
        "import time, duckdb\n"
        f"con = duckdb.connect({str(db)!r}, read_only=True); print('open', flush=True)\n"
        f"time.sleep({seconds}); con.close(); time.sleep(60)"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code], env=ENV, text=True, stdout=subprocess.PIPE
    )


def can_read(db: Path) -> bool:
    """Whether another process can open `db` read-only right now (without waiting)."""
    code = f"import duckdb; duckdb.connect({str(db)!r}, read_only=True).close()"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_a_writer_waits_for_a_reader_past_the_old_limit_saying_once_whom(
    packed, monkeypatch, capsys
):
    """The reader holds the database for 2 s; the writer's clock is made to advance a minute
    each time it is read, so 2 s look like hours: the old writer gave up after 120 s."""
    held = reader(packed.db, 2.0)
    try:
        assert held.stdout.readline().strip() == "open"
        with pytest.raises(PieError, match=f"is locked by process {held.pid}"):
            store.connect(packed, wait=0)  # a writer given a limit keeps it
        capsys.readouterr()
        minutes = itertools.count(step=60.0)
        monkeypatch.setattr(time, "monotonic", lambda: next(minutes))
        with store.connect(packed) as con:  # waits for the reader, then writes
            con.execute("insert into settings values ('waited', 'yes')")
        monkeypatch.undo()
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"waiting for process {held.pid} ("), err
        assert f"to close {packed.db}" in err
    finally:
        held.kill()
        held.wait()
    with store.connect(packed, read_only=True) as con:
        assert store.rows(con, "select value from settings where name = 'waited'") == [("yes",)]


def fmnist(directory: Path) -> Path:
    rng = np.random.default_rng(1)
    directory.mkdir()
    for stem, n in (("train", 12), ("t10k", 6)):
        write_idx(directory / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(directory / f"{stem}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    return directory


def test_ingest_corrupt_and_export_beside_a_writer_stop_at_once_naming_it(root, tmp_path):
    pie_root(root).close()  # dataset d with PIEs, for the export
    source = fmnist(tmp_path / "fmnist")
    before = sorted(p.name for p in root.shards("d").parent.iterdir())
    with store.writer_lock(root, HOLDER):
        for args in (
            ("ingest", "fashion-mnist", "--dir", str(source)),
            ("corrupt", "d", "-x", "fog", "-s", "1"),
            ("export", "-d", "d", "--sparsity", "0.9"),
        ):
            result = pie(*args, "--root", str(root.path), ok=False)
            assert_one_line_error(result, f"is being written by pid {os.getpid()}: {HOLDER}")
    assert sorted(p.name for p in root.shards("d").parent.iterdir()) == before
    assert not root.path.joinpath("exports").exists()


def test_ingest_keeps_the_database_closed_while_it_packs(root, tmp_path, monkeypatch):
    seen = []
    real = pack.write_shard

    def write_shard(*args):
        seen.append(can_read(root.db))
        return real(*args)

    monkeypatch.setattr(pack, "write_shard", write_shard)
    store.connect(root).close()  # the database exists: a reader could open it
    directory = fmnist(tmp_path / "fmnist")
    found = [sources.fashion_mnist(directory, split) for split in ("train", "test")]
    pack.main(root, IngestConfig(workers=1), found)
    assert seen == [True, True]


def test_corrupt_keeps_the_database_closed_while_it_corrupts(packed, monkeypatch):
    seen = []
    real = corrupt.corrupt_shard

    def corrupt_shard(*args):
        seen.append(can_read(packed.db))
        return real(*args)

    monkeypatch.setattr(corrupt, "corrupt_shard", corrupt_shard)
    cfg = CorruptConfig(dataset="fmnist-test", corruptions=("fog",), severities=(1,), workers=1)
    assert corrupt.main(packed, cfg) == ["fmnist-test-fog-1"]
    assert seen == [True]
