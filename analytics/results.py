"""`pie results`: every model's accuracy on a dataset in the columns of timm's results CSVs
(`results-imagenet.csv` and its siblings), so the numbers read as people already read them.

One file per dataset, `results-<dataset>.<csv|parquet|json>` (JSON: an array of records), in
`--out` (default `<work root>/results`), one row per model evaluated on it, best top-1 first (as
timm sorts):

- `model, top1, top1_err, top5, top5_err`: percent, rounded to 3 decimals as in timm's
  published files; from view `model_accuracy` (top-5 from the stored top-5 predictions;
  ImageNet-A/R as `pie infer` scored them, among their class subset's logits);
- `param_count`: millions, 2 decimals, as timm counts it (`model.parameters()`, buffers not
  counted): the architecture's parameters, so a pruned model counts its zeros too;
- `img_size, crop_pct, interpolation`: the model's preprocessing, from its sidecar as stored
  with its `models` row; pie decodes with bilinear resizing unless the preprocessing names
  another interpolation;
- `top1_diff`: as timm's column, in points, but against the model's dense parent on the same
  dataset rather than against another dataset: the variant's top-1 minus its parent's.
  The parent is `models.parent_id` where that column exists and is set (a model derived from
  another), else the dense model (method `dense`) of the same experiment and seed. Null for a
  dense model and when the parent has no predictions on the dataset;
- `method, level, sparsity, seed`: which population the model belongs to (level: the sparsity,
  or the bit width of a quantised model).

Datasets: every dataset with predictions, or those named (`--dataset`, training sets and exports
included). A name that is not a dataset, or one without predictions, stops the command in one
line before any file is written. Reads the database only (`model_accuracy` computes from table
`model_class_counts`, kept in step with the predictions): no `pie analyze` needed.
"""

from __future__ import annotations

import csv
import json
from functools import cache
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from pie import catalog, console, durable, store
from pie.errors import PieError
from pie.paths import WorkRoot

FORMATS = ("csv", "parquet", "json")
TIMM = (
    "model",
    "top1",
    "top1_err",
    "top5",
    "top5_err",
    "param_count",
    "img_size",
    "crop_pct",
    "interpolation",
    "top1_diff",
)
COLUMNS = (*TIMM, "method", "level", "sparsity", "seed")
INTERPOLATION = "bilinear"  # pie.images resizes with PIL's bilinear filter, antialiased


def parent_column(con: duckdb.DuckDBPyConnection) -> str:
    """The SQL for a model's declared parent: `models.parent_id` where the column exists (added
    for models derived from another), else null for every model."""
    columns = {r[0] for r in store.rows(con, "select name from pragma_table_info('models')")}
    return "m.parent_id" if "parent_id" in columns else "null::varchar"


def accuracy(con: duckdb.DuckDBPyConnection, dataset: str) -> list[dict[str, Any]]:
    """Each model's row on `dataset`: model_accuracy, the models row and its parent's top-1."""
    result = con.execute(
        f"""
        with evaluated as (
            select
                a.model_id, a.top1, a.top5, a.method, a.level, a.sparsity, a.seed, a.experiment,
                m.arch, m.label_space, m.config, {parent_column(con)} as parent_id
            from model_accuracy as a
            inner join models as m using (model_id)
            where a.dataset = ?
        ),

        dense as (
            select model_id, experiment, seed
            from models
            where method = 'dense'
        ),

        final as (
            select e.*, p.top1 as parent_top1
            from evaluated as e
            left join dense as d
                on e.parent_id is null and e.method <> 'dense'
                and d.experiment = e.experiment and d.seed = e.seed
            left join evaluated as p on p.model_id = coalesce(e.parent_id, d.model_id)
        )

        select * from final order by model_id
        """,
        [dataset],
    )
    names = [d[0] for d in result.description]
    return [dict(zip(names, row, strict=True)) for row in result.fetchall()]


