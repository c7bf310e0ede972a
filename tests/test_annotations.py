"""`pie annotate` and view pie_annotations on a hand-made work root: how rows find their images,
the counts against hand counts, the tests against scipy's fisher_exact and
false_discovery_control, quantile bins, lists of keys, replacement, and the one-line refusals."""

from __future__ import annotations

import duckdb
import pytest
from conftest import add_dataset, add_model, add_predictions, assert_one_line_error, pie
from scipy.stats import false_discovery_control, fisher_exact

from analytics import analyze
from analytics.annotate import match
from analytics.config import AnalyzeConfig
from pie import catalog, materialised, store
from pie.catalog import LabelSpace

# 14 images in two class folders; `dup` is a file stem both share.
LABELS = {f"n01/a0{i}": 0 for i in range(1, 7)} | {f"n02/b{i:02d}": 1 for i in range(7, 13)}
LABELS |= {"n01/dup": 0, "n02/dup": 1}
# The dense population always predicts the label. Magnitude 0.5 predicts class 2 on these (its
# PIEs); magnitude 0.9 on every image of class 0.
PIES = {0.5: {"n01/a01", "n01/a02", "n01/a03", "n02/b07", "n01/dup"}}
PIES[0.9] = {k for k, y in LABELS.items() if y == 0}
# file,error,quality: a key, a path, file names, an ambiguous stem, an unknown file, an empty cell
CSV = """file,error,quality
n01/a01,yes,0.1
val/n01/a02.JPEG,yes,0.2
a03.JPEG,no,0.3
b07.png,yes,0.4
n01/a04,no,0.5
a05,no,0.6
a06,no,0.7
b08,yes,0.8
b09,no,0.9
b10,no,1.0
dup.JPEG,yes,5
n01/dup.JPEG,yes,1.1
zzz.png,no,7
b11,,1.2
"""
BINS = ["q1/4 [0.1, 0.3]", "q2/4 [0.4, 0.6]", "q3/4 [0.7, 0.9]", "q4/4 [1, 1.2]"]


@pytest.fixture
def study(root):
    """The work root with the images, three models per population and their predictions."""
    con = store.connect(root)
    catalog.ensure_label_space(con, LabelSpace("ls", tuple((i, None, f"c{i}") for i in range(3))))
    add_dataset(con, "d")
    for key, label in LABELS.items():
        con.execute("insert into images values ('d', ?, ?, 'd-000000.tar')", [key, label])
    for i in range(3):
        for sparsity in (0.0, 0.5, 0.9):
            model = f"m{sparsity}-{i}"
            add_model(con, model, "magnitude" if sparsity else "dense", sparsity)
            wrong = PIES.get(sparsity, set())
            rows = [(k, y, 2 if k in wrong else y) for k, y in LABELS.items()]
            add_predictions(con, model, "d", rows)
    con.close()
    return root


def analyse(root) -> None:
    analyze.main(root, AnalyzeConfig(experiment="exp", dataset="d"), force=True)


def annotate(root, path, *args: str, ok: bool = True):
    return pie("annotate", str(path), "--dataset", "d", "--root", str(root.path), *args, ok=ok)


def fisher_rows(root, source: str = "s", name: str | None = None) -> dict[tuple, dict]:
    """(sparsity, name, value) -> the pie_annotations row."""
    with store.connect(root, read_only=True) as con:
        result = con.execute(
            "select * from pie_annotations where source = ? and name = coalesce(?, name)",
            [source, name],
        )
        columns = [d[0] for d in result.description]
        rows = [dict(zip(columns, r, strict=True)) for r in result.fetchall()]
    return {(r["sparsity"], r["name"], r["value"]): r for r in rows}


def annotations(root) -> list[tuple]:
    with store.connect(root, read_only=True) as con:
        return store.rows(con, "select source, key, name, value from annotations order by all")


def test_rows_find_their_images_by_key_path_or_unique_stem():
    keys = ["n01/a", "n01/dup", "n02/dup", "fmnist-test-00042", "x/y/z"]
    con = duckdb.connect()  # the keys are matched where they are stored: table images
    con.execute("create table images (dataset varchar, key varchar)")
    con.executemany("insert into images values ('d', ?), ('other', ?)", [[k, k] for k in keys])
    found = match(
        [
            "fmnist-test-00042",  # a key
            "n01/a.JPEG",  # the key with an extension
            r"C:\data\n02\dup.png",  # a path whose tail is a key
            "/data/val/x/y/z.jpg",
            "a.jpeg",  # a file name: one key ends with its stem
            "dup.JPEG",  # two do: ambiguous
            "nothing.png",
            None,
            "/",  # no file name at all
        ],
        con,
        "d",
    )
    matched = ["fmnist-test-00042", "n01/a", "n02/dup", "x/y/z", "n01/a"]
    assert found.keys == [*matched, None, None, None, None]
    assert dict(found.how) == {"key": 1, "path": 3, "stem": 1}
    assert found.ambiguous == [("dup.JPEG", ["n01/dup", "n02/dup"])]
    assert found.unmatched == ["nothing.png", "", "/"]


