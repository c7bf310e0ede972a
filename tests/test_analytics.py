"""Materialised analysis (fresh, stale, never silently read), the tie rules, PIEs per class, the
CIE ranking, PIE accuracy on corrupted variants, and `pie sql` / `pie tables` on a work root.
Expectations counted by hand."""

from __future__ import annotations

import pytest
from conftest import add_dataset, add_model, add_predictions, assert_one_line_error, pie

from analytics import analyze, summary
from analytics.config import AnalyzeConfig
from pie import materialised, provenance, relations, store
from pie.errors import PieError


def votes(con, dataset: str = "d") -> None:
    """Dense d1..d3 and pruned v1..v3 (magnitude 0.5) on keys a, b, c, e (label 0, 0, 1, 1).
    a: dense 0,0,0 / pruned 2,2,0: a PIE.  b: dense 0,0,1 / pruned 0,0,0: not.
    c: dense 1,1,1 / pruned 2,3,1: pruned tied three ways, mode 3 (largest): a PIE by a tie.
    e: dense 1,1,0 / pruned 1,1,1: not."""
    dense = {"a": (0, 0, 0), "b": (0, 0, 1), "c": (1, 1, 1), "e": (1, 1, 0)}
    pruned = {"a": (2, 2, 0), "b": (0, 0, 0), "c": (2, 3, 1), "e": (1, 1, 1)}
    label = {"a": 0, "b": 0, "c": 1, "e": 1}
    for prefix, method, sparsity, table in (
        ("d", "dense", 0.0, dense),
        ("v", "magnitude", 0.5, pruned),
    ):
        for i in range(3):
            model = f"{prefix}{i}"
            if not store.rows(con, "select 1 from models where model_id = ?", [model]):
                add_model(con, model, method, sparsity)
            add_predictions(con, model, dataset, [(k, label[k], p[i]) for k, p in table.items()])


@pytest.fixture
def analysed(root):
    con = store.connect(root)
    add_dataset(con, "d")
    votes(con)
    con.close()
    analyze.main(root, AnalyzeConfig(experiment="exp", dataset="d"))
    return root


def pies(con) -> dict[str, bool | None]:
    return dict(store.rows(con, "select key, is_pie from pie"))


def test_analyze_materialises_and_readers_use_the_tables(analysed):
    con = store.connect(analysed, read_only=True)
    assert materialised.is_fresh(con)
    assert materialised.attach(con)
    plan = "\n".join(r[1] for r in store.rows(con, "explain select * from pie"))
    assert "predictions" not in plan and "pie" in plan  # a scan of materialised.pie_unranked
    assert pies(con) == {"a": True, "b": False, "c": True, "e": False}
    con.close()
    assert analyze.main(analysed, AnalyzeConfig(experiment="exp", dataset="d")) is False


def duplicated(con, table: str, keys: tuple[str, ...]) -> int:
    """Rows of `table` that share their `keys` with another row."""
    return store.rows(
        con,
        f"select coalesce(sum(n), 0) from (select count(*) as n from {table}"
        f" group by {', '.join(keys)} having count(*) > 1)",
    )[0][0]


def stored_relations() -> list[tuple[str, tuple[str, ...]]]:
    """(table, keys) of every table with keys and every materialised relation."""
    found = [(r.name, r.keys) for r in relations.relations().values() if r.is_table and r.keys]
    found += [(f"materialised.{n}", relations.relation(n).keys) for n in materialised.RELATIONS]
    return found


def test_every_stored_relation_is_unique_on_the_keys_its_header_states(analysed):
    """The `-- keys:` line of each table and materialised view is its grain (and the order a
    materialised one is stored in): no two rows share them."""
    con = store.connect(analysed, read_only=True)
    for table, keys in stored_relations():
        assert duplicated(con, table, keys) == 0, table
        if table.startswith("materialised."):
            assert store.rows(con, f"select count(*) from {table}")[0][0] > 0, table
    con.close()


def test_the_key_check_catches_a_duplicated_row(analysed):
    """model_class_counts has no primary key to stop a second row of one (model, dataset,
    class): the check above finds it."""
    con = store.connect(analysed)
    keys = relations.relation("model_class_counts").keys
    assert duplicated(con, "model_class_counts", keys) == 0
    con.execute("insert into model_class_counts select * from model_class_counts limit 1")
    assert duplicated(con, "model_class_counts", keys) == 2
    con.close()


def test_the_analysis_run_records_which_pie_ran_it(analysed):
    con = store.connect(analysed, read_only=True)
    found = store.rows(con, "select pie_version, pie_commit from runs where stage = 'analyze'")
    assert found == [(provenance.version(), provenance.commit())]
    con.close()


def test_analyze_beside_another_writer_stops_at_once_naming_it(analysed):
    cfg = AnalyzeConfig(experiment="exp", dataset="d")
    busy = pytest.raises(PieError, match=r"is being written by pid \d+: pie infer")
    with store.writer_lock(analysed, "pie infer"), busy:
        analyze.main(analysed, cfg, force=True)
    assert analyze.main(analysed, cfg, force=True)  # the lock went with its holder


