"""Differential test of the whole analysis: random small studies, stored through
store.insert_predictions, analysed by `pie analyze` (analytics.analyze.main) and exported by
`pie export`, checked against a plain-Python + scipy re-implementation written here from the
definitions (per-class impact: Welch t-tests of recall normalised by the population's mean
top-1; PIE: the modal labels differ; the CIE L1 distance; corruption error).

Each study (one per seed): a dense population and pruned ones at 0.5 and 0.9, of 3-7 models
each; 12 classes; a clean dataset and corrupted variants of it (one corruption at all five
severities, one at two, one of the extra four). Every prediction has its own p_label, so an
aggregate taken over the wrong models shows. Built in: ties in the dense mode only and in the
pruned mode only (decided differently by the two tie rules), a class every model gets right
(zero variance in both populations: no test), a class the dense models all get right (zero
variance in one), a class the 0.9 models never predict, one model per population without the
images of one class, and a dataset where a whole population lacks one class.
"""

from __future__ import annotations

import functools
import math
import random
import statistics
import warnings
from collections import Counter
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import add_dataset
from scipy import stats

from analytics import analyze, export
from analytics.config import AnalyzeConfig, ExportConfig
from pie import materialised as materialise
from pie import store
from pie.catalog import DatasetSpec, record_dataset
from pie.shards import Sample, read_shards, write_shards

N_CLASSES = 12
POPULATIONS = (("dense", 0.0), ("magnitude", 0.5), ("magnitude", 0.9))
VARIANTS = POPULATIONS[1:]
BENCHMARK = {  # the 15 ImageNet-C benchmark corruptions (Hendrycks & Dietterich 2019)
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
    "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
    "elastic_transform", "pixelate", "jpeg_compression",
}  # fmt: skip
# name -> (corruption, severity, origin); the clean parent is "c"
CORRUPTED = {
    **{f"c-gaussian_noise-{s}": ("gaussian_noise", s, "generated") for s in range(1, 6)},
    "c-contrast-1": ("contrast", 1, "released"),
    "c-contrast-3": ("contrast", 3, "released"),
    "c-speckle_noise-2": ("speckle_noise", 2, "generated"),
}
EXPORTED = ("c", "c-gaussian_noise-3")  # the PIEs of c, the non-PIEs of c in a variant
# (analyze.mode_tie_break, analyze.significance_on, analyze.alpha): every tie rule once
SETTINGS = (("largest", "p", 0.05), ("smallest", "q", 0.25), ("exclude", "p", 0.1))
ZERO_VARIANCE = 0  # every model right on every image of class 0 of "c"
DENSE_ALWAYS_RIGHT = 1  # every dense model right on class 1 of "c"
NEVER_PREDICTED = 11  # the 0.9 models never predict class 11
MISSING = {POPULATIONS[0]: 7, POPULATIONS[1]: 8, POPULATIONS[2]: 10}  # one model lacks a class
POPULATION_LACKS = ("c-contrast-1", POPULATIONS[1], 10)  # a whole population lacks a class


