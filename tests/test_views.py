"""Given/expect rows for every view, on an in-memory database; expectations counted by hand."""

from __future__ import annotations

import pytest
from conftest import add_dataset, add_model, add_predictions
from test_constants import ALEXNET as PUBLISHED_ALEXNET

from pie import store


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
    con.execute("insert or replace into settings values ('mode_tie_break', 'smallest')")
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


def tied_and_untied_pies(con):
    """Dense d1..d3 and variant v1..v3 on keys x, y, z (label 0); per model the predictions."""
    dense = {"x": (1, 1, 1), "y": (1, 1, 2), "z": (4, 4, 5)}
    variant = {"x": (2, 2, 1), "y": (2, 3, 1), "z": (4, 5, 5)}
    for prefix, method, sparsity, preds in (
        ("d", "dense", 0.0, dense),
        ("v", "magnitude", 0.5, variant),
    ):
        for i in range(3):
            add_model(con, f"{prefix}{i}", method, sparsity)
            add_predictions(con, f"{prefix}{i}", "d", [(k, 0, p[i]) for k, p in preds.items()])


def test_pie_tie_decided(con):
    tied_and_untied_pies(con)
    rows = {
        r[0]: r[1:]
        for r in con.execute(
            "select key, baseline_mode, variant_mode, is_pie, tie_decided from pie"
        ).fetchall()
    }
    assert rows["x"] == (1, 2, True, False)  # 3 votes vs 2 votes: nothing tied
    assert rows["y"] == (1, 3, True, True)  # the variant's 2, 3, 1 tie: 3 wins by the rule
    assert rows["z"] == (4, 5, True, False)
    tied = dict(con.execute("select key, tied from modal_labels where sparsity = 0.5").fetchall())
    assert tied == {"x": False, "y": True, "z": False}


def test_pie_tie_decided_when_only_the_dense_mode_is_tied(con):
    dense_and_variant(con)  # key a: dense 1, 1, 2, 2 (tied), variant 2, 2: the same mode
    a = one(con, "select is_pie, tie_decided from pie where key = 'a'")
    assert (a["is_pie"], a["tie_decided"]) == (False, True)
    dense_tied = one(con, "select tied from modal_labels where sparsity = 0 and key = 'a'")
    assert dense_tied["tied"] is True


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
    assert (v["origin"], v["corruption"], v["benchmark"]) == ("released", "gaussian_noise", True)
    assert v["n_severities"] == 2 and v["complete"] is False
    assert v["mean_error"] == pytest.approx(0.625) and v["clean_error"] == pytest.approx(0.25)
    assert v["ce_vs_dense"] == pytest.approx((0.5 + 0.75) / (0.25 + 0.5))
    # (E_v(s) - E_v(clean)) sums to .25 + .5; the dense's to (.25 - .125) + (.5 - .125)
    assert v["relative_ce_vs_dense"] == pytest.approx(0.75 / 0.5)
    assert v["ce_vs_alexnet"] is None  # no AlexNet reference for label space 'ls'
    d = one(corrupted, "select * from corruption_error where sparsity = 0")
    assert d["ce_vs_dense"] == pytest.approx(1.0)
    assert d["relative_ce_vs_dense"] == pytest.approx(1.0)


