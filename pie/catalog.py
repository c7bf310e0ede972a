"""The catalog: the one module that reads and writes the catalog tables (`label_spaces`,
`classes`, `datasets`, `images`, `models`). Stages ask it what a label space, a dataset or a
model is, and register what they produced through it; nothing else touches these tables.

- label spaces: the built-in ones (Fashion-MNIST, ImageNet-1k and its A/R class subsets,
  shipped in `pie/data/`) and any stored one; registered once, a clash is an error;
- datasets: a packed dataset's `datasets`, `images` and `ingest_errors` rows, written in one
  transaction that replaces stale rows of the same name;
- models: one `models` row per checkpoint sidecar, and one `checkpoint_files` row per
  checkpoint: its weights file's size, mtime and sha256 as last verified.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from pie import store
from pie.errors import PieError

if TYPE_CHECKING:  # pie.checkpoints and pie.shards (webdataset) import torch; the catalog doesn't
    from pie.checkpoints import Sidecar
    from pie.shards import Packed

DATA = Path(__file__).resolve().parent / "data"


# -- label spaces ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelSpace:
    name: str
    classes: tuple[tuple[int, str | None, str], ...]  # (class_id, wnid, name)
    description: str = ""

    def id_of_wnid(self) -> dict[str, int]:
        return {wnid: cid for cid, wnid, _ in self.classes if wnid}

    def names(self) -> dict[int, str]:
        return {cid: name for cid, _, name in self.classes}


FASHION_MNIST = LabelSpace(
    "fashion-mnist",
    tuple(
        (i, None, name)
        for i, name in enumerate(
            [
                "T-shirt/top",
                "Trouser",
                "Pullover",
                "Dress",
                "Coat",
                "Sandal",
                "Shirt",
                "Sneaker",
                "Bag",
                "Ankle boot",
            ]
        )
    ),
    "Fashion-MNIST (Zalando, MIT licence): 28x28 grayscale, 10 classes",
)


def imagenet1k() -> LabelSpace:
    rows = (DATA / "imagenet1k_classes.tsv").read_text().splitlines()[1:]
    classes = tuple((int(i), wnid, name) for i, wnid, name in (r.split("\t") for r in rows))
    return LabelSpace("imagenet1k", classes, "ImageNet-1k (ILSVRC 2012), sorted-wnid order")


def wnid_subset(space: LabelSpace, filename: str) -> tuple[int, ...]:
    """The class ids of the wnids listed in `pie/data/<filename>` (ImageNet-A/R subsets)."""
    ids = space.id_of_wnid()
    return tuple(sorted(ids[w] for w in (DATA / filename).read_text().split()))


BUILTIN_SPACES = {"imagenet1k": imagenet1k, "fashion-mnist": lambda: FASHION_MNIST}


def ensure_label_space(con: duckdb.DuckDBPyConnection, space: LabelSpace) -> None:
    """Register a label space and its classes once; a clash with a stored one is an error."""
    import pyarrow as pa

    stored = store.rows(
        con, "select n_classes from label_spaces where label_space = ?", [space.name]
    )
    if stored:
        if stored[0][0] != len(space.classes):
            raise PieError(
                f"label space {space.name!r} already has {stored[0][0]} classes, "
                f"this source has {len(space.classes)}"
            )
        return
    with store.transaction(con):
        con.execute(
            "insert into label_spaces values (?, ?, ?)",
            [space.name, len(space.classes), space.description],
        )
        store.append(
            con,
            "classes",
            pa.table(
                {
                    "label_space": [space.name] * len(space.classes),
                    "class_id": [c[0] for c in space.classes],
                    "wnid": [c[1] for c in space.classes],
                    "name": [c[2] for c in space.classes],
                }
            ),
        )


def label_space(con: duckdb.DuckDBPyConnection, name: str) -> LabelSpace:
    """A stored label space, else a built-in one; unknown names are a user error."""
    classes = store.rows(
        con,
        "select class_id, wnid, name from classes where label_space = ? order by class_id",
        [name],
    )
    if classes:
        return LabelSpace(name, tuple(classes))
    if name in BUILTIN_SPACES:
        return BUILTIN_SPACES[name]()
    known = sorted({r[0] for r in store.rows(con, "select label_space from label_spaces")})
    raise PieError(f"unknown label space {name!r} (known: {', '.join(known) or 'none yet'})")


def n_classes(con: duckdb.DuckDBPyConnection, name: str) -> int:
    return len(label_space(con, name).classes)


# -- datasets -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset is: its `datasets` row, less the counts and the path."""

    name: str
    label_space: str
    kind: str  # clean | corrupted | natural_adversarial | rendition | export
    split: str  # train | eval
    source: str  # where the images came from
    parent: str | None = None
    corruption: str | None = None
    severity: int | None = None
    class_subset: tuple[int, ...] | None = None
    origin: str = "released"  # released | generated (pie corrupt) | export (pie export)
    settings: dict[str, Any] | None = None  # what produced it; a rerun must ask the same


def dataset(con: duckdb.DuckDBPyConnection, name: str) -> dict[str, Any]:
    """A stored dataset's row; an unknown name is a user error listing the known ones."""
    result = con.execute("select * from datasets where name = ?", [name])
    columns = [d[0] for d in result.description]
    found = result.fetchall()
    if not found:
        known = [r[0] for r in store.rows(con, "select name from datasets order by name")]
        raise PieError(f"unknown dataset {name!r} (known: {', '.join(known) or 'none yet'})")
    return dict(zip(columns, found[0], strict=True))


def shard_dirs(con: duckdb.DuckDBPyConnection, root: Path) -> dict[str, Path]:
    """Every dataset's shard directory (`datasets.path`, relative to the work root `root`):
    packed sets under `shards/`, exports under `exports/`."""
    return {name: root / path for name, path in store.rows(con, "select name, path from datasets")}


