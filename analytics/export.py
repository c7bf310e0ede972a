"""`pie export`: the PIEs of a population (or the rest) as WebDataset shards and a manifest.

The population is (experiment, method, level) (`export.level`, else `export.sparsity`: a pruning
method's level), any compressed one: the PIEs of a quantised population are its CIEs
(compression identified exemplars), found by the same rule against the same dense population.

Which images: the rows of view `pie` for the dataset's membership set, the clean dataset's own
PIE sets, or for a corrupted variant its clean parent's (an image's PIE status follows its key
into the variants, as in `pie_accuracy`): the corrupted versions of the clean PIEs. Images that
the tie rule 'exclude' leaves undecided (is_pie null) are in neither subset.

The images are streamed from the dataset's shards and written byte for byte. Each sample's JSON
keeps the source JSON and adds the reference's fields (docs/definitions.md, PIEs):
`true_class_label`, `baseline_mode_label`, `variant_mode_label`, `pruning_fraction`,
`baseline_n`, `variant_n`, `baseline_mean_probability`, `variant_mean_probability` (the
population's target sparsity is `pruning_fraction`; 0 for one quantised from dense), plus
`is_pie`, `variant_mode_correct` and, under `pie`, the whole record under the `pie` view's
column names (modes, votes, agreement, L1 distance, cie_rank, tie_decided, ...), the class
names, the population and the dataset's corruption and severity. A manifest (`manifest.parquet` or
`manifest.csv`) beside the shards has one row per exported image: key, shard and the same
fields. The export is registered as a dataset of kind 'export' (parent: the dataset exported
from), so `pie infer --dataset <name>` can evaluate models on it.

What an export was made from is recorded in its `datasets.settings` (`made_from`): the
population, the manifest format, the shard size, the source dataset's content hash and a digest
of every exported image's key and fields. Asked again, an export is skipped only when all of
that is unchanged; after new predictions (another PIE set, other votes or probabilities), a
re-packed source or other options it is written again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from analytics.config import ExportConfig
from pie import catalog, console, durable, store
from pie.catalog import DatasetSpec, is_recorded, record_dataset
from pie.config import differences, to_dict
from pie.errors import PieError
from pie.paths import WorkRoot, format_sparsity
from pie.shards import Sample, dataset_hash, image_field, read_shards, write_shards

# view `pie` column -> the reference's field name
REFERENCE_FIELDS = {
    "label": "true_class_label",
    "baseline_mode": "baseline_mode_label",
    "variant_mode": "variant_mode_label",
    "sparsity": "pruning_fraction",
    "baseline_n": "baseline_n",
    "variant_n": "variant_n",
    "baseline_mean_p_label": "baseline_mean_probability",
    "variant_mean_p_label": "variant_mean_probability",
    "is_pie": "is_pie",
    "variant_correct": "variant_mode_correct",
}
DETAILS = (
    "level",
    "baseline_votes",
    "variant_votes",
    "baseline_agreement",
    "variant_agreement",
    "l1_distance",
    "cie_rank",
    "tie_decided",
)


def export_name(cfg: ExportConfig) -> str:
    subset = "nonpie" if cfg.non_pie else "pie"
    return f"{cfg.dataset}-{cfg.method}-{format_sparsity(cfg.population_level)}-{subset}"


def membership_dataset(source: dict) -> str:
    """Whose PIE sets decide: a corrupted variant's clean parent, else the dataset itself."""
    corrupted = source["kind"] == "corrupted" and source["parent"]
    return source["parent"] if corrupted else source["name"]


def records(con, cfg: ExportConfig, pie_dataset: str, label_space: str) -> dict[str, dict]:
    """key -> the JSON fields of every image of the chosen subset."""
    columns = ", ".join(["key", *REFERENCE_FIELDS, *DETAILS])
    result = con.execute(
        f"select {columns} from pie where dataset = ? and experiment = ? and method = ?"
        " and level = ? and is_pie = ?",
        [pie_dataset, cfg.experiment, cfg.method, cfg.population_level, not cfg.non_pie],
    )
    names = [d[0] for d in result.description]
    rows = [dict(zip(names, row, strict=True)) for row in result.fetchall()]
    classes = dict(
        store.rows(con, "select class_id, name from classes where label_space = ?", [label_space])
    )
    out = {}
    for row in rows:
        fields = {REFERENCE_FIELDS[c]: row[c] for c in REFERENCE_FIELDS}
        fields["pie"] = {
            **{c: v for c, v in row.items() if c != "key"},
            "class_name": classes.get(row["label"]),
            "baseline_mode_name": classes.get(row["baseline_mode"]),
            "variant_mode_name": classes.get(row["variant_mode"]),
            "pie_dataset": pie_dataset,
            "experiment": cfg.experiment,
            "method": cfg.method,
        }
        out[row["key"]] = fields
    return out


def n_decided(con, cfg: ExportConfig, pie_dataset: str) -> int:
    return store.rows(
        con,
        "select count(is_pie) from pie where dataset = ? and experiment = ? and method = ?"
        " and level = ?",
        [pie_dataset, cfg.experiment, cfg.method, cfg.population_level],
    )[0][0]