def test_new_predictions_make_it_stale_never_silently_read(analysed):
    """A new dataset's predictions change the fingerprint: summary refuses, the views compute
    from the predictions (the new dataset's PIEs are there), `pie analyze` brings it back."""
    con = store.connect(analysed)
    add_dataset(con, "d2")
    votes(con, "d2")
    con.close()
    con = store.connect(analysed, read_only=True)
    assert not materialised.attach(con)
    assert store.rows(con, "select count(*) from pie where dataset = 'd2' and is_pie") == [(2,)]
    con.close()
    with pytest.raises(PieError, match="run `pie analyze`"):
        summary.main(analysed, AnalyzeConfig(experiment="exp", dataset="d"))
    assert analyze.main(analysed, AnalyzeConfig(experiment="exp", dataset="d")) is True
    con = store.connect(analysed, read_only=True)
    assert materialised.attach(con)
    assert store.rows(con, "select count(*) from pie where dataset = 'd2' and is_pie") == [(2,)]
    con.close()


def test_tie_rules(analysed):
    """c is decided by a tie: smallest gives the pruned mode 1 (= dense: not a PIE), exclude
    leaves c out of both sets; changing the rule alone makes the tables stale."""
    for rule, expected, n in (("smallest", False, 4), ("exclude", None, 3)):
        analyze.main(analysed, AnalyzeConfig(experiment="exp", dataset="d", mode_tie_break=rule))
        con = store.connect(analysed, read_only=True)
        assert materialised.attach(con)
        assert pies(con)["c"] is expected
        (row,) = store.rows(
            con, "select n_pie, pie_fraction from population_summary where sparsity = 0.5"
        )
        assert row == (1, pytest.approx(1 / n))  # a only, over the decided images
        con.close()


def test_pie_classes_and_cie_rank(analysed):
    con = store.connect(analysed, read_only=True)
    materialised.attach(con)
    classes = store.rows(
        con, "select class_id, n_images, n_pie, pie_fraction from pie_classes order by class_id"
    )
    assert classes == [(0, 2, 1, 0.5), (1, 2, 1, 0.5)]
    # L1 distances: a: dense {0:1} vs {2:2/3, 0:1/3}: 4/3; b: {0:2/3,1:1/3} vs {0:1}: 2/3;
    # c: {1:1} vs {2,3,1 a third each}: 4/3; e: {1:2/3,0:1/3} vs {1:1}: 2/3. Ties by key.
    ranks = store.rows(con, "select key, l1_distance, cie_rank from pie order by cie_rank")
    assert [(k, r) for k, _, r in ranks] == [("a", 1), ("c", 2), ("b", 3), ("e", 4)]
    assert ranks[0][1] == pytest.approx(4 / 3) and ranks[2][1] == pytest.approx(2 / 3)
    con.close()


def test_pie_accuracy_follows_keys_into_corrupted_variants(root):
    """PIEs of 'd' are a and c. On the variant d-gn-1 the dense models get a right 3 times of
    3 and c 0 of 3 (all predict 2); the rest (b, e) 6 of 6."""
    con = store.connect(root)
    add_dataset(con, "d")
    add_dataset(con, "d-gn-1", "corrupted", "d", "gaussian_noise", 1)
    votes(con)
    for i in range(3):
        preds = [("a", 0, 0), ("b", 0, 0), ("c", 1, 2), ("e", 1, 1)]
        add_predictions(con, f"d{i}", "d-gn-1", preds)
        add_predictions(con, f"v{i}", "d-gn-1", [(k, lab, 5) for k, lab, _ in preds])
    con.close()
    analyze.main(root, AnalyzeConfig(experiment="exp", dataset="d"))
    con = store.connect(root, read_only=True)
    materialised.attach(con)
    rows = store.rows(
        con,
        "select is_pie, pie_dataset, corruption, severity, n_images, baseline_top1, variant_top1"
        " from pie_accuracy where dataset = 'd-gn-1' order by is_pie",
    )
    assert rows == [
        (False, "d", "gaussian_noise", 1, 2, 1.0, 0.0),
        (True, "d", "gaussian_noise", 1, 2, 0.5, 0.0),
    ]
    con.close()


def test_pie_sql_names_existing_tables_and_stops_at_the_timeout(analysed):
    root = ["--root", str(analysed.path)]
    result = pie("sql", "select * from pies", *root, ok=False)
    assert_one_line_error(result, "pies does not exist; tables and views:")
    assert "class_tstats" in result.stderr and "pie_classes" in result.stderr
    slow = "select count(*) from range(1000000000000) a"
    assert_one_line_error(
        pie("sql", slow, "--timeout", "0.5", *root, ok=False), "query stopped after 0.5 s"
    )
    out = pie("sql", "select count(*) as n from pie where is_pie", *root).stdout
    assert out.split() == ["n", "-", "2"]


def test_pie_tables_lists_grain_and_rows(analysed):
    out = pie("tables", "--root", str(analysed.path)).stdout
    names = [line.split()[0] for line in out.splitlines()[2:]]
    assert len(names) == len(set(names))  # a materialised view is listed once
    lines = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert lines["pie"].split()[1:3] == ["view", "4"]
    assert "one row per (dataset, variant population, image)" in lines["pie"]
    assert lines["predictions"].split()[1:3] == ["table", "24"]
    assert "one row per (model, dataset, image)" in lines["predictions"]
