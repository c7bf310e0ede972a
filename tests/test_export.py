"""`pie export` on a hand-made work root: the progress bar advances once per image written."""

from __future__ import annotations

from contextlib import contextmanager

from conftest import add_model, add_predictions

from analytics import export
from analytics.config import ExportConfig
from pie import store
from pie.catalog import DatasetSpec, record_dataset
from pie.shards import Sample, read_shards, write_shards


def test_export_advances_the_progress_bar_per_image(root, monkeypatch):
    """Keys k0..k4; the dense pair says 0 for all, the pruned pair says 1 for k0, k1 and k2:
    three PIEs (k2 decided by a tie: the pruned votes are 1 and 2)."""
    samples = [Sample(f"k{i}", 0, b"\x89PNG fake", "png") for i in range(5)]
    directory = root.shards("d")
    written = write_shards(samples, directory, "d")
    con = store.connect(root)
    record_dataset(con, DatasetSpec("d", "ls", "clean", "eval", "test"), directory, written)
    for m in ("d1", "d2"):
        add_model(con, m, "dense", 0.0)
        add_predictions(con, m, "d", [(f"k{i}", 0, 0) for i in range(5)])
    for m, k2 in (("v1", 1), ("v2", 2)):
        add_model(con, m, "magnitude", 0.9)
        preds = [("k0", 0, 1), ("k1", 0, 1), ("k2", 0, k2), ("k3", 0, 0), ("k4", 0, 0)]
        add_predictions(con, m, "d", preds)
    con.close()

    bars = []

    @contextmanager
    def progress(description: str, total: int | None):
        bar = {"total": total, "done": 0}
        bars.append(bar)
        yield lambda n=1: bar.__setitem__("done", bar["done"] + n)

    monkeypatch.setattr(export.console, "progress", progress)
    out = export.main(root, ExportConfig(experiment="exp", dataset="d", sparsity=0.9))
    assert bars == [{"total": 3, "done": 3}]
    pies = {s["__key__"]: s["json"]["pie"]["tie_decided"] for s in read_shards(out)}
    assert pies == {"k0": False, "k1": False, "k2": True}