def test_counts_and_tests_match_hand_counts_and_scipy(study, tmp_path):
    analyse(study)
    path = tmp_path / "labels.csv"
    path.write_text(CSV)
    result = annotate(study, path, "--source", "s", "--bins", "quality=4")
    assert result.stdout.startswith(
        "annotate: 12 of 14 rows of labels.csv name an image of d (2 by key, 2 by path, 8 by"
        " stem); 1 match none ('zzz.png'); 1 ambiguous, their file name ends several keys"
        " ('dup.JPEG' -> n01/dup or n02/dup)\n"
    )
    got = fisher_rows(study)  # computed at once: the analysis was up to date
    # error at 0.5, by hand: PIEs a01 a02 a03 b07 n01/dup -> yes yes no yes yes; non-PIEs
    # a04 a05 a06 b08 b09 b10 -> no no no yes no no (b11's cell is empty: not annotated)
    yes = got[(0.5, "error", "yes")]
    assert (yes["n_pie_with_value"], yes["n_pie"]) == (4, 5)
    assert (yes["n_non_pie_with_value"], yes["n_non_pie"]) == (1, 6)
    assert yes["share_pie"] == pytest.approx(4 / 5) and yes["share_non_pie"] == pytest.approx(1 / 6)
    expected = fisher_exact([[4, 1], [1, 5]])
    assert yes["odds_ratio"] == pytest.approx(expected.statistic)  # 20
    assert yes["p_value"] == pytest.approx(expected.pvalue)
    no = got[(0.5, "error", "no")]
    assert (no["n_pie_with_value"], no["n_non_pie_with_value"]) == (1, 5)
    assert no["p_value"] == pytest.approx(fisher_exact([[1, 4], [5, 1]]).pvalue)
    # 0.9: PIEs are the class-0 images: a01..a06 and n01/dup -> yes yes no no no no yes
    yes = got[(0.9, "error", "yes")]
    counts = (yes["n_pie_with_value"], yes["n_pie"], yes["n_non_pie_with_value"], yes["n_non_pie"])
    assert counts == (3, 7, 2, 4)  # non-PIEs b07 b08 b09 b10: yes yes no no
    assert yes["p_value"] == pytest.approx(fisher_exact([[3, 4], [2, 2]]).pvalue)
    # quality in 4 quantile bins over the 12 matched images (b11's 1.2 included)
    bins = {v: r for (s, n, v), r in got.items() if (s, n) == (0.5, "quality")}
    assert sorted(bins) == BINS
    assert [bins[b]["n_pie_with_value"] for b in BINS] == [3, 1, 0, 1]  # a01-3, b07, dup
    assert [bins[b]["n_non_pie_with_value"] for b in BINS] == [0, 2, 3, 2]
    assert {(r["n_pie"], r["n_non_pie"]) for r in bins.values()} == {(5, 7)}
    first = bins[BINS[0]]
    assert first["odds_ratio"] == float("inf")  # no non-PIE in the first bin
    assert first["p_value"] == pytest.approx(fisher_exact([[3, 2], [0, 7]]).pvalue)
    # BH across the four bins of the population, against scipy's
    p = [bins[b]["p_value"] for b in BINS]
    q = false_discovery_control(p, method="bh")
    assert [bins[b]["q_value"] for b in BINS] == pytest.approx(list(q))
    # significance at the analysis's alpha 0.05 on p
    assert all(r["significant"] == (r["p_value"] <= 0.05) for r in got.values())
    assert all((r["alpha"], r["significance_on"]) == (0.05, "p") for r in got.values())


def test_a_list_of_keys_marks_every_image_listed_or_not(study, tmp_path):
    analyse(study)
    path = tmp_path / "errors.csv"
    path.write_text("image\na01.JPEG\nn02/b07.JPEG\n")
    annotate(study, path, "--source", "errors")
    listed = [r for r in annotations(study) if r[3] == "true"]
    assert [r[1] for r in listed] == ["n01/a01", "n02/b07"]
    assert len(annotations(study)) == len(LABELS)
    row = fisher_rows(study, "errors")[(0.5, "listed", "true")]
    # both listed images are PIEs at 0.5: [[2, 3], [0, 9]]
    assert (row["n_pie_with_value"], row["n_pie"], row["n_non_pie"]) == (2, 5, 9)
    assert row["p_value"] == pytest.approx(fisher_exact([[2, 3], [0, 9]]).pvalue)


