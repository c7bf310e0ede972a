"""Given/expect rows for every view, on an in-memory database; expectations counted by hand."""

from __future__ import annotations

import pytest
from conftest import add_dataset, add_model, add_predictions


def one(con, sql: str, params=()):
    result = con.execute(sql, list(params))
    columns = [d[0] for d in result.description]
    rows = result.fetchall()
    assert len(rows) == 1, rows
    return dict(zip(columns, rows[0], strict=True))


def accuracy_rows(n_correct: int, n: int = 4) -> list[tuple[str, int, int]]:
    """Keys k0..k{n-1}, label 0; the first n_correct predicted right (pred 0), the rest 1."""
    return [(f"k{i}", 0, 0 if i < n_correct else 1) for i in range(n)]


def test_model_accuracy(con):
    add_model(con, "m1", "dense", 0.0)
    add_predictions(con, "m1", "d", [("k1", 0, 0), ("k2", 1, 2), ("k3", 2, 2), ("k4", 1, 1)])
    row = one(con, "select * from model_accuracy")
    assert row["n_images"] == 4 and row["n_correct"] == 3
    assert row["top1"] == pytest.approx(0.75)
    assert row["top5"] == pytest.approx(1.0)  # k2's top-5 holds its label
    assert row["error"] == pytest.approx(0.25)
    assert (row["experiment"], row["method"], row["sparsity"]) == ("exp", "dense", 0.0)


def test_class_recall_normalises_by_the_population_mean_top1(con):
    add_model(con, "m1", "dense", 0.0)
    add_model(con, "m2", "dense", 0.0)
    add_predictions(con, "m1", "d", [("k1", 0, 0), ("k2", 1, 2), ("k3", 2, 2), ("k4", 1, 1)])
    add_predictions(con, "m2", "d", [("k1", 0, 1), ("k2", 1, 2), ("k3", 2, 2), ("k4", 1, 1)])
    rows = {
        (m, c): (recall, pop, norm)
        for m, c, recall, pop, norm in con.execute(
            "select model_id, class_id, recall, population_top1, normalized_recall"
            " from class_recall"
        ).fetchall()
    }
    # m1 top-1 3/4, m2 top-1 2/4: population mean 0.625
    assert rows["m1", 1] == pytest.approx((0.5, 0.625, -0.125))
    assert rows["m1", 2] == pytest.approx((1.0, 0.625, 0.375))
    assert rows["m2", 0] == pytest.approx((0.0, 0.625, -0.625))
    assert len(rows) == 6


def dense_and_variant(con):
    """Dense d1..d4 and variant v1, v2 on keys a (label 0) and b (label 3)."""
    for i, (a, b) in enumerate([(1, 3), (1, 3), (2, 3), (2, 0)], start=1):
        add_model(con, f"d{i}", "dense", 0.0)
        add_predictions(con, f"d{i}", "d", [("a", 0, a), ("b", 3, b)])
    for i, (a, b) in enumerate([(2, 0), (2, 5)], start=1):
        add_model(con, f"v{i}", "magnitude", 0.9)
        add_predictions(con, f"v{i}", "d", [("a", 0, a), ("b", 3, b)])


def test_modal_labels_ties_go_to_the_largest_class_id(con):
    dense_and_variant(con)
    a = one(con, "select * from modal_labels where sparsity = 0 and key = 'a'")
    assert (a["mode"], a["mode_votes"], a["n_models"]) == (2, 2, 4)  # 1,1,2,2: tie -> 2
    assert a["agreement"] == pytest.approx(0.5) and a["fraction_correct"] == 0
    b = one(con, "select * from modal_labels where sparsity = 0 and key = 'b'")
    assert (b["mode"], b["mode_votes"], b["label"]) == (3, 3, 3)
    assert b["agreement"] == pytest.approx(0.75) and b["mean_p_label"] == pytest.approx(0.5)


def test_modal_labels_tie_break_setting_smallest(con):
    dense_and_variant(con)
    con.execute("update settings set value = 'smallest' where name = 'mode_tie_break'")
    assert one(con, "select mode from modal_labels where sparsity = 0 and key = 'a'")["mode"] == 1


def test_pie_membership_votes_and_l1(con):
    dense_and_variant(con)
    a = one(con, "select * from pie where key = 'a'")
    assert (a["baseline_mode"], a["variant_mode"], a["is_pie"]) == (2, 2, False)
    assert a["l1_distance"] == pytest.approx(1.0)  # {1: .5, 2: .5} vs {2: 1}
    b = one(con, "select * from pie where key = 'b'")
    # the variant's 0 and 5 tie: 5 wins; the dense mode is 3: a PIE whatever the label says
    assert (b["baseline_mode"], b["variant_mode"], b["is_pie"]) == (3, 5, True)
    assert (b["baseline_n"], b["variant_n"], b["baseline_votes"], b["variant_votes"]) == (
        4,
        2,
        3,
        1,
    )
    assert b["baseline_agreement"] == pytest.approx(0.75)
    assert b["variant_agreement"] == pytest.approx(0.5)
    assert (b["baseline_correct"], b["variant_correct"]) == (True, False)
    assert b["l1_distance"] == pytest.approx(0.75 + 0.25 + 0.5)  # |.75-0|+|.25-.5|+|0-.5|
    assert (b["method"], b["sparsity"]) == ("magnitude", 0.9)


def test_pie_ignores_the_true_label(con):
    """Both populations agree on a wrong label: not a PIE."""
    add_model(con, "d1", "dense", 0.0)
    add_model(con, "v1", "magnitude", 0.5)
    add_predictions(con, "d1", "d", [("x", 0, 7)])
    add_predictions(con, "v1", "d", [("x", 0, 7)])
    assert one(con, "select is_pie from pie")["is_pie"] is False