def test_corruption_error_keeps_released_and_generated_apart(corrupted):
    """A generated gaussian_noise at severity 1 beside the released one: two rows, not mixed."""
    add_dataset(corrupted, "c-gen-gn-1", "corrupted", "c", "gaussian_noise", 1, origin="generated")
    for m, n in {"d1": 1, "d2": 1, "v1": 0, "v2": 0}.items():
        add_predictions(corrupted, m, "c-gen-gn-1", accuracy_rows(n))
    rows = {
        r[0]: r[1:]
        for r in corrupted.execute(
            "select origin, n_severities, ce_vs_dense from corruption_error where sparsity = 0.5"
        ).fetchall()
    }
    assert rows["released"] == pytest.approx((2, (0.5 + 0.75) / (0.25 + 0.5)))
    assert rows["generated"] == pytest.approx((1, 1.0 / 0.75))
    mce = corrupted.execute(
        "select origin, n_corruptions, mean_ce_vs_dense_present, mce_vs_dense"
        " from mean_corruption_error where sparsity = 0.5 order by origin"
    ).fetchall()
    assert mce[0][:2] == ("generated", 1) and mce[0][2] == pytest.approx(1.0 / 0.75)
    assert mce[1][:2] == ("released", 1) and mce[1][2] == pytest.approx(1.25 / 0.75)
    assert mce[0][3] is None and mce[1][3] is None  # 1 of 15 corruptions: no mCE
    s = one(corrupted, "select * from population_summary where dataset = 'c' and sparsity = 0.5")
    assert (s["released_n_corruptions"], s["generated_n_corruptions"]) == (1, 1)
    assert s["released_mce_vs_dense"] is None and s["generated_mce_vs_dense"] is None
    assert s["released_mean_ce_vs_dense_present"] == pytest.approx(1.25 / 0.75)
    assert s["generated_mean_ce_vs_dense_present"] == pytest.approx(1.0 / 0.75)


def test_extra_corruptions_are_reported_apart(corrupted):
    add_dataset(corrupted, "c-sp-1", "corrupted", "c", "speckle_noise", 1)
    for m, n in {"d1": 2, "d2": 2, "v1": 0, "v2": 0}.items():
        add_predictions(corrupted, m, "c-sp-1", accuracy_rows(n))
    sp = one(
        corrupted,
        "select * from corruption_error where corruption = 'speckle_noise' and sparsity = 0.5",
    )
    assert sp["benchmark"] is False and sp["ce_vs_dense"] == pytest.approx(1.0 / 0.5)
    m = one(corrupted, "select * from mean_corruption_error where sparsity = 0.5")
    assert (m["n_corruptions"], m["n_extra"], m["complete"]) == (1, 1, False)
    # the mean over benchmark corruptions present is gaussian_noise's alone
    assert m["mean_ce_vs_dense_present"] == pytest.approx(1.25 / 0.75)


ALEXNET = {c: e for c, e in PUBLISHED_ALEXNET.items() if c != "clean"}  # test_constants
ALEXNET_CLEAN = PUBLISHED_ALEXNET["clean"]


@pytest.fixture
def imagenet_c(con):
    """Released ImageNet-C of 'val' (ImageNet-1k), all 15 corruptions at severities 1-5.
    Dense d1: clean error .25, every corrupted set .5. Pruned v1: clean .5; corrupted .5 at
    severities 1-2 and .75 at 3-5 (4 images each)."""
    add_dataset(con, "val", label_space="imagenet1k")
    add_model(con, "d1", "dense", 0.0)
    add_model(con, "v1", "magnitude", 0.9)
    add_predictions(con, "d1", "val", accuracy_rows(3))
    add_predictions(con, "v1", "val", accuracy_rows(2))
    for c in ALEXNET:
        for s in range(1, 6):
            name = f"val-{c}-{s}"
            add_dataset(con, name, "corrupted", "val", c, s, label_space="imagenet1k")
            add_predictions(con, "d1", name, accuracy_rows(2))
            add_predictions(con, "v1", name, accuracy_rows(2 if s <= 2 else 1))
    return con


