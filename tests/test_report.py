"""`pie report` on a hand-made work root: the page's data against hand counts, the gallery's
thumbnails from the shards, a page that fetches nothing, and the one-line refusals."""

from __future__ import annotations

import io
import json
import re
import shutil

import numpy as np
import pytest
from conftest import add_dataset, add_model, add_predictions, assert_one_line_error, pie
from PIL import Image

from analytics import analyze
from analytics.config import AnalyzeConfig
from pie import catalog, store
from pie.catalog import LabelSpace
from pie.shards import Sample, write_shards
from report import data
from report.config import ReportConfig

LABELS = {"k0": 0, "k1": 0, "k2": 1, "k3": 1, "k4": 2, "k5": 2}
# predictions of the three models of each population, per image
DENSE = {"k0": (0, 0, 0), "k1": (0, 0, 0), "k2": (1, 1, 1), "k3": (1, 1, 1), "k4": (2, 2, 2),
         "k5": (2, 2, 1)}  # fmt: skip
PRUNED = {"k0": (1, 1, 0), "k1": (0, 0, 0), "k2": (2, 2, 2), "k3": (1, 1, 1), "k4": (2, 0, 1),
          "k5": (2, 2, 2)}  # fmt: skip
# By hand: dense modes 0 0 1 1 2 2; pruned modes 1 0 2 1 2 (a three-way tie: the largest id)
# 2, so the PIEs are k0 (dense 0 -> pruned 1) and k2 (1 -> 2), in both pruned populations (0.5
# and 0.9 predict alike). L1 distances: k2: |1 - 0| + |0 - 1| = 2; k0: (1 - 1/3) + 2/3 = 4/3.
# On the corrupted variant, dense gets 2 of 6 wrong and pruned 4: error relative to dense 2.0.
SPACE = LabelSpace("ls", ((0, None, "zero"), (1, None, "one"), (2, None, "two")))
CONFIG = 'name = "exp"\n[analyze]\ndataset = "clean"\n'


