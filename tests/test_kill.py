"""kill -9 anywhere: `pie ingest`, `pie corrupt`, `pie analyze` and `pie export` killed with
SIGKILL at chosen moments (a subprocess that kills itself right after a given function returns:
mid-packing, published but not recorded, inside a transaction...), then the same command again:
the work root equals that of an uninterrupted run in another root, table for table and file for
file, with nothing half-registered or doubled. A slow sweep kills after random delays too."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import pie, write_idx
from test_export import pie_root

from pie import store
from pie.paths import WorkRoot, open_root

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PIE_ROOT": ""}
# Runs `pie <args>` with `module.name` replaced by a wrapper that SIGKILLs the process right
# after its `after`-th call returns.
KILLER = """
import importlib, os, signal, sys
module, name, after = sys.argv[1], sys.argv[2], int(sys.argv[3])
target = importlib.import_module(module)
real, calls = getattr(target, name), []
def wrapper(*args, **kwargs):
    result = real(*args, **kwargs)
    calls.append(1)
    if len(calls) == after:
        os.kill(os.getpid(), signal.SIGKILL)
    return result
setattr(target, name, wrapper)
from pie.cli import app
app(sys.argv[4:], prog_name="pie")
"""
# when and how long: they differ between any two runs
TIMINGS = {"created_at", "recorded_at", "finished_at", "built_at", "started_at", "seconds"}
NOT_COMPARED = {"pie.duckdb", "pie.duckdb.wal", ".lock"}


def killed_at(root: WorkRoot, moment: tuple[str, str, int], *args: str) -> None:
    """Run `pie <args>` on `root` in a subprocess killed by SIGKILL at `moment`."""
    module, name, after = moment
    command = [sys.executable, "-c", KILLER, module, name, str(after), *args]
    run = subprocess.run(
        [*command, "--root", str(root.path)], cwd=REPO, env=ENV, capture_output=True, text=True
    )
    assert run.returncode == -signal.SIGKILL, run.stderr[-2000:]


def killed_after(root: WorkRoot, seconds: float, *args: str) -> None:
    """Run `pie <args>` on `root` in a subprocess, SIGKILLed after `seconds` unless it ended."""
    command = [sys.executable, "-m", "pie", *args, "--root", str(root.path)]
    run = subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL)
    try:
        run.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        run.send_signal(signal.SIGKILL)
        run.wait()


def contents(root: WorkRoot) -> tuple[dict, dict]:
    """(every table's rows, sorted, without timings; `runs` as (stage, experiment, config)
    only, since a rerun's summary counts what was left to do), (sha256 of every file
    under the root by relative path, the database and the lock file aside)."""
    tables = {}
    with store.connect(root, read_only=True) as con:
        names = store.rows(
            con, "select table_name from information_schema.tables where table_type = 'BASE TABLE'"
        )
        for (table,) in names:
            columns = [
                c
                for (c,) in store.rows(
                    con,
                    "select column_name from information_schema.columns where table_name = ?",
                    [table],
                )
                if c not in TIMINGS and (table != "runs" or c in ("stage", "experiment", "config"))
            ]
            select = ", ".join(f'"{c}"' for c in columns)
            tables[table] = sorted(store.rows(con, f"select {select} from {table}"), key=repr)
    files = {
        p.relative_to(root.path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.path.rglob("*"))
        if p.is_file() and p.name not in NOT_COMPARED
    }
    return tables, files


def assert_same(killed: WorkRoot, reference: WorkRoot) -> None:
    """Equal files and tables. `runs`, the log of finished runs, may lack the killed run when
    it died after its last row was committed (the rerun then finds nothing to do), but never
    holds a run twice."""
    got, want = contents(killed), contents(reference)
    assert got[1] == want[1]  # the same files, byte for byte, and no leftovers
    assert got[0].keys() == want[0].keys()
    for table in want[0]:
        if table == "runs":
            assert all(got[0][table].count(r) <= want[0][table].count(r) for r in got[0][table])
            assert set(got[0][table]) <= set(want[0][table])
        else:
            assert got[0][table] == want[0][table], table


def copies(base: WorkRoot, tmp_path: Path) -> tuple[WorkRoot, WorkRoot]:
    """Two copies of `base`: one to kill, one for the uninterrupted reference."""
    made = []
    for name in ("killed", "reference"):
        shutil.copytree(base.path, tmp_path / name)
        made.append(open_root(tmp_path / name, create=False))
    return made[0], made[1]


def fmnist_source(directory: Path) -> Path:
    rng = np.random.default_rng(5)
    directory.mkdir()
    for stem, n in (("train", 10), ("t10k", 6)):
        write_idx(directory / f"{stem}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(directory / f"{stem}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    return directory


def ingest_args(source: Path) -> tuple[str, ...]:
    return ("ingest", "fashion-mnist", "--dir", str(source), "--workers", "1",
            "--shard-max-count", "4")  # fmt: skip


@pytest.fixture
def packed_small(tmp_path) -> WorkRoot:
    """A root with the 10 + 6 images of `fmnist_source` packed, 4 to a shard."""
    base = open_root(tmp_path / "base")
    pie(*ingest_args(fmnist_source(tmp_path / "fmnist")), "--root", str(base.path))
    return base


@pytest.fixture
def pies(tmp_path) -> WorkRoot:
    """A root with dataset d, two dense and two pruned models' predictions (two PIEs) and the
    experiment's config as config.toml."""
    base = open_root(tmp_path / "base")
    pie_root(base).close()
    (tmp_path / "exp.toml").write_text('name = "exp"\n[export]\ndataset = "d"\nmanifest = "csv"\n')
    return base


