"""robustness_tstats and `pie robustness` on a hand-made work root, against scipy."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import add_dataset, add_model, add_predictions
from scipy import stats

from analytics import analyze, robustness
from analytics.config import AnalyzeConfig
from pie import store
from pie.errors import PieError

# correct answers out of 4 images, per model (dense d1..d3, pruned v1..v3 at 0.5)
CORRECT = {
    "c": ([4, 4, 3], [3, 2, 3]),
    "c-gn-1": ([3, 3, 2], [2, 1, 1]),
    "c-gn-2": ([2, 3, 2], [1, 1, 0]),
    "a": ([2, 2, 1], [1, 2, 1]),
}


@pytest.fixture
def analysed(root):
    con = store.connect(root)
    add_dataset(con, "c")
    for s in (1, 2):
        add_dataset(con, f"c-gn-{s}", "corrupted", "c", "gaussian_noise", s, origin="generated")
    add_dataset(con, "a", "natural_adversarial")
    for i in range(3):
        add_model(con, f"d{i}", "dense", 0.0)
        add_model(con, f"v{i}", "magnitude", 0.5)
        for name, (dense, pruned) in CORRECT.items():
            for model, n in ((f"d{i}", dense[i]), (f"v{i}", pruned[i])):
                rows = [(f"k{j}", 0, 0 if j < n else 1) for j in range(4)]
                add_predictions(con, model, name, rows)
    con.close()
    analyze.main(root, AnalyzeConfig(experiment="exp", dataset="c"))
    return root


def test_robustness_tstats_match_scipy_welch_and_bh(analysed):
    con = store.connect(analysed, read_only=True)
    got = {
        r[0]: r[1:]
        for r in store.rows(
            con,
            "select dataset, kind, corruption, severity, baseline_mean_top1, variant_std_top1,"
            " delta_top1, t_stat, p_value, q_value from robustness_tstats",
        )
    }
    con.close()
    assert sorted(got) == sorted(CORRECT)
    p = {}
    for name, (dense, pruned) in CORRECT.items():
        b, v = np.array(dense) / 4, np.array(pruned) / 4
        welch = stats.ttest_ind(b, v, equal_var=False)
        row = got[name]
        assert row[3] == pytest.approx(b.mean())
        assert row[4] == pytest.approx(v.std(ddof=1))
        assert row[5] == pytest.approx(v.mean() - b.mean())
        assert row[6] == pytest.approx(welch.statistic)  # > 0: pruned less accurate
        assert row[7] == pytest.approx(welch.pvalue)
        p[name] = welch.pvalue
    q = stats.false_discovery_control(list(p.values()))
    for name, expected in zip(p, q, strict=True):
        assert got[name][8] == pytest.approx(expected)
    assert got["c-gn-2"][:3] == ("corrupted", "gaussian_noise", 2)


def test_pie_robustness_prints_corruption_by_severity(analysed, capsys):
    rows = robustness.main(analysed, "exp", "c")
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "gaussian_noise" in x)
    cells = [c.strip() for c in line.split("│")[1:-1]]
    sig = {r["severity"]: r["significant"] for r in rows if r["kind"] == "corrupted"}
    # s1: pruned 4/12 = 33.3 %, dense 8/12: -33.3 points; s2: 2/12 vs 7/12
    assert cells[1] == "33.3 (-33.3" + ("*" if sig[1] else "") + ")"
    assert cells[2] == "16.7 (-41.7" + ("*" if sig[2] else "") + ")"
    assert cells[3] == "25.0 / 62.5"  # means over severities, pruned / dense
    assert "natural_adversarial" in out


def test_pie_robustness_refuses_a_sparsity_without_rows(analysed):
    assert len(robustness.main(analysed, "exp", "c", 0.5)) == len(CORRECT)
    with pytest.raises(PieError, match=r"no robustness rows for exp on c at sparsity 0\.9"):
        robustness.main(analysed, "exp", "c", 0.9)
