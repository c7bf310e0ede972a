"""Training learns: on a small learnable set (4 classes told apart by stripe orientation), a
short CPU run of train, infer, analyze and summary gives dense and 90 % pruned models far above
chance, and the summary's numbers equal those computed here from the predictions table."""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
from conftest import write_idx

from analytics import analyze, summary
from analytics.config import AnalyzeConfig
from infer import run as infer
from infer.config import InferConfig
from ingest import pack, sources
from ingest.config import IngestConfig
from pie import checkpoints, store
from train import population
from train.config import TrainConfig

CLASSES = 4  # labels 0-3 of the 10-class fashion-mnist label space: chance is 1/4
FLOOR = 0.9  # the top-1 every model must reach on the test set (chance 0.25)


def stripes(label: int, phase: int) -> np.ndarray:
    """28 x 28 in {0, 1}: 0 horizontal stripes, 1 vertical, 2 2x2 checks, 3 none (period 4,
    so shifts and flips, the training augmentation, keep the class)."""
    r, c = np.mgrid[0:28, 0:28]
    if label == 0:
        return ((r + phase) % 4 < 2).astype(float)
    if label == 1:
        return ((c + phase) % 4 < 2).astype(float)
    if label == 2:
        return (((r + phase) % 4 < 2) ^ ((c + phase) % 4 < 2)).astype(float)
    return np.zeros((28, 28))


def learnable(directory, stem: str, n: int, rng: np.random.Generator) -> None:
    """n images, classes in turn, each a pattern at random phase and contrast plus noise, as
    the IDX pair fashion_mnist reads."""
    labels = np.arange(n) % CLASSES
    images = np.stack(
        [
            60
            + rng.uniform(80, 160) * stripes(int(y), int(rng.integers(4)))
            + rng.normal(0, 20, (28, 28))
            for y in labels
        ]
    )
    write_idx(directory / f"{stem}-images-idx3-ubyte.gz", np.clip(images, 0, 255).round())
    write_idx(directory / f"{stem}-labels-idx1-ubyte.gz", labels)


def mode(votes: list[int]) -> tuple[int, bool]:
    """(the modal label, whether a tie chose it); a tie goes to the largest class id (the
    reference's rule)."""
    counts = Counter(votes)
    top = max(counts.values())
    tied = [label for label, n in counts.items() if n == top]
    return max(tied), len(tied) > 1


def test_dense_and_90_percent_pruned_models_learn_and_the_summary_adds_up(root, tmp_path):
    rng = np.random.default_rng(0)
    learnable(tmp_path, "train", 256, rng)
    learnable(tmp_path, "t10k", 80, rng)
    pack.main(root, IngestConfig(), [sources.fashion_mnist(tmp_path, s) for s in ("train", "test")])
    cfg = TrainConfig(
        experiment="learn",
        sparsities=(0.0, 0.9),
        seeds=2,
        epochs=4,
        batch_size=32,
        lr=0.8,  # 0.1 at batch 32
        warmup_epochs=0.5,
        prune_start_epoch=0.5,
        prune_end_epoch=2.5,
        prune_frequency=2,
        device="cpu",
        workers=1,
    )
    assert len(population.main(root, cfg)) == 4
    # the reference's masked weights (train.masked_weights), 90 % only: they learn as well
    reference = replace(cfg, experiment="learn-ref", sparsities=(0.9,), masked_weights="reference")
    assert len(population.main(root, reference)) == 2
    assert infer.main(root, InferConfig(device="cpu", workers=0, threads=1)) == 6
    acfg = AnalyzeConfig(experiment="learn", dataset="fmnist-test")
    analyze.main(root, acfg)
    rows = summary.main(root, acfg)

    with store.connect(root, read_only=True) as con:
        models = con.execute(
            "select model_id, method, target_sparsity, achieved_sparsity, path, experiment"
            " from models"
        ).fetchall()
        predictions = con.execute(
            "select model_id, key, label, pred from predictions where dataset = 'fmnist-test'"
        ).fetchall()
    population_of = {m: (method, sparsity, e) for m, method, sparsity, _, _, e in models}
    assert sorted(population_of.values()) == [("dense", 0.0, "learn")] * 2 + [
        ("magnitude", 0.9, "learn"),
        ("magnitude", 0.9, "learn"),
        ("magnitude", 0.9, "learn-ref"),
        ("magnitude", 0.9, "learn-ref"),
    ]
    for _, _, sparsity, achieved, _, _ in models:
        assert achieved == pytest.approx(sparsity, abs=0.005)

    # per model: top-1 from its 80 predictions, by hand
    right: dict[str, list[bool]] = {}
    votes: dict[tuple[str, float, str], dict[str, list[int]]] = {}
    labels = {}
    for model_id, key, label, pred in predictions:
        right.setdefault(model_id, []).append(pred == label)
        votes.setdefault(population_of[model_id], {}).setdefault(key, []).append(pred)
        labels[key] = label
    assert sorted(Counter(labels.values()).values()) == [20] * CLASSES
    top1 = {m: sum(r) / len(r) for m, r in right.items()}
    assert all(len(r) == 80 for r in right.values())
    assert min(top1.values()) >= FLOOR, top1  # chance: 0.25
    for model_id, _, _, _, path, _ in models:  # training's own evaluation says the same
        assert checkpoints.read_sidecar(root.path / path).test_top1 == top1[model_id]

    # the summary: one row per population, its numbers against the hand computation
    assert [(r["method"], r["sparsity"]) for r in rows] == [("dense", 0.0), ("magnitude", 0.9)]
    dense_modes = {k: mode(v) for k, v in votes[("dense", 0.0, "learn")].items()}
    for row in rows:
        key = (row["method"], row["sparsity"], "learn")
        members = [m for m, p in population_of.items() if p == key]
        assert row["n_models"] == len(members) == 2
        assert row["mean_top1"] == pytest.approx(statistics.mean(top1[m] for m in members))
        assert row["std_top1"] == pytest.approx(statistics.stdev(top1[m] for m in members))
    pruned = rows[1]
    assert pruned["n_classes_tested"] == CLASSES  # the classes the test set holds
    modes = {k: mode(v) for k, v in votes[("magnitude", 0.9, "learn")].items()}
    pies = [k for k in modes if modes[k][0] != dense_modes[k][0]]
    assert pruned["n_pie"] == len(pies)
    assert pruned["pie_fraction"] == pytest.approx(len(pies) / 80)
    tied = [k for k in pies if modes[k][1] or dense_modes[k][1]]
    assert pruned["n_pie_tie_decided"] == len(tied)
    if pies:
        dense_right = [v == labels[k] for k in pies for v in votes[("dense", 0.0, "learn")][k]]
        assert pruned["dense_top1_on_pie"] == pytest.approx(statistics.mean(dense_right))
    rest = [
        v == labels[k] for k in modes if k not in pies for v in votes[("dense", 0.0, "learn")][k]
    ]
    assert pruned["dense_top1_on_nonpie"] == pytest.approx(statistics.mean(rest))
