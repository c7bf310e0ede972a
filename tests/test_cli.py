"""End to end through the CLI on a small slice of Fashion-MNIST, and the one-line errors."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest
from conftest import FMNIST_DIR, assert_one_line_error, pie
from PIL import Image

from pie import store
from pie.paths import open_root
from pie.shards import read_shards

N = 300  # images per split

TINY = f"""
name = "tiny"
[ingest]
fashion_mnist_dir = "{{fmnist}}"
limit = {N}
[corrupt]
corruptions = ["gaussian_noise", "contrast"]
severities = [2]
workers = 1
[train]
sparsities = [0.0, 0.9]
seeds = 2
epochs = 2
batch_size = 32
prune_start_epoch = 0.25
prune_end_epoch = 1.5
prune_frequency = 2
workers = 1
device = "cpu"
[infer]
workers = 1
device = "cpu"
"""


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """The whole pipeline once per module: its work root and config file, never changed."""
    tmp = tmp_path_factory.mktemp("e2e")
    if not (FMNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.fail(f"Fashion-MNIST missing at {FMNIST_DIR}: run `make data` (make test does)")
    cfg = tmp / "tiny.toml"
    cfg.write_text(TINY.format(fmnist=FMNIST_DIR))
    args = ("--config", str(cfg), "--root", str(tmp / "work"))
    for stage in (
        ["ingest", "fashion-mnist"],
        ["corrupt"],
        ["train"],
        ["infer"],
        ["analyze"],
        ["export"],
        ["export", "--non-pie"],
    ):
        pie(*stage, *args)
    return tmp / "work", cfg


@pytest.fixture
def run(pipeline, tmp_path):
    """A copy of the pipeline's work root for this test alone (paths in the database are
    relative to the root), so a test may change it without another test seeing the change."""
    work, cfg = pipeline
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    return open_root(copy), ("--config", str(cfg), "--root", str(copy))


def query(root, sql: str):
    con = store.connect(root, read_only=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def test_datasets_and_corrupted_variants_keep_keys(run):
    root, _ = run
    assert query(
        root, "select name, kind, n_images from datasets where kind <> 'export' order by name"
    ) == [
        ("fmnist-test", "clean", N),
        ("fmnist-test-contrast-2", "corrupted", N),
        ("fmnist-test-gaussian_noise-2", "corrupted", N),
        ("fmnist-train", "clean", N),
    ]
    assert query(
        root,
        "select count(*) from images v anti join images p on p.key = v.key and"
        " p.label = v.label and p.dataset = 'fmnist-test'"
        " where v.dataset like 'fmnist-test-%'",
    ) == [(0,)]
    assert query(root, "select count(*) from classes where label_space = 'fashion-mnist'") == [
        (10,)
    ]


def test_models_hit_their_sparsity(run):
    root, _ = run
    rows = query(root, "select method, target_sparsity, achieved_sparsity from models")
    assert sorted((m, t) for m, t, _ in rows) == [("dense", 0.0)] * 2 + [("magnitude", 0.9)] * 2
    assert all(abs(a - t) <= 0.005 for _, t, a in rows)
    assert all(
        (root.checkpoint(m) / "model.json").exists()
        for (m,) in query(root, "select model_id from models")
    )


def test_one_prediction_per_model_dataset_key(run):
    root, _ = run
    assert query(
        root, "select count(*), count(distinct (model_id, dataset, key)) from predictions"
    ) == [(4 * 3 * N, 4 * 3 * N)]
    assert query(
        root,
        "select count(*), min(n_images), max(n_images) from inference_runs where status = 'done'",
    ) == [(12, N, N)]
    assert query(
        root,
        "select count(*) from predictions p join images i using (dataset, key)"
        " where p.label <> i.label",
    ) == [(0,)]
    assert query(
        root, "select count(*) from predictions where pred <> top5[1] or p_pred < p_label - 1e-6"
    ) == [(0,)]


def test_class_tstats_and_pie_views(run):
    root, _ = run
    assert query(root, "select count(*), count(distinct dataset) from class_tstats") == [(30, 3)]
    assert query(root, "select count(*) from class_tstats where q_value < p_value - 1e-12") == [
        (0,)
    ]
    n_pie, total = query(
        root,
        "select count(*) filter (where is_pie), count(*) from pie where dataset = 'fmnist-test'",
    )[0]
    assert total == N and 0 < n_pie < N
    assert query(root, "select sum(n_images) from pie_accuracy where dataset = 'fmnist-test'") == [
        (N,)
    ]


def test_export_holds_exactly_the_pies_with_metadata(run):
    root, _ = run
    pies = {
        k for (k,) in query(root, "select key from pie where dataset = 'fmnist-test' and is_pie")
    }
    exported = list(read_shards(root.export("fmnist-test", 0.9, "magnitude") / "pie"))
    assert {s["__key__"] for s in exported} == pies
    meta = exported[0]["json"]["pie"]
    assert meta["is_pie"] is True and meta["baseline_mode"] != meta["variant_mode"]
    assert meta["label"] == exported[0]["cls"] and meta["baseline_n"] == 2
    parent = {s["__key__"]: s["png"] for s in read_shards(root.shards("fmnist-test"))}
    assert all(s["png"] == parent[s["__key__"]] for s in exported)
    rest = list(read_shards(root.export("fmnist-test", 0.9, "magnitude") / "nonpie"))
    assert len(rest) + len(exported) == N and not {s["__key__"] for s in rest} & pies
    assert query(
        root, "select kind, parent, n_images from datasets where kind = 'export' order by name"
    ) == [("export", "fmnist-test", N - len(pies)), ("export", "fmnist-test", len(pies))]


def test_an_export_is_a_dataset_models_can_be_evaluated_on(run):
    root, args = run
    (name, n), *_ = query(
        root, "select name, n_images from datasets where kind = 'export' and n_images > 0"
    )
    pie("infer", "--dataset", name, *args)
    assert query(
        root,
        f"select count(distinct model_id), count(*) from predictions where dataset = '{name}'",
    ) == [(4, 4 * n)]
    # each export image is scored as its parent's image was: same keys, same predictions
    assert query(
        root,
        "select count(*) from predictions as e join predictions as p using (model_id, key)"
        f" where e.dataset = '{name}' and p.dataset = 'fmnist-test' and e.pred <> p.pred",
    ) == [(0,)]


def test_reruns_do_nothing_new(run):
    root, args = run
    before = query(root, "select count(*) from predictions")
    assert "0 models trained" in pie("train", *args).stdout
    assert "0 (model, dataset) pairs evaluated" in pie("infer", *args).stdout
    assert "already there" in pie("corrupt", *args).stdout
    assert query(root, "select count(*) from predictions") == before


def test_interrupted_infer_then_rerun_leaves_no_duplicate(run, monkeypatch):
    root, args = run
    con = store.connect(root)
    store.delete_predictions(con, "dataset like 'fmnist-test-%'")
    con.execute("delete from inference_runs where dataset like 'fmnist-test-%'")
    con.close()
    import infer.run

    real, calls = infer.run.load_pair, []

    def interrupted(con, parts, replace_errors=False):
        calls.append(parts)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(con, parts, replace_errors)

    monkeypatch.setattr(infer.run, "load_pair", interrupted)
    result = pie("infer", *args, ok=False)
    assert result.exit_code == 130 and "interrupted" in result.stderr
    monkeypatch.undo()
    partial = query(root, "select count(*) from inference_runs where dataset like 'fmnist-test-%'")
    assert partial == [(2,)]
    pie("infer", *args)
    assert query(
        root, "select count(*), count(distinct (model_id, dataset, key)) from predictions"
    ) == [(4 * 3 * N, 4 * 3 * N)]
    assert query(root, "select count(*) from inference_runs") == [(12,)]


def test_summary_prints_per_sparsity_and_paths(run):
    _, args = run
    out = pie("summary", *args).stdout
    assert "0.9" in out and "magnitude" in out and "database:" in out and "export:" in out


@pytest.mark.parametrize("fmt", ["csv", "json", "parquet"])
def test_sql_formats(run, tmp_path, fmt):
    root, _ = run
    out = tmp_path / f"result.{fmt}"
    pie(
        "sql",
        "select model_id, dataset, top1 from model_accuracy order by all",
        "--format",
        fmt,
        "--out",
        str(out),
        "--root",
        str(root.path),
    )
    df = {
        "csv": pl.read_csv,
        "json": lambda p: pl.DataFrame(json.loads(p.read_text())),
        "parquet": pl.read_parquet,
    }[fmt](out)
    assert df.columns == ["model_id", "dataset", "top1"] and df.height == 12


def test_sql_prints_a_table(run):
    root, _ = run
    out = pie("sql", "select count(*) as n from predictions", "--root", str(root.path)).stdout
    assert str(4 * 3 * N) in out and "n" in out


def test_sql_is_read_only(run):
    root, _ = run
    result = pie("sql", "drop table predictions", "--root", str(root.path), ok=False)
    assert_one_line_error(result, "DROP statement refused")
    assert query(root, "select count(*) from predictions") == [(4 * 3 * N,)]


def test_sql_table_piped_is_plain_one_line_per_row(run):
    """CliRunner's stdout is not a terminal: no box, no folding, at any width."""
    root, _ = run
    sql = (
        "select model_id, dataset, top1, repeat('x', 150) as wide from model_accuracy"
        " where dataset = 'fmnist-test' order by model_id"
    )
    lines = pie("sql", sql, "--root", str(root.path)).stdout.splitlines()
    expected = query(root, sql)
    assert len(expected) == 4 and len(lines) == 2 + len(expected)
    assert lines[0].split() == ["model_id", "dataset", "top1", "wide"]
    assert set(lines[1]) == {"-", " "}
    for line, (model_id, dataset, top1, wide) in zip(lines[2:], expected, strict=True):
        assert line.split() == [model_id, dataset, f"{top1:.6g}", wide]