def test_pie_accuracy(con):
    dense_and_variant(con)
    rows = {
        r[0]: r[1:]
        for r in con.execute(
            "select is_pie, n_images, baseline_top1, variant_top1 from pie_accuracy"
        ).fetchall()
    }
    assert rows[True] == pytest.approx((1, 0.75, 0.0))  # key b: dense 3 of 4 right
    assert rows[False] == pytest.approx((1, 0.0, 0.0))  # key a: nobody right


@pytest.fixture
def corrupted(con):
    add_dataset(con, "c")
    add_dataset(con, "c-gn-1", "corrupted", "c", "gaussian_noise", 1)
    add_dataset(con, "c-gn-2", "corrupted", "c", "gaussian_noise", 2)
    correct = {  # dataset -> per model, right answers out of 4
        "c": {"d1": 4, "d2": 3, "v1": 3, "v2": 3},
        "c-gn-1": {"d1": 3, "d2": 3, "v1": 2, "v2": 2},
        "c-gn-2": {"d1": 2, "d2": 2, "v1": 1, "v2": 1},
    }
    for m in ("d1", "d2"):
        add_model(con, m, "dense", 0.0)
    for m in ("v1", "v2"):
        add_model(con, m, "magnitude", 0.5)
    for dataset, per_model in correct.items():
        for m, n in per_model.items():
            add_predictions(con, m, dataset, accuracy_rows(n))
    return con


def test_robustness(corrupted):
    r = one(corrupted, "select * from robustness where dataset = 'c-gn-1' and sparsity = 0.5")
    assert (r["kind"], r["parent"], r["corruption"], r["severity"]) == (
        "corrupted",
        "c",
        "gaussian_noise",
        1,
    )
    assert r["n_models"] == 2 and r["mean_top1"] == pytest.approx(0.5)
    assert r["std_top1"] == pytest.approx(0.0)
    assert r["dense_error"] == pytest.approx(0.25)
    assert r["error_vs_dense"] == pytest.approx(2.0)
    assert r["clean_top1"] == pytest.approx(0.75)
    assert r["top1_change_vs_clean"] == pytest.approx(-0.25)
    d = one(corrupted, "select * from robustness where dataset = 'c' and sparsity = 0")
    assert d["mean_top1"] == pytest.approx(0.875) and d["error_vs_dense"] == pytest.approx(1.0)
    assert d["std_top1"] == pytest.approx(0.1767767, rel=1e-6)  # stdev of (1, .75)


def test_corruption_error(corrupted):
    v = one(corrupted, "select * from corruption_error where sparsity = 0.5")
    assert v["n_severities"] == 2 and v["mean_error"] == pytest.approx(0.625)
    assert v["ce_vs_dense"] == pytest.approx((0.5 + 0.75) / (0.25 + 0.5))
    # (E_v(s) - E_v(clean)) sums to .25 + .5; the dense's to (.25 - .125) + (.5 - .125)
    assert v["relative_ce_vs_dense"] == pytest.approx(0.75 / 0.5)
    assert v["ce_vs_alexnet"] is None  # no AlexNet reference for label space 'ls'
    d = one(corrupted, "select * from corruption_error where sparsity = 0")
    assert d["ce_vs_dense"] == pytest.approx(1.0)
    assert d["relative_ce_vs_dense"] == pytest.approx(1.0)


def test_corruption_error_vs_alexnet_needs_all_five_severities(con):
    add_dataset(con, "val", label_space="imagenet1k")
    add_model(con, "d1", "dense", 0.0)
    add_predictions(con, "d1", "val", accuracy_rows(4))
    for s in range(1, 6):
        add_dataset(con, f"val-fog-{s}", "corrupted", "val", "fog", s, label_space="imagenet1k")
        add_predictions(con, "d1", f"val-fog-{s}", accuracy_rows(2))
    row = one(con, "select * from corruption_error")
    assert row["ce_vs_alexnet"] == pytest.approx(5 * 0.5 / (5 * 0.819324))
    con.execute("delete from predictions where dataset = 'val-fog-5'")
    assert one(con, "select ce_vs_alexnet from corruption_error")["ce_vs_alexnet"] is None


def test_population_summary(con):
    dense_and_variant(con)
    add_dataset(con, "d")
    con.execute(
        "insert into class_tstats (dataset, experiment, method, sparsity, class_id, baseline_n,"
        " variant_n, significant) values ('d', 'exp', 'magnitude', 0.9, 0, 4, 2, true),"
        " ('d', 'exp', 'magnitude', 0.9, 3, 4, 2, false)"
    )
    v = one(con, "select * from population_summary where sparsity = 0.9")
    assert (v["n_models"], v["n_significant_classes"], v["n_classes_tested"]) == (2, 1, 2)
    assert (v["n_pie"], v["pie_fraction"]) == (1, 0.5)
    assert v["dense_top1_on_pie"] == pytest.approx(0.75)
    assert v["dense_top1_on_nonpie"] == pytest.approx(0.0)
    assert v["mean_top1"] == pytest.approx(0.0)
    d = one(con, "select * from population_summary where sparsity = 0")
    assert d["n_pie"] is None and d["mean_top1"] == pytest.approx(0.375)


def test_label_votes_shares(con):
    dense_and_variant(con)
    rows = con.execute(
        "select pred, n_votes, share from label_votes where sparsity = 0 and key = 'b'"
        " order by pred"
    ).fetchall()
    assert rows == [(0, 1, 0.25), (3, 3, 0.75)]
    assert con.execute("select count(*) from population_predictions").fetchall() == [(12,)]
