"""Slow checks (`make test-slow`): full-size reproducibility and worker-count independence."""

from __future__ import annotations

import pytest
from conftest import TINY_TRAIN as TINY
from conftest import shard_digests as digests

from ingest import pack, sources
from ingest.config import CorruptConfig, IngestConfig
from ingest.corrupt import main as corrupt_main
from pie import store
from pie.paths import open_root
from train import population

pytestmark = pytest.mark.slow


def test_full_fashion_mnist_is_byte_reproducible(tmp_path, fmnist_dir):
    roots = [open_root(tmp_path / name) for name in ("a", "b")]
    for root in roots:
        pack.main(root, IngestConfig(), [sources.fashion_mnist(fmnist_dir, "test")])
    assert digests(roots[0].shards("fmnist-test")) == digests(roots[1].shards("fmnist-test"))
    with store.connect(roots[0], read_only=True) as con:
        assert con.execute("select count(*) from images").fetchall() == [(10_000,)]


def test_checkpoints_do_not_depend_on_the_worker_count(packed, tmp_path):
    import dataclasses
    import shutil

    cfg = dataclasses.replace(TINY, sparsities=(0.0, 0.5), seeds=2, workers=2)
    population.main(packed, cfg)
    parallel = {p.parent.name: p.read_bytes() for p in packed.checkpoints.glob("*/model.pt")}
    shutil.rmtree(packed.checkpoints)
    with store.connect(packed) as con:
        con.execute("delete from models")
    population.main(packed, dataclasses.replace(cfg, workers=1))
    serial = {p.parent.name: p.read_bytes() for p in packed.checkpoints.glob("*/model.pt")}
    assert len(serial) == 4 and serial == parallel


def test_corrupted_shards_do_not_depend_on_the_worker_count(packed):
    cfg = CorruptConfig(corruptions=("glass_blur", "fog"), severities=(2, 5), workers=2)
    corrupt_main(packed, cfg)
    names = [f"fmnist-test-{c}-{s}" for c in cfg.corruptions for s in cfg.severities]
    parallel = {n: digests(packed.shards(n)) for n in names}
    with store.connect(packed) as con:
        con.execute("delete from datasets where kind = 'corrupted'")
    corrupt_main(
        packed, CorruptConfig(corruptions=cfg.corruptions, severities=cfg.severities, workers=1)
    )
    assert {n: digests(packed.shards(n)) for n in names} == parallel