def test_a_copied_root_works_without_the_original(run, tmp_path):
    """Paths in the database are relative to the work root: a copy is self-contained."""
    root, args = run
    copy = tmp_path / "copy"
    shutil.copytree(root.path, copy)
    config = args[args.index("--config") + 1]
    hidden = root.path.with_name("hidden")
    root.path.rename(hidden)
    try:
        out = pie("sql", "select path from datasets", "-f", "json", "--root", str(copy)).stdout
        paths = [r["path"] for r in json.loads(out)]
        assert len(paths) == 6 and all((copy / p / "index.json").is_file() for p in paths)
        con = store.connect(open_root(copy))
        store.delete_predictions(con, "dataset = 'fmnist-test-contrast-2'")
        con.execute("delete from inference_runs where dataset = 'fmnist-test-contrast-2'")
        con.close()
        pie("infer", "--config", config, "--root", str(copy))
        pie("analyze", "--config", config, "--root", str(copy))
        assert "magnitude" in pie("summary", "--config", config, "--root", str(copy)).stdout
        assert query(open_root(copy), "select count(*) from predictions") == [(4 * 3 * N,)]
    finally:
        hidden.rename(root.path)


def test_error_missing_dataset(run):
    _, args = run
    assert_one_line_error(pie("corrupt", "nope", *args, ok=False), "unknown dataset 'nope'")