def split(n: int, low: int, middle: int, high: int) -> list[int]:
    """n votes tied between `low` and `high` (and `middle` too when n = 3)."""
    return sorted([low, high] * (n // 2) + ([middle] if n % 2 else []))


def designed(key: str, label: int, sparsity: float, index: int, n: int) -> int | None:
    """The prediction of model `index` of a population of n on an image of "c" when the study
    fixes it: tied modes, one side at a time (under 'largest' tie-dense is a PIE at 0.5 and
    not at 0.9, under 'smallest' the other way round; the same for tie-variant), and the
    classes every model (every dense model) gets right. None: drawn at random."""
    if key == "tie-dense":
        return {0.0: split(n, 2, 5, 9)[index], 0.5: 2, 0.9: 9}[sparsity]
    if key == "tie-variant":
        return {0.0: 4, 0.5: split(n, 4, 6, 8)[index], 0.9: split(n, 1, 2, 4)[index]}[sparsity]
    if label == ZERO_VARIANCE or (label == DENSE_ALWAYS_RIGHT and sparsity == 0):
        return label
    return None


def generate(seed: int) -> dict:
    """A random study: datasets, labels, models, and per (model, dataset) key -> (pred, p)."""
    rng = random.Random(seed)
    models, skill = {}, {}
    for method, sparsity in POPULATIONS:
        for i in range(rng.randint(3, 7)):
            model_id = f"{method}-{sparsity:g}-{i}"
            models[model_id] = (method, sparsity)
            skill[model_id] = {0.0: 0.75, 0.5: 0.65, 0.9: 0.5}[sparsity] + rng.uniform(-0.1, 0.1)
    labels = {f"k{j:02d}": j % N_CLASSES for j in range(4 * N_CLASSES)}
    labels |= {"tie-dense": 5, "tie-variant": 6}
    datasets = {"c": ("clean", None, None, None, "released")}
    datasets |= {name: ("corrupted", "c", *rest) for name, rest in CORRUPTED.items()}
    preds = {}
    for dataset, (_, _, _, severity, _) in datasets.items():
        harm = 0.06 * (severity or 0)
        wrong = {k: rng.sample(sorted(set(range(N_CLASSES)) - {y}), 2) for k, y in labels.items()}
        for model_id, population in models.items():
            members = [m for m, p in models.items() if p == population]
            index = members.index(model_id)
            rows = {}
            for key, label in labels.items():
                if dataset == "c" and label == MISSING[population] and index == 0:
                    continue
                if (dataset, population, label) == POPULATION_LACKS:
                    continue
                pred = None
                if dataset == "c":
                    pred = designed(key, label, population[1], index, len(members))
                if pred is None:
                    right = rng.random() < skill[model_id] - harm
                    pred = label if right else rng.choice(wrong[key])
                if population[1] == 0.9 and pred == NEVER_PREDICTED:
                    pred = 10
                p_label = float(np.float32(rng.uniform(0.01, 0.99)))  # as stored: float32
                rows[key] = (pred, p_label)
            preds[model_id, dataset] = rows
    return {"models": models, "labels": labels, "datasets": datasets, "preds": preds}


def store_study(root, study: dict) -> None:
    """Datasets registered (those exported packed too, with fake image bytes), classes named,
    models registered, and every prediction stored in one store.insert_predictions call."""
    con = store.connect(root)
    con.execute("insert into label_spaces values ('ls', ?, '')", [N_CLASSES])
    for c in range(N_CLASSES):
        con.execute("insert into classes values ('ls', ?, null, ?)", [c, f"class {c}"])
    for name, (kind, parent, corruption, severity, origin) in study["datasets"].items():
        if name not in EXPORTED:  # rows only: nothing reads its shards
            add_dataset(con, name, kind, parent, corruption, severity, "ls", origin)
            continue
        samples = [
            Sample(k, y, f"{name} {k}".encode(), "png", {"source": name})
            for k, y in study["labels"].items()
        ]
        directory = root.shards(name)
        spec = DatasetSpec(
            name, "ls", kind, "eval", "test", parent, corruption, severity, origin=origin
        )
        record_dataset(con, spec, directory, write_shards(samples, directory, name))
    for model_id, (method, sparsity) in study["models"].items():
        con.execute(
            "insert into models (model_id, experiment, arch, label_space, method,"
            " target_sparsity, achieved_sparsity, seed, train_dataset, path, sha256, config)"
            " values (?, 'exp', 'small_cnn', 'ls', ?, ?, ?, 0, 'train', '', '', '{}')",
            [model_id, method, sparsity, sparsity],
        )
    columns = {c: [] for c in store.PREDICTION_COLUMNS}
    for (model_id, dataset), rows in study["preds"].items():
        for key, (pred, p_label) in rows.items():
            label = study["labels"][key]
            for column, value in zip(
                store.PREDICTION_COLUMNS,
                (model_id, dataset, key, label, pred, [pred, label], p_label, 0.99),
                strict=True,
            ):
                columns[column].append(value)
    frame = pa.table(
        {
            **columns,
            "label": pa.array(columns["label"], pa.int32()),
            "pred": pa.array(columns["pred"], pa.int32()),
            "top5": pa.array(columns["top5"], pa.list_(pa.int32())),
            "p_label": pa.array(columns["p_label"], pa.float32()),
            "p_pred": pa.array(columns["p_pred"], pa.float32()),
        }
    )
    con.register("_study", frame)
    with store.transaction(con):
        store.insert_predictions(con, "select * from _study")
    con.unregister("_study")
    con.close()


# ---- the re-implementation, from the definitions -------------------------------------------


@functools.cache  # the same samples under every analysis setting: scipy once
def welch(baseline: tuple[float, ...], variant: tuple[float, ...], constant: bool) -> dict:
    """ttest_ind(baseline, variant, equal_var=False) and Hedges' g; `constant`: both samples
    are constant (no test: all null)."""
    nb, nv = len(baseline), len(variant)
    if constant:
        return dict.fromkeys(("t_stat", "welch_df", "p_value", "hedges_g"))
    with warnings.catch_warnings():  # one population constant: exact, but scipy warns
        warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        result = stats.ttest_ind(baseline, variant, equal_var=False)
    vb, vv = statistics.variance(baseline), statistics.variance(variant)
    pooled = (((nb - 1) * vb + (nv - 1) * vv) / (nb + nv - 2)) ** 0.5
    correction = 1 - 3 / (4 * (nb + nv) - 9)
    return {
        "t_stat": float(result.statistic),
        "welch_df": float(result.df),
        "p_value": float(result.pvalue),
        "hedges_g": (statistics.fmean(baseline) - statistics.fmean(variant)) / pooled * correction,
    }


class Reference:
    """Every relation checked, computed in plain Python (+ scipy for the t distribution)."""

    def __init__(self, study: dict, rule: str, on: str, alpha: float) -> None:
        self.s, self.rule, self.on, self.alpha = study, rule, on, alpha
        self.members = {
            population: sorted(m for m, p in study["models"].items() if p == population)
            for population in POPULATIONS
        }
        self.modes = {}

    # per model
    def predicted(self, model_id: str, dataset: str) -> dict[str, tuple[int, float]]:
        return self.s["preds"].get((model_id, dataset), {})

    def top1(self, model_id: str, dataset: str) -> float:
        rows = self.predicted(model_id, dataset)
        labels = self.s["labels"]
        return sum(pred == labels[k] for k, (pred, _) in rows.items()) / len(rows)

    def recall(self, model_id: str, dataset: str, class_id: int) -> float | None:
        rows = self.predicted(model_id, dataset)
        mine = [pred for k, (pred, _) in rows.items() if self.s["labels"][k] == class_id]
        return sum(p == class_id for p in mine) / len(mine) if mine else None

    def tops(self, dataset: str, population) -> list[float]:
        return [
            self.top1(m, dataset) for m in self.members[population] if self.predicted(m, dataset)
        ]

    # modes and PIEs
    def modal(self, dataset: str, population, key: str) -> dict | None:
        """The population's modal label of the image (None: no model of it predicted the
        image), memoised."""
        found = self.modes.get((dataset, population, key), False)
        if found is False:
            found = self.modes[dataset, population, key] = self.count_modal(
                dataset, population, key
            )
        return found

    def count_modal(self, dataset: str, population, key: str) -> dict | None:
        voters = [
            self.predicted(m, dataset)[key]
            for m in self.members[population]
            if key in self.predicted(m, dataset)
        ]
        if not voters:
            return None
        label = self.s["labels"][key]
        votes = Counter(pred for pred, _ in voters)
        top = max(votes.values())
        leaders = [c for c, n in votes.items() if n == top]
        return {
            "label": label,
            "mode": min(leaders) if self.rule == "smallest" else max(leaders),
            "mode_votes": top,
            "n_models": len(voters),
            "agreement": top / len(voters),
            "tied": len(leaders) > 1,
            "fraction_correct": votes[label] / len(voters),
            "mean_p_label": sum(p for _, p in voters) / len(voters),
            "votes": votes,
        }

    def modal_labels(self) -> dict:
        out = {}
        for dataset in self.s["datasets"]:
            for population in POPULATIONS:
                for key in self.s["labels"]:
                    m = self.modal(dataset, population, key)
                    if m is not None:
                        out[dataset, *population, key] = {
                            k: v for k, v in m.items() if k != "votes"
                        }
        return out

    def pie(self) -> dict:
        out = {}
        for dataset in self.s["datasets"]:
            for population in VARIANTS:
                rows = {}
                for key in self.s["labels"]:
                    b = self.modal(dataset, POPULATIONS[0], key)
                    v = self.modal(dataset, population, key)
                    if b is None or v is None:
                        continue
                    tied = b["tied"] or v["tied"]
                    bn, vn = b["n_models"], v["n_models"]
                    l1 = sum(
                        abs(Fraction(b["votes"][c], bn) - Fraction(v["votes"][c], vn))
                        for c in set(b["votes"]) | set(v["votes"])
                    )
                    rows[key] = {
                        "label": b["label"],
                        "baseline_mode": b["mode"],
                        "variant_mode": v["mode"],
                        "is_pie": None
                        if self.rule == "exclude" and tied
                        else b["mode"] != v["mode"],
                        "baseline_n": bn,
                        "variant_n": vn,
                        "baseline_votes": b["mode_votes"],
                        "variant_votes": v["mode_votes"],
                        "baseline_agreement": b["agreement"],
                        "variant_agreement": v["agreement"],
                        "baseline_mean_p_label": b["mean_p_label"],
                        "variant_mean_p_label": v["mean_p_label"],
                        "baseline_correct": b["mode"] == b["label"],
                        "variant_correct": v["mode"] == v["label"],
                        "l1_distance": l1,
                        "tie_decided": tied,
                    }
                ranked = sorted(rows, key=lambda k: (-rows[k]["l1_distance"], k))
                for rank, key in enumerate(ranked, start=1):
                    rows[key]["cie_rank"] = rank
                    rows[key]["l1_distance"] = float(rows[key]["l1_distance"])
                    out[dataset, *population, key] = rows[key]
        return out

    def pie_accuracy(self, pie: dict) -> dict:
        out = {}
        for population in VARIANTS:
            membership = {
                key: row["is_pie"]
                for (dataset, *p, key), row in pie.items()
                if dataset == "c" and tuple(p) == population and row["is_pie"] is not None
            }
            for dataset, (_, _, corruption, severity, _) in self.s["datasets"].items():
                sums = {}
                for key, is_pie in membership.items():
                    b = self.modal(dataset, POPULATIONS[0], key)
                    v = self.modal(dataset, population, key)
                    if b is None or v is None:
                        continue
                    acc = sums.setdefault(is_pie, [0, 0, 0, 0, 0])
                    acc[0] += 1
                    acc[1] += b["votes"][b["label"]]
                    acc[2] += b["n_models"]
                    acc[3] += v["votes"][v["label"]]
                    acc[4] += v["n_models"]
                for is_pie, (n, bc, bn, vc, vn) in sums.items():
                    out[dataset, *population, is_pie] = {
                        "pie_dataset": "c",
                        "corruption": corruption,
                        "severity": severity,
                        "n_images": n,
                        "baseline_top1": bc / bn,
                        "variant_top1": vc / vn,
                    }
        return out

    def pie_classes(self, pie: dict) -> dict:
        out = {}
        groups = {}
        for (dataset, method, sparsity, _), row in pie.items():
            groups.setdefault((dataset, method, sparsity, row["label"]), []).append(row)
        for group, rows in groups.items():
            decided = [r for r in rows if r["is_pie"] is not None]
            pies = [r for r in rows if r["is_pie"]]
            out[group] = {
                "n_images": len(rows),
                "n_pie": len(pies),
                "n_excluded": len(rows) - len(decided),
                "pie_fraction": len(pies) / len(decided) if decided else None,
                "n_pie_dense_mode_correct": sum(r["baseline_correct"] for r in pies),
                "n_pie_variant_mode_correct": sum(r["variant_correct"] for r in pies),
                "mean_l1_distance": statistics.fmean(r["l1_distance"] for r in rows),
            }
        return out

    # Welch t-tests
    @staticmethod
    def welch(baseline: list[float], variant: list[float], constant: bool) -> dict:
        return dict(welch(tuple(baseline), tuple(variant), constant))

    def add_q(self, rows: dict, group_of) -> None:
        """BH q-values within each group of rows (scipy), and `significant`."""
        groups = {}
        for key, row in rows.items():
            if row["p_value"] is not None:
                groups.setdefault(group_of(key), []).append(key)
        for row in rows.values():
            row["q_value"] = None
        for keys in groups.values():
            q = stats.false_discovery_control([rows[k]["p_value"] for k in keys])
            for k, value in zip(keys, q, strict=True):
                rows[k]["q_value"] = float(value)
        for row in rows.values():
            tested = row["q_value"] if self.on == "q" else row["p_value"]
            row["significant"] = tested is not None and tested <= self.alpha
            row["significance_on"], row["alpha"] = self.on, self.alpha

    def class_tstats(self) -> dict:
        out = {}
        for dataset in self.s["datasets"]:
            dense = POPULATIONS[0]
            for population in VARIANTS:
                for c in range(N_CLASSES):
                    samples = []
                    for p in (dense, population):
                        mean_top1 = statistics.fmean(self.tops(dataset, p))
                        recalls = [self.recall(m, dataset, c) for m in self.members[p]]
                        recalls = [r for r in recalls if r is not None]
                        samples.append((recalls, [r - mean_top1 for r in recalls]))
                    (rb, b), (rv, v) = samples
                    if not rb or not rv:
                        continue  # a class only one population saw: no row
                    row = {
                        "baseline_n": len(rb),
                        "variant_n": len(rv),
                        "baseline_mean_recall": statistics.fmean(rb),
                        "variant_mean_recall": statistics.fmean(rv),
                        "baseline_mean_normalized": statistics.fmean(b),
                        "variant_mean_normalized": statistics.fmean(v),
                        "delta_norm_recall": statistics.fmean(v) - statistics.fmean(b),
                        **self.welch(b, v, len(set(rb)) == 1 and len(set(rv)) == 1),
                    }
                    out[dataset, *population, c] = row
        self.add_q(out, lambda key: key[:3])
        return out

    def robustness(self) -> dict:
        out = {}
        for dataset, (kind, parent, corruption, severity, origin) in self.s["datasets"].items():
            dense = statistics.fmean(self.tops(dataset, POPULATIONS[0]))
            for population in POPULATIONS:
                tops = self.tops(dataset, population)
                mean = statistics.fmean(tops)
                clean = statistics.fmean(self.tops(parent, population)) if parent else None
                out[dataset, *population] = {
                    "kind": kind,
                    "origin": origin,
                    "parent": parent,
                    "corruption": corruption,
                    "severity": severity,
                    "n_models": len(tops),
                    "mean_top1": mean,
                    "std_top1": statistics.stdev(tops),
                    "mean_error": 1 - mean,
                    "dense_top1": dense,
                    "dense_error": 1 - dense,
                    "error_vs_dense": (1 - mean) / (1 - dense),
                    "clean_top1": clean,
                    "top1_change_vs_clean": None if clean is None else mean - clean,
                }
        return out

    def robustness_tstats(self) -> dict:
        out = {}
        for dataset in self.s["datasets"]:
            b = self.tops(dataset, POPULATIONS[0])
            for population in VARIANTS:
                v = self.tops(dataset, population)
                out[dataset, *population] = {
                    "baseline_n": len(b),
                    "variant_n": len(v),
                    "baseline_mean_top1": statistics.fmean(b),
                    "variant_mean_top1": statistics.fmean(v),
                    "baseline_std_top1": statistics.stdev(b),
                    "variant_std_top1": statistics.stdev(v),
                    "delta_top1": statistics.fmean(v) - statistics.fmean(b),
                    **self.welch(b, v, len(set(b)) == 1 and len(set(v)) == 1),
                }
        self.add_q(out, lambda key: key[1:])
        return out

    def corruption_error(self) -> dict:
        """CE against the dense population: sum_s E(pop, s) / sum_s E(dense, s), and relative
        CE: sum_s (E(pop, s) - E(pop, clean)) / sum_s (E(dense, s) - E(dense, clean))."""
        out = {}

        def error(dataset: str, population) -> float:
            return 1 - statistics.fmean(self.tops(dataset, population))

        groups = {}
        for name, (corruption, severity, origin) in CORRUPTED.items():
            groups.setdefault((origin, corruption), []).append((severity, name))
        for population in POPULATIONS:
            clean, dense_clean = error("c", population), error("c", POPULATIONS[0])
            for (origin, corruption), members in groups.items():
                e = [error(name, population) for _, name in members]
                d = [error(name, POPULATIONS[0]) for _, name in members]
                out[(*population, "c", origin, corruption)] = {
                    "benchmark": corruption in BENCHMARK,
                    "n_severities": len(members),
                    "complete": {s for s, _ in members} == {1, 2, 3, 4, 5},
                    "mean_error": statistics.fmean(e),
                    "clean_error": clean,
                    "ce_vs_dense": sum(e) / sum(d),
                    "relative_ce_vs_dense": sum(x - clean for x in e)
                    / sum(x - dense_clean for x in d),
                    "ce_vs_alexnet": None,  # label space 'ls': no AlexNet reference
                    "relative_ce_vs_alexnet": None,
                }
        return out

    def mean_corruption_error(self, ce: dict) -> dict:
        out = {}
        groups = {}
        for (method, sparsity, parent, origin, _), row in ce.items():
            groups.setdefault((method, sparsity, parent, origin), []).append(row)
        for group, rows in groups.items():
            benchmark = [r for r in rows if r["benchmark"]]
            out[group] = {
                "n_corruptions": len(benchmark),
                "n_complete": sum(r["complete"] for r in benchmark),
                "n_extra": len(rows) - len(benchmark),
                "complete": False,  # fewer than 15 benchmark corruptions
                "mce_vs_dense": None,
                "relative_mce_vs_dense": None,
                "mean_ce_vs_dense_present": statistics.fmean(r["ce_vs_dense"] for r in benchmark)
                if benchmark
                else None,
            }
        return out


# ---- reading the code's answers and comparing -------------------------------------------------


def relation(con, sql: str, keys: tuple[str, ...], columns) -> dict:
    result = con.execute(sql)
    names = [d[0] for d in result.description]
    out = {}
    for values in result.fetchall():
        row = dict(zip(names, values, strict=True))
        key = tuple(row[k] for k in keys)
        assert key not in out, f"duplicate key {key}"
        out[key] = {c: row[c] for c in columns}
    return out


def same(value, expected) -> bool:
    if expected is None or value is None:
        return value is None and expected is None
    if isinstance(expected, bool) or isinstance(value, bool):
        return value is expected
    if isinstance(expected, int) and isinstance(value, int):
        return value == expected
    if isinstance(expected, str) or isinstance(value, str):
        return value == expected
    return math.isclose(value, expected, rel_tol=1e-6, abs_tol=1e-9)


def assert_same(got: dict, expected: dict, what: str) -> None:
    assert set(got) == set(expected), (
        f"{what}: keys only in the code's: {sorted(set(got) - set(expected), key=str)[:5]},"
        f" only in the reference's: {sorted(set(expected) - set(got), key=str)[:5]}"
    )
    for key, row in expected.items():
        for column, value in row.items():
            assert same(got[key][column], value), (
                f"{what} {key} {column}: code {got[key][column]!r}, reference {value!r}"
            )


def columns(expected: dict) -> list[str]:
    return list(next(iter(expected.values())))


def check_views(con, ref: Reference, pie: dict) -> None:
    """The relations `pie analyze` materialises (or their views), against the reference."""
    pop = ("dataset", "method", "sparsity")
    expected = ref.modal_labels()
    got = relation(con, "select * from modal_labels", (*pop, "key"), columns(expected))
    assert_same(got, expected, "modal_labels")
    got = relation(con, "select * from pie", (*pop, "key"), columns(pie))
    assert_same(got, pie, "pie")
    expected = ref.pie_accuracy(pie)
    got = relation(con, "select * from pie_accuracy", (*pop, "is_pie"), columns(expected))
    assert_same(got, expected, "pie_accuracy")
    expected = ref.pie_classes(pie)
    got = relation(con, "select * from pie_classes", (*pop, "class_id"), columns(expected))
    assert_same(got, expected, "pie_classes")
    expected = ref.robustness()
    got = relation(con, "select * from robustness", pop, columns(expected))
    assert_same(got, expected, "robustness")
    ce = ref.corruption_error()
    keys = ("method", "sparsity", "parent", "origin", "corruption")
    assert_same(relation(con, "select * from corruption_error", keys, columns(ce)), ce, "CE")
    expected = ref.mean_corruption_error(ce)
    got = relation(con, "select * from mean_corruption_error", keys[:4], columns(expected))
    assert_same(got, expected, "mean_corruption_error")


def check_tests(con, ref: Reference) -> None:
    """The tables `pie analyze` writes with scipy: class_tstats and robustness_tstats."""
    pop = ("dataset", "method", "sparsity")
    expected = ref.class_tstats()
    got = relation(con, "select * from class_tstats", (*pop, "class_id"), columns(expected))
    assert_same(got, expected, "class_tstats")
    expected = ref.robustness_tstats()
    got = relation(con, "select * from robustness_tstats", pop, columns(expected))
    assert_same(got, expected, "robustness_tstats")


def check_export(root, pie: dict, dataset: str, sparsity: float, non_pie: bool):
    """`pie export` of one subset: exactly the reference's images of it, each with the
    reference's record (the clean parent's, for a corrupted variant)."""
    cfg = ExportConfig(
        experiment="exp", dataset=dataset, method="magnitude", sparsity=sparsity, non_pie=non_pie
    )
    out = export.main(root, cfg, force=True)
    chosen = {
        key: row
        for (d, _, s, key), row in pie.items()
        if d == "c" and s == sparsity and row["is_pie"] is (not non_pie)
    }
    samples = {s["__key__"]: s for s in read_shards(out)}
    assert set(samples) == set(chosen), (dataset, sparsity, non_pie)
    manifest = {r["key"]: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    assert set(manifest) == set(chosen)
    for key, row in chosen.items():
        meta = samples[key]["json"]
        assert samples[key]["png"] == f"{dataset} {key}".encode()
        reference_fields = {
            "true_class_label": row["label"],
            "baseline_mode_label": row["baseline_mode"],
            "variant_mode_label": row["variant_mode"],
            "pruning_fraction": sparsity,
            "baseline_n": row["baseline_n"],
            "variant_n": row["variant_n"],
            "baseline_mean_probability": row["baseline_mean_p_label"],
            "variant_mean_probability": row["variant_mean_p_label"],
            "is_pie": row["is_pie"],
            "variant_mode_correct": row["variant_correct"],
            "source": dataset,
        }
        for field, value in reference_fields.items():
            assert same(meta[field], value), (key, field, meta[field], value)
            if field != "source":
                assert same(manifest[key][field], value), (key, field, manifest[key][field])
        corruption = CORRUPTED.get(dataset, (None, None))
        details = {
            **{c: row[c] for c in ("baseline_votes", "variant_votes", "baseline_agreement")},
            **{c: row[c] for c in ("variant_agreement", "l1_distance", "cie_rank")},
            "tie_decided": row["tie_decided"],
            "class_name": f"class {row['label']}",
            "baseline_mode_name": f"class {row['baseline_mode']}",
            "variant_mode_name": f"class {row['variant_mode']}",
            "pie_dataset": "c",
            "corruption": corruption[0],
            "severity": corruption[1],
        }
        for field, value in details.items():
            assert same(meta["pie"][field], value), (key, field, meta["pie"][field], value)


def check_coverage(study: dict, pies: dict[str, dict]) -> None:
    """What the generator promises is in the study (else the test would prove less)."""
    largest, smallest, excluded = pies["largest"], pies["smallest"], pies["exclude"]
    clean = [k for k in largest if k[0] == "c"]
    assert any(largest[k]["is_pie"] != smallest[k]["is_pie"] for k in clean)
    assert any(excluded[k]["is_pie"] is None for k in clean)
    ref = Reference(study, "largest", "p", 0.05)
    dense_only = variant_only = 0
    for dataset, method, sparsity, key in clean:
        b = ref.modal(dataset, POPULATIONS[0], key)["tied"]
        v = ref.modal(dataset, (method, sparsity), key)["tied"]
        dense_only += b and not v
        variant_only += v and not b
    assert dense_only and variant_only
    for members in ref.members.values():
        p_labels = {ref.predicted(m, "c")["k00"][1] for m in members}
        assert len(p_labels) == len(members)  # every model its own p_label
    tstats = ref.class_tstats()
    assert tstats["c", "magnitude", 0.5, ZERO_VARIANCE]["p_value"] is None
    assert tstats["c", "magnitude", 0.5, DENSE_ALWAYS_RIGHT]["p_value"] is not None
    assert ("c-contrast-1", "magnitude", 0.5, 10) not in tstats


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_analysis_and_export_match_a_reimplementation(root, seed):
    study = generate(seed)
    refs = {rule: Reference(study, rule, on, alpha) for rule, on, alpha in SETTINGS}
    pies = {rule: ref.pie() for rule, ref in refs.items()}
    check_coverage(study, pies)
    store_study(root, study)
    for rule, on, alpha in SETTINGS:
        cfg = AnalyzeConfig(
            experiment="exp", dataset="c", alpha=alpha, significance_on=on, mode_tie_break=rule
        )
        assert analyze.main(root, cfg)  # a new tie rule: the analysis is recomputed
        ref = refs[rule]
        with store.connect(root, read_only=True) as con:
            check_views(con, ref, pies[rule])  # the views, computed from the predictions
            assert materialise.attach(con)
            check_views(con, ref, pies[rule])  # the tables `pie analyze` materialised
            check_tests(con, ref)
        check_export(root, pies[rule], EXPORTED[0], 0.5, non_pie=False)
        check_export(root, pies[rule], EXPORTED[1], 0.9, non_pie=True)
