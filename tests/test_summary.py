"""`pie summary` on a hand-made work root: honest corruption-error labels, ties counted."""

from __future__ import annotations

from conftest import add_dataset, add_model, add_predictions

from analytics import analyze, summary
from analytics.config import AnalyzeConfig
from pie import store


def rows(n_correct: int) -> list[tuple[str, int, int]]:
    """Keys k0..k3, label 0: the first n_correct predicted 0 (right), the rest 1 or 2."""
    return [(f"k{i}", 0, 0 if i < n_correct else 1 + i % 2) for i in range(4)]


def table_rows(out: str) -> list[list[str]]:
    """The cells of every table row printed (rich draws cells between │)."""
    return [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if "│" in line]


def test_summary_labels_a_partial_corruption_set_and_counts_tied_pies(root, capsys):
    """Dense d1, d2 and pruned v1, v2 on clean 'c' and a generated gaussian_noise at severity 1.
    On 'c' the pruned models predict k2 as 1 and 2 (a tie) and k3 as 1 and 1: the dense
    population says 0 for both, so both are PIEs, one decided by a tie."""
    con = store.connect(root)
    add_dataset(con, "c")
    add_dataset(con, "c-gn-1", "corrupted", "c", "gaussian_noise", 1, origin="generated")
    for m in ("d1", "d2"):
        add_model(con, m, "dense", 0.0)
        add_predictions(con, m, "c", [(f"k{i}", 0, 0) for i in range(4)])
        add_predictions(con, m, "c-gn-1", rows(2))
    for m, k2 in (("v1", 1), ("v2", 2)):
        add_model(con, m, "magnitude", 0.5)
        add_predictions(con, m, "c", [("k0", 0, 0), ("k1", 0, 0), ("k2", 0, k2), ("k3", 0, 1)])
        add_predictions(con, m, "c-gn-1", rows(1))
    con.close()

    cfg = AnalyzeConfig(experiment="exp", dataset="c")
    analyze.main(root, cfg)
    df = summary.main(root, cfg)
    out = capsys.readouterr().out
    v = next(r for r in df if r["sparsity"] == 0.5)
    assert (v["n_pie"], v["n_pie_tie_decided"]) == (2, 1)
    # errors .75 vs .5 on the one generated corruption present: not an mCE
    assert v["generated_mce_vs_dense"] is None
    assert abs(v["generated_mean_ce_vs_dense_present"] - 1.5) < 1e-12
    cells = [row for row in table_rows(out) if row[1] == "magnitude"]
    assert cells[0][5:7] == ["2 (50.00%)", "1"]  # PIEs, of which decided by a tie
    # sparsity, method, origin, corruptions present, mCE vs dense, mean CE over those present
    assert cells[1] == ["0.5", "magnitude", "generated", "1", "-", "1.500"]
    assert "is not an mCE" in out and "released" not in out