def test_annotating_again_replaces_the_source_and_parquet_reads_too(study, tmp_path):
    import pyarrow as pa
    from pyarrow import parquet

    analyse(study)
    path = tmp_path / "labels.csv"
    path.write_text(CSV)
    annotate(study, path, "--source", "s")
    annotate(study, path, "--source", "other")
    parquet.write_table(
        pa.table({"label": ["rater says 0"], "key": ["n01/a01"], "score": [3]}),
        tmp_path / "study.parquet",
    )
    annotate(study, tmp_path / "study.parquet", "--source", "s", "--key-column", "key")
    mine = [r for r in annotations(study) if r[0] == "s"]
    assert mine == [("s", "n01/a01", "label", "rater says 0"), ("s", "n01/a01", "score", "3")]
    assert len([r for r in annotations(study) if r[0] == "other"]) == 23  # 11 errors, 12 scores
    assert set(fisher_rows(study, "s")) == {
        (s, n, v) for s in (0.5, 0.9) for n, v in (("label", "rater says 0"), ("score", "3"))
    }


def test_tests_wait_for_pie_analyze_when_the_analysis_is_out_of_date(study, tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text(CSV)
    result = annotate(study, path, "--source", "s")
    assert "the analysis is out of date: `pie analyze` tests them" in result.stdout
    assert fisher_rows(study) == {}
    analyse(study)
    with store.connect(study, read_only=True) as con:
        assert materialised.is_fresh(con)
    assert fisher_rows(study)[(0.5, "error", "yes")]["n_pie_with_value"] == 4


def test_bad_files_are_refused_in_one_line_and_write_nothing(study, tmp_path):
    analyse(study)
    good = tmp_path / "labels.csv"
    good.write_text(CSV)
    annotate(study, good, "--source", "s")
    before = annotations(study)
    cases = {
        "none.csv": ("file,error\nzzz.png,yes\nn03/a99,no\n", "none of the 2 rows of none.csv"),
        "twice.csv": ("file,error\na01,yes\nn01/a01.png,no\n", "named by more than one row"),
    }
    for name, (text, expected) in cases.items():
        (tmp_path / name).write_text(text)
        result = annotate(study, tmp_path / name, "--source", "s", ok=False)
        assert_one_line_error(result, expected)
    for args, expected in (
        (["--bins", "error=3"], "column 'error' (string) is not numeric"),
        (["--bins", "quality=1"], "N >= 2"),
        (["--key-column", "nope"], "no column 'nope'"),
        (["--source", "bad name"], "invalid source name"),
    ):
        assert_one_line_error(annotate(study, good, "--source", "s", *args, ok=False), expected)
    assert_one_line_error(
        annotate(study, tmp_path / "missing.csv", "--source", "s", ok=False), "not found"
    )
    assert annotations(study) == before


def test_report_shows_the_tests_and_each_gallery_image_s_annotations(study, tmp_path):
    import json
    import re

    from report import build
    from report.config import ReportConfig

    analyse(study)
    path = tmp_path / "labels.csv"
    path.write_text(CSV)
    annotate(study, path, "--source", "s", "--bins", "quality=4")
    html = build.main(study, ReportConfig(experiment="exp", dataset="d")).read_text()
    section = re.search(r'<section id="annotations">(.*?)</section>', html, re.S).group(1)
    # 0.5's error = yes: 4 of 5 PIEs, 1 of 6 non-PIEs; odds ratio 20
    assert "<td>magnitude 0.5</td><td>s: error = yes</td><td>4 / 5 (80.00%)</td>" in section
    assert "<td>1 / 6 (16.67%)</td><td>20</td>" in section
    blob = re.search(r'<script type="application/json" id="gallery-data">(.*?)</script>', html)
    gallery = json.loads(blob.group(1))
    labels = {
        key: [gallery["annotations"][i] for i in found]
        for key, found in zip(gallery["keys"], gallery["keyAnnotations"], strict=True)
    }
    assert labels["n01/a01"] == ["s: error = yes", f"s: quality = {BINS[0]}"]
    assert labels["n02/b07"] == ["s: error = yes", f"s: quality = {BINS[1]}"]
    assert labels["n01/a05"] == ["s: error = no", f"s: quality = {BINS[1]}"]  # a PIE at 0.9
    # its row, not the ambiguous `dup.JPEG` one (whose 5 is in no bin)
    assert labels["n01/dup"] == ["s: error = yes", f"s: quality = {BINS[3]}"]
    # the gallery's annotation filter in headless Chromium: `error = no` are a03 (a PIE in both
    # populations) and a04, a05, a06 (at 0.9): 5 of the 12 entries
    from report import browser

    if browser.chromium() is None:
        pytest.skip("no `chromium` on PATH: Debian's chromium is needed (`make browser`)")
    with browser.opened(study.report / "index.html") as (page, problems):
        cards = page.locator("#gallery-grid .card").count()
        option = str(gallery["annotations"].index("s: error = no"))
        page.select_option("#filter-annotation", option)
        filtered = page.locator("#gallery-grid .card").count()
        shown = page.locator("#gallery-grid .card .note").all_inner_texts()
    assert problems == []
    assert (cards, filtered) == (12, 5)
    assert shown.count("s: error = no") == 5
