"""`pie infer` among other processes: one writer at a time (the writer lock names the first),
readers served while it runs, SIGKILL at any moment then a rerun, torchrun across 2 CPU ranks.

These start real processes (`python -m pie`), so each costs a few seconds of imports."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import assert_one_line_error, pie
from test_infer import JOBS, expected, images, pack_arrays, png, query, stored, train, write_fmnist

from infer import loader
from infer.config import InferConfig
from infer.run import main as infer
from ingest import pack, sources
from ingest.config import IngestConfig
from pie import store
from pie.errors import PieError

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PIE_ROOT": ""}
N_EXTRA = 3  # eval sets besides fmnist-test, 20 images each


def python(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args], cwd=REPO, env=ENV, text=True, stdout=subprocess.PIPE, **kw
    )


def pie_cmd(root, *args: str) -> list[str]:
    return ["-m", "pie", *args, "--root", str(root.path)]


@pytest.fixture
def world(root, tmp_path):
    """2 models, fmnist-test and N_EXTRA more eval sets of 20 random 28 px images each."""
    write_fmnist(tmp_path / "v1", seed=0)
    found = [sources.fashion_mnist(tmp_path / "v1", s) for s in ("train", "test")]
    pack.main(root, IngestConfig(), found)
    rng = np.random.default_rng(3)
    for i in range(N_EXTRA):
        arrays = [rng.integers(0, 256, (28, 28), dtype=np.uint8) for _ in range(20)]
        pack_arrays(root, f"extra{i}", [png(a) for a in arrays])
    for job in JOBS:
        train(root, job)
    return root


def assert_complete(root) -> None:
    """Every (model, dataset) exactly once, every image, each prediction right."""
    datasets = ["fmnist-test", *(f"extra{i}" for i in range(N_EXTRA))]
    assert query(root, "select count(*) from inference_runs") == [(2 * len(datasets),)]
    dup = "select count(*) - count(distinct (model_id, dataset, key)) from predictions"
    assert query(root, dup) == [(0,)]
    for dataset in datasets:
        keys, pixels = images(root, dataset)
        for job in JOBS:
            m = job.model_id
            got = stored(root, m, dataset)
            want = expected(root, m, keys, pixels)
            assert got.keys() == want.keys()
            for k in want:
                assert got[k][0] == want[k][0], (m, dataset, k)
                assert got[k][1] == pytest.approx(want[k][1], abs=1e-5)


def test_a_second_writer_stops_at_once_naming_the_first(root):
    holder = python(
        "-c",
        "import sys, time; from pie import store; from pie.paths import open_root\n"
        f"with store.writer_lock(open_root({str(root.path)!r}), 'pie train -e big'):\n"
        "    print('locked', flush=True); time.sleep(60)",
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        result = pie("infer", "--root", str(root.path), "--device", "cpu", ok=False)
        assert time.monotonic() - started < 5  # at once, not after a wait
        assert_one_line_error(result, f"is being written by pid {holder.pid}: pie train -e big")
    finally:
        holder.kill()
        holder.wait()
    with store.writer_lock(root, "pie infer"):  # released by the kernel when the holder died
        assert (root.path / ".lock").read_text() == f"pid {os.getpid()}: pie infer\n"


def test_a_reader_waits_for_a_write_step_instead_of_failing(packed):
    root = packed
    writer = python(
        "-c",
        "import time, duckdb\n"
        f"con = duckdb.connect({str(root.db)!r}); print('open', flush=True)\n"
        "time.sleep(1.5); con.close(); time.sleep(30)",
    )
    try:
        assert writer.stdout.readline().strip() == "open"
        with pytest.raises(PieError, match=f"is locked by process {writer.pid}"):
            store.connect(root, read_only=True, wait=0.2)
        started = time.monotonic()
        with store.connect(root, read_only=True) as con:  # waits for the close, then reads
            assert store.rows(con, "select count(*) from datasets") == [(2,)]
        assert time.monotonic() - started > 0.5
    finally:
        writer.kill()
        writer.wait()


def test_pie_sql_works_while_infer_runs(world, monkeypatch):
    """Midway through the run (the first batch of the third dataset, the loads of the first two
    possibly still in flight) a separate `pie sql` process reads the database."""
    root = world
    seen: list[subprocess.CompletedProcess] = []
    real = loader.read_chunk

    def read_and_query(chunk, reader):
        if chunk.group == 2 and chunk.start == 0 and not seen:
            sql = "select count(distinct dataset) from inference_runs"
            cmd = [sys.executable, *pie_cmd(root, "sql", sql, "--format", "csv")]
            kw = dict(cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
            seen.append(subprocess.run(cmd, **kw))
        return real(chunk, reader)

    monkeypatch.setattr(loader, "read_chunk", read_and_query)
    infer(root, InferConfig(workers=0, device="cpu", batch_size=5))
    assert len(seen) == 1 and seen[0].returncode == 0, seen[0].stderr
    loaded = int(seen[0].stdout.strip().splitlines()[-1])
    assert 0 <= loaded <= 2  # what was loaded then: never the third dataset, read while running
    assert_complete(root)


@pytest.mark.parametrize("moment", ["writing parts", "loading pairs"])
def test_sigkill_then_rerun_leaves_every_pair_once(world, moment):
    root = world
    run = python(
        *pie_cmd(root, "infer", "--device", "cpu", "--batch-size", "1", "--workers", "0"),
        stderr=subprocess.DEVNULL,
    )
    staging = root.parts("predictions")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None:
        if moment == "writing parts" and any(staging.glob("*.tmp")):
            break
        if moment == "loading pairs" and any(staging.glob("*__extra0.*.parquet")):
            break  # extra0 (second group) is done: fmnist-test's load may be under way
        time.sleep(0.005)
    assert run.poll() is None, "the run ended before it could be killed"
    run.send_signal(signal.SIGKILL)
    run.wait()
    infer(root, InferConfig(workers=0, device="cpu", batch_size=4))
    assert_complete(root)
    assert not list(staging.iterdir())


@pytest.mark.slow
def test_torchrun_two_ranks_equal_one_process_row_for_row(world, tmp_path):
    root = world
    single = tmp_path / "single"
    shutil.copytree(root.path, single)
    run = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            *pie_cmd(root, "infer", "--device", "cpu", "--batch-size", "3", "--workers", "1"),
        ],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "8 (model, dataset) pairs evaluated" in " ".join(run.stdout.split())
    from pie.paths import open_root

    infer(open_root(single), InferConfig(workers=0, device="cpu", batch_size=3))
    sql = (
        "select model_id, dataset, key, label, pred, top5, p_label, p_pred from predictions"
        " order by model_id, dataset, key"
    )
    two, one = query(root, sql), query(open_root(single), sql)
    assert len(two) == len(one) == 2 * (20 + 20 * N_EXTRA)
    for a, b in zip(two, one, strict=True):
        assert a[:6] == b[:6]
        assert a[6:] == pytest.approx(b[6:], abs=1e-6)
    assert_complete(root)