def test_error_unknown_config_key(run, tmp_path):
    root, _ = run
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepoch = 3\n")
    assert_one_line_error(
        pie("train", "--config", str(bad), "--root", str(root.path), ok=False),
        "unknown config key 'train.epoch'",
    )
    bad.write_text("[trian]\n")
    assert_one_line_error(
        pie("train", "--config", str(bad), "--root", str(root.path), ok=False),
        "unknown config key 'trian'",
    )


def test_error_sparsity_out_of_range(run):
    _, args = run
    assert_one_line_error(
        pie("train", "--sparsity", "1.0", *args, ok=False), "sparsity must be in [0, 1)"
    )
    assert_one_line_error(
        pie("train", "--sparsity", "-0.1", *args, ok=False), "sparsity must be in"
    )


def test_error_root_cannot_be_created(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_one_line_error(
        pie("analyze", "--root", str(blocker / "work"), ok=False), "cannot create work root"
    )


def test_error_query_on_missing_table(run):
    root, _ = run
    assert_one_line_error(
        pie("sql", "select * from nope", "--root", str(root.path), ok=False), "nope does not exist"
    )


def test_report_opens_in_a_browser_and_its_gallery_filters(run, tmp_path):
    """The report of this pipeline in headless Chromium: nothing fetched, no script error, the
    gallery's first page as the `pie` relation counts it, and a class filter that changes it."""
    from report import browser
    from report.config import ReportConfig

    if browser.chromium() is None:
        pytest.skip("no `chromium` on PATH: Debian's chromium is needed (`make browser`)")
    root, args = run
    shot = tmp_path / "report.png"
    pie("report", "--screenshot", str(shot), *args)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pies = "from pie where dataset = 'fmnist-test' and is_pie"
    [(n_pie,)] = query(root, f"select count(*) {pies}")
    label, n_label = query(root, f"select label, count(*) {pies} group by 1 order by 2, 1")[0]
    page_size = ReportConfig().page_size
    with browser.opened(root.report / "index.html") as (page, problems):
        figures = page.locator(".js-plotly-plot").count()
        cards = page.locator("#gallery-grid .card").count()
        thumbnails = page.evaluate(  # gallery entries with an image shown (loaded)
            "[...document.querySelectorAll('#gallery-grid .card img')]"
            ".filter(i => i.complete && i.naturalWidth > 0).length"
        )
        page.select_option("#filter-class", str(label))
        filtered = page.locator("#gallery-grid .card").count()
    assert problems == []  # console errors, uncaught exceptions, requests that left the disk
    # top-1, per-class impact, two PIE plots, one heat map (one pruned population, generated)
    assert figures == 5
    assert cards == thumbnails == min(page_size, n_pie) > 0
    assert filtered == min(page_size, n_label) != cards
    page, gallery = str(root.report / "index.html"), tmp_path / "gallery.png"
    assert browser.main([page, str(gallery), "--section", "gallery"]) == 0
    with Image.open(gallery) as image:  # the section alone: narrower than the 1280 px viewport
        assert 0 < image.width < 1280 and image.height > 0
    assert browser.main([page, str(gallery), "--section", "nope"]) == 2