def test_mce_on_released_imagenet_c(imagenet_c):
    v_sum = 2 * 0.5 + 3 * 0.75  # sum_s E(v1, s, c), the same for every corruption
    ce = [v_sum / (5 * a) for a in ALEXNET.values()]
    rel = [(v_sum - 5 * 0.5) / (5 * a - 5 * ALEXNET_CLEAN) for a in ALEXNET.values()]
    fog = "select * from corruption_error where sparsity = 0.9 and corruption = 'fog'"
    row = one(imagenet_c, fog)
    assert row["complete"] is True and row["ce_vs_alexnet"] == pytest.approx(ce[9])
    assert row["relative_ce_vs_alexnet"] == pytest.approx(rel[9])
    m = one(imagenet_c, "select * from mean_corruption_error where sparsity = 0.9")
    assert (m["origin"], m["n_corruptions"], m["n_complete"], m["complete"]) == (
        "released",
        15,
        15,
        True,
    )
    assert m["mce_vs_dense"] == pytest.approx(v_sum / (5 * 0.5))  # 3.25 / 2.5
    # (3.25 - 5 x .5) / (2.5 - 5 x .25)
    assert m["relative_mce_vs_dense"] == pytest.approx(0.75 / 1.25)
    assert m["mce_vs_alexnet"] == pytest.approx(sum(ce) / 15)
    assert m["relative_mce_vs_alexnet"] == pytest.approx(sum(rel) / 15)
    d = one(imagenet_c, "select * from mean_corruption_error where sparsity = 0")
    assert d["mce_vs_dense"] == pytest.approx(1.0)
    assert d["mce_vs_alexnet"] == pytest.approx(sum(0.5 / a for a in ALEXNET.values()) / 15)
    s = one(imagenet_c, "select * from population_summary where sparsity = 0.9 and dataset = 'val'")
    assert s["released_n_corruptions"] == 15 and s["generated_n_corruptions"] is None
    assert s["released_mce_vs_dense"] == pytest.approx(1.3)
    assert s["released_mce_vs_alexnet"] == pytest.approx(sum(ce) / 15)


def test_no_mce_without_all_15_at_all_5_severities(imagenet_c):
    store.delete_predictions(imagenet_c, "dataset = 'val-fog-5'")
    fog = one(
        imagenet_c, "select * from corruption_error where sparsity = 0.9 and corruption = 'fog'"
    )
    assert fog["complete"] is False and fog["ce_vs_alexnet"] is None
    m = one(imagenet_c, "select * from mean_corruption_error where sparsity = 0.9")
    assert (m["n_corruptions"], m["n_complete"], m["complete"]) == (15, 14, False)
    assert m["mce_vs_dense"] is None and m["mce_vs_alexnet"] is None
    assert m["relative_mce_vs_dense"] is None and m["relative_mce_vs_alexnet"] is None
    # fog at severities 1-4: (.5 + .5 + .75 + .75) / (4 x .5); the other 14: 1.3
    assert m["mean_ce_vs_dense_present"] == pytest.approx((14 * 1.3 + 2.5 / 2.0) / 15)


def test_generated_corruptions_get_no_alexnet_normalisation(imagenet_c):
    imagenet_c.execute("update datasets set origin = 'generated' where kind = 'corrupted'")
    m = one(imagenet_c, "select * from mean_corruption_error where sparsity = 0.9")
    assert m["origin"] == "generated" and m["complete"] is True
    assert m["mce_vs_dense"] == pytest.approx(1.3)
    assert m["mce_vs_alexnet"] is None and m["relative_mce_vs_alexnet"] is None
    ce = imagenet_c.execute(
        "select count(*) from corruption_error where ce_vs_alexnet is not null"
    ).fetchall()
    assert ce == [(0,)]


def test_population_summary(con):
    dense_and_variant(con)
    add_dataset(con, "d")
    con.execute(
        "insert into class_tstats (dataset, experiment, method, level, sparsity, class_id,"
        " baseline_n, variant_n, significant) values ('d', 'exp', 'magnitude', 0.9, 0.9, 0, 4, 2,"
        " true), ('d', 'exp', 'magnitude', 0.9, 0.9, 3, 4, 2, false)"
    )
    v = one(con, "select * from population_summary where sparsity = 0.9")
    assert (v["n_models"], v["n_significant_classes"], v["n_classes_tested"]) == (2, 1, 2)
    assert (v["n_pie"], v["pie_fraction"], v["n_pie_tie_decided"]) == (1, 0.5, 1)
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