def png(value: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(out, "PNG")
    return out.getvalue()


@pytest.fixture
def analysed(root):
    con = store.connect(root)
    catalog.ensure_label_space(con, SPACE)
    add_dataset(con, "clean")
    add_dataset(con, "clean-gn-1", "corrupted", "clean", "gaussian_noise", 1, origin="generated")
    written = write_shards(
        [Sample(k, y, png(40 * i), "png") for i, (k, y) in enumerate(LABELS.items())],
        root.shards("clean"),
        "clean",
        max_count=4,  # two shards
    )
    con.execute("update datasets set path = 'shards/clean', n_images = 6 where name = 'clean'")
    for key, label, shard in zip(written.keys, written.labels, written.shards, strict=True):
        con.execute("insert into images values ('clean', ?, ?, ?)", [key, label, shard])
    for i in range(3):
        models = ((f"d{i}", 0.0, DENSE), (f"p{i}", 0.5, PRUNED), (f"q{i}", 0.9, PRUNED))
        for model, sparsity, preds in models:
            add_model(con, model, "magnitude" if sparsity else "dense", sparsity)
            add_predictions(con, model, "clean", [(k, LABELS[k], preds[k][i]) for k in LABELS])
            wrong = 2 if sparsity == 0 else 4
            rows = [(k, 0, 1 if j < wrong else 0) for j, k in enumerate(LABELS)]
            add_predictions(con, model, "clean-gn-1", rows)
    con.close()
    (root.path / "config.toml").write_text(CONFIG)
    analyze.main(root, AnalyzeConfig(experiment="exp", dataset="clean"))
    return root


def report(root, *args: str, ok: bool = True):
    return pie("report", "--root", str(root.path), *args, ok=ok)


def page_data(root) -> tuple[str, dict, dict]:
    """The page, its figures and its gallery blob."""
    html = (root.report / "index.html").read_text()

    def blob(name: str) -> dict:
        found = re.search(f'<script type="application/json" id="{name}">(.*?)</script>', html, re.S)
        return json.loads(found.group(1))

    return html, blob("figures"), blob("gallery-data")


def test_study_matches_hand_counts(analysed):
    study = data.load(analysed, ReportConfig(experiment="exp", dataset="clean"))
    assert study.n_pie_entries == 4
    got = [(g["key"], g["sparsity"]) for g in study.gallery]
    assert got == [("k2", 0.5), ("k2", 0.9), ("k0", 0.5), ("k0", 0.9)]
    k0 = study.gallery[2]
    assert (k0["label"], k0["baseline_mode"], k0["variant_mode"]) == (0, 0, 1)
    assert k0["l1_distance"] == pytest.approx(4 / 3) and study.gallery[0]["l1_distance"] == 2
    assert k0["baseline_agreement"] == 1 and k0["variant_agreement"] == pytest.approx(2 / 3)
    assert len(study.models) == 9 and study.class_names == {0: "zero", 1: "one", 2: "two"}
    pies = {(p["sparsity"], p["n_pie"], p["n_pie_tie_decided"]) for p in study.populations}
    assert pies == {(0.0, None, None), (0.5, 2, 0), (0.9, 2, 0)}
    # classes with PIEs: k0 (class 0) and k2 (class 1), one each of two images
    assert {(r["sparsity"], r["class_id"], r["n_pie"]) for r in study.pie_classes} == {
        (s, c, 1) for s in (0.5, 0.9) for c in (0, 1)
    }
    assert {(r["sparsity"], round(r["error_vs_dense"], 9)) for r in study.corruptions} == {
        (0.0, 1.0),
        (0.5, 2.0),
        (0.9, 2.0),
    }
    assert study.shards == {"k0": "clean-000000.tar", "k2": "clean-000000.tar"}


def test_page_shows_the_gallery_once_per_image_and_fetches_nothing(analysed):
    out = report(analysed).stdout
    assert "report:" in out and "4 of 4 PIE entries" in out
    html, figures, gallery = page_data(analysed)
    assert gallery["keys"] == ["k0", "k2"] and gallery["total"] == 4
    assert [e[0] for e in gallery["entries"]] == [1, 1, 0, 0]  # k2, k2, k0, k0
    for uri, value in zip(gallery["images"], (0, 80), strict=True):  # k0: 0, k2: 40 * 2
        encoded = uri.removeprefix("data:image/png;base64,")
        pixels = np.asarray(Image.open(io.BytesIO(__import__("base64").b64decode(encoded))))
        assert pixels.shape == (8, 8) and (pixels == value).all()
    heatmaps = [f for name, f in figures.items() if name.startswith("corruption-")]
    assert sorted(f["data"][0]["z"][0][0] for f in heatmaps) == pytest.approx([2.0, 2.0])
    assert {"top1", "classes", "pie-counts", "pie-top1"} <= set(figures)
    without_plotly = html.replace(html[html.index("<script>") : html.index("</script>")], "")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", without_plotly)
    assert not re.search(r"<script[^>]+src=|<link[^>]+href=|@import|url\(http", html)


def test_max_gallery_caps_the_entries_largest_l1_first(analysed):
    assert "1 of 4 PIE entries" in report(analysed, "--max-gallery", "1").stdout
    _, _, gallery = page_data(analysed)
    assert gallery["keys"] == ["k2"] and len(gallery["entries"]) == 1


def test_missing_shards_build_without_thumbnails_and_one_warning(analysed):
    shutil.rmtree(analysed.shards("clean"))
    result = report(analysed)
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("warning: 2 gallery images not found")
    _, _, gallery = page_data(analysed)
    assert gallery["images"] == [None, None] and len(gallery["entries"]) == 4


def test_stale_analysis_is_refused_in_one_line(analysed):
    con = store.connect(analysed)
    add_predictions(con, "d0", "clean-gn-1", [("k9", 0, 0)])
    con.close()
    assert_one_line_error(report(analysed, ok=False), "run `pie analyze`")


def test_unknown_dataset_and_bad_setting_are_refused_in_one_line(analysed):
    assert_one_line_error(report(analysed, "-d", "nope", ok=False), "unknown dataset 'nope'")
    bad = analysed.path / "bad.toml"
    bad.write_text(CONFIG + "[report]\nthumbnail = 2\n")
    result = report(analysed, "--config", str(bad), ok=False)
    assert_one_line_error(result, "report.thumbnail must be in [8, 512]")


def test_screenshot_command_refuses_bad_arguments(capsys):
    from report import browser

    assert browser.main(["index.html"]) == 2
    assert browser.main(["index.html", "out.png", "--section"]) == 2
    assert browser.main(["index.html", "out.png", "--full"]) == 2
    assert capsys.readouterr().err.count("usage:") == 3