# mid-packing (one shard of three written), published but not recorded, inside the transaction
INGEST = [
    pytest.param(("ingest.pack", "write_shard", 1), marks=pytest.mark.slow),
    ("ingest.pack", "publish", 1),
    ("pie.store", "append", 2),
]
# the first variant published but not recorded; recorded, the second not
CORRUPT = [("ingest.corrupt", "publish", 1), ("ingest.corrupt", "record", 1)]
# inside the transaction: the relations materialised; class_tstats written too
ANALYZE = [("pie.materialised", "build", 1), ("analytics.tstats", "class_tstats", 1)]
# the shards published, no manifest; the manifest written, nothing recorded
EXPORT = [("analytics.export", "write_shards", 1), ("analytics.export", "write_manifest", 1)]
CORRUPT_ARGS = ("corrupt", "fmnist-test", "-x", "fog,gaussian_noise", "-s", "1", "--workers", "1")


@pytest.mark.parametrize("moment", INGEST)
def test_ingest_killed_then_rerun_equals_an_uninterrupted_run(tmp_path, moment):
    killed, reference = (open_root(tmp_path / name) for name in ("killed", "reference"))
    args = ingest_args(fmnist_source(tmp_path / "fmnist"))
    killed_at(killed, moment, *args)
    for root in (killed, reference):
        pie(*args, "--root", str(root.path))
    assert_same(killed, reference)


@pytest.mark.parametrize("moment", CORRUPT)
def test_corrupt_killed_then_rerun_equals_an_uninterrupted_run(packed_small, tmp_path, moment):
    killed, reference = copies(packed_small, tmp_path)
    killed_at(killed, moment, *CORRUPT_ARGS)
    for root in (killed, reference):
        pie(*CORRUPT_ARGS, "--root", str(root.path))
    assert_same(killed, reference)


@pytest.mark.parametrize("moment", ANALYZE)
def test_analyze_killed_then_rerun_equals_an_uninterrupted_run(pies, tmp_path, moment):
    killed, reference = copies(pies, tmp_path)
    args = ("analyze", "-c", str(tmp_path / "exp.toml"))
    killed_at(killed, moment, *args)
    for root in (killed, reference):
        pie(*args, "--root", str(root.path))
    assert_same(killed, reference)


@pytest.mark.parametrize("moment", EXPORT)
def test_export_killed_then_rerun_equals_an_uninterrupted_run(pies, tmp_path, moment):
    killed, reference = copies(pies, tmp_path)
    args = ("export", "-c", str(tmp_path / "exp.toml"), "--sparsity", "0.9")
    killed_at(killed, moment, *args)
    for root in (killed, reference):
        pie(*args, "--root", str(root.path))
    assert_same(killed, reference)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["ingest", "corrupt", "analyze", "export"])
def test_killed_after_random_delays_then_rerun_equals_an_uninterrupted_run(
    command, packed_small, tmp_path
):
    """Each command killed after 8 random delays (up to its own run time), rerun each time."""
    source = fmnist_source(tmp_path / "fmnist-src")
    if command == "ingest":
        base, args = open_root(tmp_path / "empty"), ingest_args(source)
    elif command == "corrupt":
        base, args = packed_small, CORRUPT_ARGS
    else:
        base = open_root(tmp_path / "pie-base")
        pie_root(base).close()
        (tmp_path / "exp.toml").write_text('name = "exp"\n[export]\ndataset = "d"\n')
        args = (command, "-c", str(tmp_path / "exp.toml"))
        args += ("--sparsity", "0.9") if command == "export" else ()
    reference = open_root(tmp_path / "reference")
    shutil.copytree(base.path, reference.path, dirs_exist_ok=True)
    started = time.monotonic()
    pie(*args, "--root", str(reference.path))
    took = time.monotonic() - started
    draw = random.Random(18_7)
    for i in range(8):
        killed = open_root(tmp_path / f"killed{i}")
        shutil.copytree(base.path, killed.path, dirs_exist_ok=True)
        killed_after(killed, 1.0 + draw.uniform(0, 2 * took + 1.0), *args)
        pie(*args, "--root", str(killed.path))
        assert_same(killed, reference)
