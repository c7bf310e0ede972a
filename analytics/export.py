"""`pie export`: a population's PIEs (or the complement) as WebDataset shards.

Membership and metadata come from the `pie` view; the images are streamed from the parent's
shards and written byte for byte, each with JSON metadata that adds the PIE record (true
label, dense and pruned modes, vote counts, agreement, L1 distance, tie_decided). The export is
also registered as a dataset of kind 'export', so it can be queried like any other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

from analytics.config import ExportConfig
from pie import catalog, console, store
from pie.catalog import DatasetSpec, is_recorded, record_dataset
from pie.config import to_dict
from pie.errors import PieError
from pie.paths import WorkRoot, format_sparsity
from pie.shards import Sample, image_field, read_shards, write_shards

PIE_COLUMNS = (
    "label",
    "baseline_mode",
    "variant_mode",
    "is_pie",
    "baseline_n",
    "variant_n",
    "baseline_votes",
    "variant_votes",
    "baseline_agreement",
    "variant_agreement",
    "baseline_mean_p_label",
    "variant_mean_p_label",
    "l1_distance",
    "tie_decided",
)


def export_name(cfg: ExportConfig) -> str:
    subset = "nonpie" if cfg.non_pie else "pie"
    return f"{cfg.dataset}-{cfg.method}-{format_sparsity(cfg.sparsity)}-{subset}"


def main(root: WorkRoot, cfg: ExportConfig, force: bool = False) -> Path:
    """Write the export (skipped when it exists, unless `force`); returns its directory."""
    started = datetime.now()
    subset = "nonpie" if cfg.non_pie else "pie"
    name = export_name(cfg)
    directory = root.export(cfg.dataset, cfg.sparsity, cfg.method) / subset

    with store.connect(root, read_only=True) as con:
        parent = catalog.dataset(con, cfg.dataset)
        exists = is_recorded(con, name, str(directory))
        membership = store.frame(
            con,
            f"select key, {', '.join(PIE_COLUMNS)} from pie where dataset = ? and experiment = ?"
            " and method = ? and sparsity = ?",
            [cfg.dataset, cfg.experiment, cfg.method, cfg.sparsity],
        )
        classes = dict(
            store.rows(
                con,
                "select class_id, name from classes where label_space = ?",
                [parent["label_space"]],
            )
        )
    if exists and not force:
        console.say(f"export: {name} already there, in {directory} (--force rewrites it)")
        return directory
    if membership.is_empty():
        raise PieError(
            f"no PIE data for {cfg.dataset} / {cfg.experiment} / {cfg.method} at sparsity "
            f"{cfg.sparsity:g}: train dense and pruned models and run `pie infer` first"
        )
    chosen = membership.filter(membership["is_pie"] != cfg.non_pie)
    records = {row["key"]: row for row in chosen.iter_rows(named=True)}

    def samples(advance: Callable[[int], None]) -> Iterator[Sample]:
        for raw in read_shards(root.shards(cfg.dataset)):
            record = records.get(raw["__key__"])
            if record is None:
                continue
            ext, data = image_field(raw)
            record = {k: v for k, v in record.items() if k != "key"}
            pie = {
                **record,
                "class_name": classes.get(record["label"]),
                "baseline_mode_name": classes.get(record["baseline_mode"]),
                "variant_mode_name": classes.get(record["variant_mode"]),
                "dataset": cfg.dataset,
                "experiment": cfg.experiment,
                "method": cfg.method,
                "sparsity": cfg.sparsity,
            }
            yield Sample(raw["__key__"], raw["cls"], data, ext, {**raw["json"], "pie": pie})
            advance(1)

    if not records:
        raise PieError(f"no {'non-PIE' if cfg.non_pie else 'PIE'} images to export for {name}")
    with console.progress(f"exporting {name}", len(records)) as advance:
        written = write_shards(samples(advance), directory, subset, cfg.shard_max_count)
    with store.connect(root) as con:
        spec = DatasetSpec(
            name,
            parent["label_space"],
            "export",
            "eval",
            f"pie export of {cfg.experiment}/{cfg.method}@{cfg.sparsity:g}",
            parent=cfg.dataset,
            class_subset=parent["class_subset"] and tuple(parent["class_subset"]),
            origin="export",
        )
        record_dataset(con, spec, directory, written)
        summary = (
            f"export: {len(written.keys)} {'non-PIE' if cfg.non_pie else 'PIE'} images of "
            f"{cfg.dataset} ({len(membership)} in all) -> {directory}"
        )
        store.record_run(con, "export", cfg.experiment, to_dict(cfg), summary, started)
    console.say(summary)
    return directory
