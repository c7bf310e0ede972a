"""Every query the report needs, read from the materialised analysis of one clean dataset.

`load` opens the database read-only and refuses (one line) when the analysis is missing or out
of date, as `pie summary` does: the page is only ever built from what `pie analyze` computed
from the predictions as they are now. Everything is read in this one pass; nothing here renders.
A population is (method, level) within the experiment (analytics.population): pruned and
quantised ones side by side, each compared with the dense one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from analytics import population
from pie import catalog, store
from pie import materialised as materialise
from pie.errors import PieError
from pie.paths import WorkRoot
from report import annotations
from report.config import ReportConfig

ADVERSARIAL_KINDS = ("natural_adversarial", "rendition")  # ImageNet-A, ImageNet-R
TOP_PIE_CLASSES = 10  # classes listed per population by their number of PIEs
ORDER = "method <> 'dense', method, level"  # dense first, then each method's levels (sort_key)


@dataclass(frozen=True)
class Study:
    """What the page shows; each list holds one dict per row of the relation named."""

    dataset: str
    experiment: str
    class_names: dict[int, str]
    models: list[dict[str, Any]]  # model_accuracy: one per model on the dataset
    populations: list[dict[str, Any]]  # population_summary: one per population
    pie_accuracy: list[dict[str, Any]]  # pie_accuracy: one per (variant population, is_pie)
    class_impact: list[dict[str, Any]]  # class_tstats: one per (variant population, class)
    pie_classes: list[dict[str, Any]]  # pie_classes: the classes with most PIEs, per population
    corruptions: list[dict[str, Any]]  # robustness: one per (corrupted variant, population)
    adversarial: list[dict[str, Any]]  # robustness: one per (ImageNet-A/R set, population)
    gallery: list[dict[str, Any]]  # pie (is_pie): the largest l1_distance first, capped
    n_pie_entries: int  # all (population, image) PIE rows; the gallery holds the first ones
    shard_dir: Path  # the dataset's shards
    shards: dict[str, str]  # gallery key -> its shard file (a name inside shard_dir)
    annotations: list[dict[str, Any]]  # pie_annotations: the most significant rows
    annotation_labels: dict[str, list[str]]  # gallery key -> its `source: name = value`s

    def name(self, row: dict[str, Any]) -> str:
        """The label of the population of a row with method and level: 'magnitude 0.9',
        'int8_full 8-bit' (quantised: population_summary.quantised)."""
        quantised = any(
            p["quantised"]
            for p in self.populations
            if (p["method"], p["level"]) == (row["method"], row["level"])
        )
        return population.label(row["method"], row["level"], quantised)


def records(con: duckdb.DuckDBPyConnection, sql: str, params: list) -> list[dict[str, Any]]:
    result = con.execute(sql, params)
    columns = [d[0] for d in result.description]
    return [dict(zip(columns, row, strict=True)) for row in result.fetchall()]


def load(root: WorkRoot, cfg: ReportConfig) -> Study:
    """Read the study of `cfg.dataset` / `cfg.experiment` (an unknown dataset, a missing or stale
    analysis, or no results are user errors)."""
    with store.connect(root, read_only=True) as con:
        row = catalog.dataset(con, cfg.dataset)
        if not materialise.attach(con):
            raise PieError(
                "the analysis is out of date (predictions, models or analysis settings changed"
                " since the last `pie analyze`, or it never ran): run `pie analyze`"
            )
        key = [cfg.dataset, cfg.experiment]
        populations = records(
            con,
            "select * from population_summary where dataset = ? and experiment = ?"
            f" order by {ORDER}",
            key,
        )
        if not populations:
            raise PieError(
                f"no results for {cfg.dataset} / {cfg.experiment}: run train, infer and analyze"
                " first"
            )
        gallery = records(
            con,
            "select key, label, method, level, sparsity, baseline_mode, variant_mode,"
            " baseline_agreement, variant_agreement, l1_distance, cie_rank, tie_decided"
            " from pie where dataset = ? and experiment = ? and is_pie"
            " order by l1_distance desc, key, method, level limit ?",
            [*key, cfg.max_gallery],
        )
        study = Study(
            dataset=cfg.dataset,
            experiment=cfg.experiment,
            class_names=catalog.label_space(con, row["label_space"]).names(),
            models=records(
                con,
                "select model_id, method, level, sparsity, seed, top1 from model_accuracy"
                f" where dataset = ? and experiment = ? order by {ORDER}, model_id",
                key,
            ),
            populations=populations,
            pie_accuracy=records(
                con,
                "select method, level, sparsity, is_pie, n_images, baseline_top1, variant_top1"
                " from pie_accuracy where dataset = ? and experiment = ?"
                f" order by {ORDER}, is_pie desc",
                key,
            ),
            class_impact=records(
                con,
                "select method, level, sparsity, class_id, delta_norm_recall, t_stat, p_value,"
                " q_value, significant, significance_on, alpha from class_tstats"
                f" where dataset = ? and experiment = ? order by {ORDER}, class_id",
                key,
            ),
            pie_classes=records(
                con,
                "select method, level, sparsity, class_id, n_pie, n_images, pie_fraction"
                " from pie_classes where dataset = ? and experiment = ? and n_pie > 0"
                " qualify row_number() over (partition by method, level"
                f" order by n_pie desc, class_id) <= {TOP_PIE_CLASSES}"
                f" order by {ORDER}, n_pie desc, class_id",
                key,
            ),
            corruptions=records(
                con,
                "select dataset, origin, corruption, severity, method, level, sparsity, mean_top1,"
                " error_vs_dense from robustness where kind = 'corrupted' and parent = ?"
                f" and experiment = ? order by origin, {ORDER}, corruption, severity",
                key,
            ),
            adversarial=records(
                con,
                "select dataset, kind, method, level, sparsity, n_models, mean_top1, std_top1,"
                " error_vs_dense from robustness where kind in"
                f" {ADVERSARIAL_KINDS} and experiment = ? order by dataset, {ORDER}",
                [cfg.experiment],
            ),
            gallery=gallery,
            n_pie_entries=store.rows(
                con,
                "select count(*) from pie where dataset = ? and experiment = ? and is_pie",
                key,
            )[0][0],
            shard_dir=root.path / row["path"],
            shards=catalog.image_shards(con, cfg.dataset, sorted({g["key"] for g in gallery})),
            annotations=annotations.tests(con, *key),
            annotation_labels=annotations.labels(con, cfg.dataset, [g["key"] for g in gallery]),
        )
    return study