def made_from(cfg: ExportConfig, chosen: dict[str, dict], source_hash: str) -> dict[str, Any]:
    """What an export holds, as recorded in its `datasets.settings`: the options that shape it,
    the source's content hash and a sha256 of the chosen images' keys and fields (floats to 9
    significant digits: DuckDB's parallel sums may differ in the last bits between runs)."""

    def plain(value: Any) -> Any:
        if isinstance(value, float):
            return float(f"{value:.9g}")
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    text = json.dumps(plain(chosen), sort_keys=True, default=str)
    return {
        "experiment": cfg.experiment,
        "method": cfg.method,
        "sparsity": cfg.sparsity,
        "level": cfg.level,  # null: the level is the sparsity
        "non_pie": cfg.non_pie,
        "manifest": cfg.manifest,
        "shard_max_count": cfg.shard_max_count,
        "source_hash": source_hash,
        "records_sha256": hashlib.sha256(text.encode()).hexdigest(),
    }


def write_manifest(path: Path, rows: list[dict]) -> None:
    """One row per exported image, as Parquet or CSV by suffix: the reference's fields, then the
    rest of the record (what `pie` repeats under the view's names is left out)."""

    def flat(row: dict) -> dict:
        rest = {k: v for k, v in row["pie"].items() if k not in REFERENCE_FIELDS}
        return {k: v for k, v in row.items() if k != "pie"} | rest

    partial = path.with_name(path.name + ".partial")
    with duckdb.connect() as con:
        frame = con.from_arrow(pa.Table.from_pylist([flat(r) for r in rows]))
        write = frame.write_parquet if path.suffix == ".parquet" else frame.write_csv
        write(str(partial))
    durable.replace(partial, path)


def main(root: WorkRoot, cfg: ExportConfig, force: bool = False) -> Path:
    """Write the export (skipped when it exists, made from what it would be made from now,
    unless `force`); returns its directory. The run is the work root's one writer
    (`store.writer_lock`: beside another it stops at once, naming it); it reads the PIE set,
    writes the shards, then records them in a short step."""
    with store.writer_lock(root, f"pie export {export_name(cfg)}"):
        return write(root, cfg, force)


def write(root: WorkRoot, cfg: ExportConfig, force: bool) -> Path:
    started = datetime.now()
    subset = "nonpie" if cfg.non_pie else "pie"
    what = "non-PIE" if cfg.non_pie else "PIE"
    name = export_name(cfg)
    directory = root.export(cfg.dataset, cfg.population_level, cfg.method) / subset

    with store.connect(root, read_only=True) as con:
        source = catalog.dataset(con, cfg.dataset)
        if source["kind"] == "export":
            raise PieError(f"{cfg.dataset} is an export already: export from {source['parent']}")
        pie_dataset = membership_dataset(source)
        exists = is_recorded(con, name, str(directory))
        stored = catalog.dataset(con, name)["settings"] if exists else None
        decided = n_decided(con, cfg, pie_dataset)
        chosen = records(con, cfg, pie_dataset, source["label_space"])
    settings = made_from(cfg, chosen, dataset_hash(root.path / source["path"]))
    current = exists and not differences(json.loads(stored or "{}"), settings)
    if current and not force:
        console.say(f"export: {name} already there, in {directory} (--force rewrites it)")
        return directory
    if not decided:
        named = "sparsity" if cfg.level is None else "level"
        raise PieError(
            f"no PIE data for {pie_dataset} / {cfg.experiment} / {cfg.method} at {named} "
            f"{cfg.population_level:g}: train (or compress) dense and compressed models and run"
            " `pie infer` first"
        )
    if not chosen:
        raise PieError(f"no {what} images to export for {name}")
    context = {
        "dataset": cfg.dataset,
        "corruption": source["corruption"],
        "severity": source["severity"],
    }
    manifest: list[dict] = []

    def samples(advance: Callable[[int], None]) -> Iterator[Sample]:
        for raw in read_shards(root.path / source["path"]):
            fields = chosen.get(raw["__key__"])
            if fields is None:
                continue
            ext, data = image_field(raw)
            manifest.append({"key": raw["__key__"], **context, **fields})
            meta = {**raw["json"], **fields, "pie": {**fields["pie"], **context}}
            yield Sample(raw["__key__"], raw["cls"], data, ext, meta)
            advance(1)

    with console.progress(f"exporting {name}", len(chosen)) as advance:
        written = write_shards(samples(advance), directory, subset, cfg.shard_max_count)
    for row, shard in zip(manifest, written.shards, strict=True):
        row["shard"] = shard
    write_manifest(directory / f"manifest.{cfg.manifest}", manifest)
    with store.connect(root) as con:
        spec = DatasetSpec(
            name,
            source["label_space"],
            "export",
            source["split"],  # a training set's subsets are training sets
            f"pie export of {cfg.experiment}/{cfg.method}@{cfg.population_level:g} ({what})",
            parent=cfg.dataset,
            corruption=source["corruption"],
            severity=source["severity"],
            class_subset=source["class_subset"] and tuple(source["class_subset"]),
            origin="export",
            settings=settings,
        )
        record_dataset(con, spec, directory, written)
        link = root.shards(name)  # so that stages that take a dataset by name (train) find it
        if not link.is_symlink():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(directory, link.parent), target_is_directory=True)
        summary = (
            f"export: {len(written.keys)} {what} images of {cfg.dataset} (PIE sets of"
            f" {pie_dataset}: {decided} images decided) -> {directory}, manifest.{cfg.manifest}"
        )
        if exists and not current:
            summary += " (rewritten: it was made from other predictions, source or options)"
        store.record_run(con, "export", cfg.experiment, to_dict(cfg), summary, started)
    console.say(summary)
    return directory