def image_shards(
    con: duckdb.DuckDBPyConnection, dataset: str, keys: Sequence[str]
) -> dict[str, str]:
    """key -> the shard file (a name inside the dataset's directory) of those of `keys` that
    the dataset holds."""
    return dict(
        store.rows(
            con,
            "select key, shard from images where dataset = ? and key in (select unnest(?))",
            [dataset, list(keys)],
        )
    )


def eval_datasets(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Every evaluation dataset (not training sets, not exports), by name."""
    names = store.rows(
        con, "select name from datasets where split = 'eval' and kind <> 'export' order by name"
    )
    return [dataset(con, name) for (name,) in names]


def record_dataset(
    con: duckdb.DuckDBPyConnection,
    spec: DatasetSpec,
    path: Path,
    written: Packed,
    rejected: Sequence[tuple[str, str]] = (),
) -> None:
    """Rows for shards packed under `path` (stored relative to the work root); `rejected`:
    (source, error) of inputs left out."""
    import pyarrow as pa

    n = len(written.keys)
    with store.transaction(con):
        for table, column in (
            ("images", "dataset"),
            ("ingest_errors", "dataset"),
            ("datasets", "name"),
        ):
            con.execute(f"delete from {table} where {column} = ?", [spec.name])
        con.execute(
            "insert into datasets (name, label_space, kind, split, parent, corruption, severity,"
            " n_images, class_subset, path, source, origin, settings)"
            " values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                spec.name,
                spec.label_space,
                spec.kind,
                spec.split,
                spec.parent,
                spec.corruption,
                spec.severity,
                n,
                list(spec.class_subset) if spec.class_subset else None,
                store.root_relative(con, path),
                spec.source,
                spec.origin,
                None if spec.settings is None else json.dumps(spec.settings, sort_keys=True),
            ],
        )
        store.append(
            con,
            "images",
            pa.table(
                {
                    "dataset": pa.array([spec.name] * n, pa.string()),
                    "key": pa.array(written.keys, pa.string()),
                    "label": pa.array(written.labels, pa.int32()),
                    "shard": pa.array(written.shards, pa.string()),
                }
            ),
        )
        store.append(
            con,
            "ingest_errors",
            pa.table(
                {
                    "dataset": pa.array([spec.name] * len(rejected), pa.string()),
                    "source": pa.array([s for s, _ in rejected], pa.string()),
                    "error": pa.array([e for _, e in rejected], pa.string()),
                }
            ),
        )


def is_recorded(con: duckdb.DuckDBPyConnection, name: str, path: str | Path) -> bool:
    """The dataset has rows and its shard index is on disk."""
    found = store.rows(con, "select count(*) from datasets where name = ?", [name])[0][0]
    return bool(found) and (Path(path) / "index.json").exists()


# -- models ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelRow:
    """What inference needs of a `models` row: its experiment, label space and checkpoint sha."""

    model_id: str
    experiment: str
    label_space: str
    sha256: str


def model_rows(con: duckdb.DuckDBPyConnection) -> list[ModelRow]:
    """Every registered model, by id."""
    return [
        ModelRow(*row)
        for row in store.rows(
            con, "select model_id, experiment, label_space, sha256 from models order by model_id"
        )
    ]


def register_model(con: duckdb.DuckDBPyConnection, sidecar: Sidecar) -> None:
    """One `models` row from a checkpoint sidecar (replacing a stale one); `path` is the
    sidecar's, relative to the work root."""
    with store.transaction(con):
        con.execute("delete from models where model_id = ?", [sidecar.model_id])
        con.execute(
            "insert into models (model_id, experiment, arch, label_space, method, target_sparsity,"
            " achieved_sparsity, seed, train_dataset, test_top1, path, sha256, config, level,"
            " parent_id, params, nonzero_params, size_bytes)"
            " values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                sidecar.model_id,
                sidecar.experiment,
                sidecar.arch,
                sidecar.label_space,
                sidecar.method,
                sidecar.target_sparsity,
                sidecar.achieved_sparsity,
                sidecar.seed,
                sidecar.train_dataset,
                sidecar.test_top1,
                sidecar.path,
                sidecar.sha256,
                json.dumps(
                    {
                        "config": sidecar.config,
                        "schedule": sidecar.schedule,
                        "preprocess": sidecar.preprocess,
                        "torch_seed": sidecar.torch_seed,
                        "steps": sidecar.steps,
                        "compression": sidecar.compression,
                    },
                    sort_keys=True,
                ),
                sidecar.level,
                sidecar.parent_id or None,
                sidecar.params,
                sidecar.nonzero_params,
                sidecar.size_bytes,
            ],
        )


@dataclass(frozen=True)
class CheckpointFile:
    """A `checkpoint_files` row: a checkpoint's `model.pt` as it was when last hashed."""

    model_id: str
    size: int
    mtime_ns: int
    sha256: str


def checkpoint_file(con: duckdb.DuckDBPyConnection, model_id: str) -> CheckpointFile | None:
    """The checkpoint's weights file as last verified; None if never recorded."""
    found = store.rows(
        con,
        "select model_id, size, mtime_ns, sha256 from checkpoint_files where model_id = ?",
        [model_id],
    )
    return CheckpointFile(*found[0]) if found else None


def record_checkpoint_file(con: duckdb.DuckDBPyConnection, file: CheckpointFile) -> None:
    """Record (or replace) what a checkpoint's weights file was when last verified."""
    con.execute(
        "insert or replace into checkpoint_files (model_id, size, mtime_ns, sha256)"
        " values (?, ?, ?, ?)",
        [file.model_id, file.size, file.mtime_ns, file.sha256],
    )
