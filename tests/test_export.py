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


def pie_root(root, p_dense: float = 0.5, p_pruned: float = 0.25):
    """Dataset 'd' (k0..k4, label 0) packed; dense d1, d2 say 0 everywhere; pruned v1, v2 (0.9)
    say 1 for k0 and k1: two PIEs, k2..k4 not."""
    samples = [Sample(f"k{i}", 0, f"clean {i}".encode(), "png", {"source": "s"}) for i in range(5)]
    directory = root.shards("d")
    con = store.connect(root)
    record_dataset(
        con,
        DatasetSpec("d", "ls", "clean", "eval", "test"),
        directory,
        write_shards(samples, directory, "d"),
    )
    for m in ("d1", "d2"):
        add_model(con, m, "dense", 0.0)
        add_predictions(con, m, "d", [(f"k{i}", 0, 0) for i in range(5)], p_dense)
    for m in ("v1", "v2"):
        add_model(con, m, "magnitude", 0.9)
        preds = [("k0", 0, 1), ("k1", 0, 1), ("k2", 0, 0), ("k3", 0, 0), ("k4", 0, 0)]
        add_predictions(con, m, "d", preds, p_pruned)
    return con


def test_export_reads_back_with_plain_webdataset_with_the_reference_fields(root):
    import pyarrow.parquet as pq
    import webdataset as wds

    pie_root(root).close()
    out = export.main(root, ExportConfig(experiment="exp", dataset="d", sparsity=0.9))
    urls = sorted(str(p) for p in out.glob("*.tar"))
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode())
    assert sorted(s["__key__"] for s in samples) == ["k0", "k1"]
    meta = samples[0]["json"]
    expected = {
        "true_class_label": 0,
        "baseline_mode_label": 0,
        "variant_mode_label": 1,
        "pruning_fraction": 0.9,
        "baseline_n": 2,
        "variant_n": 2,
        "baseline_mean_probability": 0.5,
        "variant_mean_probability": 0.25,
        "is_pie": True,
        "source": "s",  # the source JSON is kept
    }
    assert {k: meta[k] for k in expected} == expected
    assert samples[0]["png"] == f"clean {samples[0]['__key__'][1]}".encode()  # bytes as stored
    manifest = pq.read_table(out / "manifest.parquet").to_pylist()
    assert sorted(r["key"] for r in manifest) == ["k0", "k1"]
    assert {r["variant_mode_label"] for r in manifest} == {1}
    assert all((out / r["shard"]).exists() for r in manifest)
    con = store.connect(root, read_only=True)
    assert store.rows(
        con, "select kind, parent, n_images from datasets where name = 'd-magnitude-0.9-pie'"
    ) == [("export", "d", 2)]
    assert store.rows(
        con, "select key from images where dataset = 'd-magnitude-0.9-pie' order by key"
    ) == [("k0",), ("k1",)]
    con.close()


def test_export_of_a_corrupted_variant_takes_the_parents_pie_keys(root):
    """The variant's own predictions make k3 a PIE there; the export follows the clean parent's
    PIE set (k0, k1 are PIEs, so the complement is k2..k4) and writes the variant's images."""
    con = pie_root(root)
    samples = [Sample(f"k{i}", 0, f"noisy {i}".encode(), "png") for i in range(5)]
    directory = root.shards("d-gn-1")
    spec = DatasetSpec(
        "d-gn-1",
        "ls",
        "corrupted",
        "eval",
        "test",
        parent="d",
        corruption="gaussian_noise",
        severity=1,
        origin="generated",
    )
    record_dataset(con, spec, directory, write_shards(samples, directory, "d-gn-1"))
    for m in ("d1", "d2"):
        add_predictions(con, m, "d-gn-1", [(f"k{i}", 0, 0) for i in range(5)])
    for m in ("v1", "v2"):
        add_predictions(con, m, "d-gn-1", [(f"k{i}", 0, 1 if i == 3 else 0) for i in range(5)])
    con.close()
    cfg = ExportConfig(
        experiment="exp", dataset="d-gn-1", sparsity=0.9, non_pie=True, manifest="csv"
    )
    out = export.main(root, cfg)
    got = {s["__key__"]: s for s in read_shards(out)}
    assert sorted(got) == ["k2", "k3", "k4"]
    assert got["k3"]["png"] == b"noisy 3"
    assert got["k3"]["json"]["is_pie"] is False
    assert got["k3"]["json"]["pie"]["corruption"] == "gaussian_noise"
    lines = (out / "manifest.csv").read_text().splitlines()
    assert len(lines) == 4 and "true_class_label" in lines[0]