@cache
def param_count(arch: str, n_classes: int, channels: int, size: int) -> int:
    """The architecture's parameters, counted as timm does (no weights read: built on the meta
    device, where nothing is allocated)."""
    import torch

    from pie.models import create

    with torch.device("meta"):
        model = create(arch, n_classes, channels, size)
    return sum(p.numel() for p in model.parameters())


def timm_row(con: duckdb.DuckDBPyConnection, row: dict[str, Any]) -> dict[str, Any]:
    """One model's results row, in COLUMNS order."""
    pre = json.loads(row["config"])["preprocess"]
    params = param_count(
        row["arch"], catalog.n_classes(con, row["label_space"]), pre["channels"], pre["size"]
    )
    top1, top5 = 100 * row["top1"], 100 * row["top5"]
    diff = None if row["parent_top1"] is None else 100 * (row["top1"] - row["parent_top1"])
    return {
        "model": row["model_id"],
        "top1": round(top1, 3),
        "top1_err": round(100 - top1, 3),
        "top5": round(top5, 3),
        "top5_err": round(100 - top5, 3),
        "param_count": round(params / 1e6, 2),
        "img_size": pre["size"],
        "crop_pct": pre["crop_fraction"],
        "interpolation": pre.get("interpolation", INTERPOLATION),
        "top1_diff": None if diff is None else round(diff, 3),
        "method": row["method"],
        "level": row["level"],
        "sparsity": row["sparsity"],
        "seed": row["seed"],
    }


def frame(rows: list[dict[str, Any]]) -> pa.Table:
    """The rows as a typed table, best top-1 first (ties by model id)."""
    floats, ints = pa.float64(), pa.int64()
    types = dict.fromkeys(COLUMNS, floats) | {
        "model": pa.string(), "img_size": ints, "interpolation": pa.string(),
        "method": pa.string(), "seed": ints,
    }  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=pa.schema([(c, types[c]) for c in COLUMNS]))
    return table.sort_by([("top1", "descending"), ("model", "ascending")])


def write(table: pa.Table, path: Path, fmt: str) -> None:
    """Write whole or not at all: a partial file, then a rename."""
    partial = path.with_name(path.name + ".partial")
    if fmt == "csv":  # plain, as timm writes it: quotes only where a value needs them
        with partial.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(table.column_names)
            writer.writerows(
                ["" if v is None else v for v in row.values()] for row in table.to_pylist()
            )
    elif fmt == "parquet":
        pq.write_table(table, partial)
    else:
        partial.write_text(json.dumps(table.to_pylist()) + "\n")
    durable.replace(partial, path)


def main(
    root: WorkRoot, datasets: tuple[str, ...] = (), fmt: str = "csv", out: Path | None = None
) -> list[Path]:
    """Write one results file per dataset (see the module docstring); returns their paths."""
    if fmt not in FORMATS:
        raise PieError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    out = out or root.path / "results"
    if out.exists() and not out.is_dir():
        raise PieError(f"cannot write results into {out}: it is a file")
    if not root.db.exists():
        raise PieError(f"no database at {root.db}: run `pie ingest`, `pie train`, `pie infer`")
    with store.connect(root, read_only=True) as con:
        evaluated = [
            r[0]
            for r in store.rows(
                con, "select distinct dataset from model_class_counts order by dataset"
            )
        ]
        for name in datasets:
            catalog.dataset(con, name)  # an unknown name: one line listing the known ones
            if name not in evaluated:
                raise PieError(f"no predictions on {name}: run `pie infer --dataset {name}`")
        if not evaluated:
            raise PieError("no predictions: run `pie infer` first")
        tables = {
            d: frame([timm_row(con, r) for r in accuracy(con, d)])
            for d in sorted(set(datasets or evaluated))
        }
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, table in tables.items():
        paths.append(out / f"results-{name}.{fmt}")
        write(table, paths[-1], fmt)
    n_rows = sum(t.num_rows for t in tables.values())
    console.say(
        f"results: {n_rows} (model, dataset) rows in timm's columns, one file per dataset:"
        f" {', '.join(p.name for p in paths)} in {out}"
    )
    return paths
