"""Image datasets stored as Parquet: what Hugging Face `datasets` writes, or any table with a
column of encoded images, read with pyarrow one row group at a time.

Columns. The image column holds encoded bytes, either plain binary or a struct with `bytes` and
`path` (the `datasets` Image layout); by default it is the only such column, else the one named
`image`. The label column (`label` by default) holds integers or strings. An optional key
column names each sample.

Labels. With an existing label space (`imagenet1k`, `fashion-mnist` or one stored), integer
labels are its class ids and string labels its class names or wnids. Otherwise the files make a
new label space: the class names of the label column's `ClassLabel` feature in the `datasets`
metadata (the schema metadata key `huggingface`), else the sorted distinct string labels, else
integer labels 0..max named by their number. Those last two need a first pass over the label
column alone, which reads no image bytes.

Keys. The key column's value when one is given; else the stem of the image struct's `path` when
every row has one and the stems are distinct (a first pass over the paths alone); else
`<file stem>-<row in the file, 6 digits>` (`train-00000-of-00002-000042`). With a label space
of wnids (ImageNet-1k) the stem is prefixed `<wnid>/`, as the TFRecord and folder sources do,
so ImageNet-C keys match their parents'.

Each row is checked as the other sources check files: a null or empty image, bytes that are no
image pie stores (the format comes from the bytes, never from a path) or that fail to decode,
and a null, unknown or out-of-range label are each one `ingest_errors` row; the rest is packed
with its bytes untouched. Memory is bounded by a batch of rows, not by the file: scanning reads
one row group of a file per unit of work, `ROWS` rows at a time, and writing a shard reads the
image column of the row groups its samples are in and holds only that shard's images.

Parquet reads whole row groups, not single rows: an evaluation set's shards take consecutive
rows, so each row group is read about once more when packing; a training set's shards take
rows in a random order, so a row group is read by every shard holding one of its rows (up to
min(shards, rows per group) times). Cheap for datasets of a few shards or small row groups
(`datasets` writes 100 images a group); a training split of many shards in large row groups
reads its files many times over.
"""

from __future__ import annotations

import glob
import json
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ingest.sources import Entry, Reader, Rejected, Source, checked_image
from pie.catalog import DatasetSpec, LabelSpace
from pie.errors import PieError
from pie.paths import check_name
from pie.shards import Sample, safe_key

ROWS = 256  # rows decoded at a time
IMAGE_HELP = "binary, or a struct with bytes and path"


@dataclass(frozen=True)
class Columns:
    image: str
    label: str
    key: str | None
    has_path: bool  # the image column is a struct with a `path` field


def open_file(path: str) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as e:
        raise PieError(f"{path} is not a Parquet file: {e}") from None


def is_binary(t: pa.DataType) -> bool:
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


def is_image(t: pa.DataType) -> bool:
    """Encoded images: binary, or a struct whose `bytes` field is binary."""
    if pa.types.is_struct(t):
        index = t.get_field_index("bytes")
        return index >= 0 and is_binary(t.field(index).type)
    return is_binary(t)


def is_label(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)


def image_column(schema: pa.Schema, asked: str | None) -> str:
    """The asked column, else the only image-like one, else `image`."""
    if asked is not None:
        return asked
    found = [f.name for f in schema if is_image(f.type)]
    return found[0] if len(found) == 1 else "image"


def check_columns(path: str, schema: pa.Schema, cols: Columns, asked_image: bool) -> None:
    """Every column pie reads is there with a type it reads; else one line naming the file's
    columns."""
    names = ", ".join(schema.names)
    if cols.image not in schema.names:
        how = "name it with --image-column" if not asked_image else "check --image-column"
        images = [f.name for f in schema if is_image(f.type)]
        if len(images) > 1:
            how = f"{len(images)} columns hold images: choose one with --image-column"
        raise PieError(f"{path} has no image column {cols.image!r} (columns: {names}): {how}")
    kind = schema.field(cols.image).type
    if not is_image(kind):
        raise PieError(f"{path}: column {cols.image!r} is {kind}, not images ({IMAGE_HELP})")
    if cols.label not in schema.names:
        raise PieError(
            f"{path} has no label column {cols.label!r} (columns: {names}): "
            "name it with --label-column"
        )
    kind = schema.field(cols.label).type
    if not is_label(kind):
        raise PieError(f"{path}: label column {cols.label!r} is {kind}, not integers or strings")
    if cols.key is not None and cols.key not in schema.names:
        raise PieError(f"{path} has no key column {cols.key!r} (columns: {names})")


def class_names(file: pq.ParquetFile, label: str) -> list[str] | None:
    """The class names of the label column's `ClassLabel` feature in the `datasets` metadata
    (`{"info": {"features": {label: {"_type": "ClassLabel", "names": [...]}}}}`), if any."""
    raw = (file.schema_arrow.metadata or {}).get(b"huggingface")
    try:
        feature = json.loads(raw)["info"]["features"][label] if raw else None
    except (ValueError, KeyError, TypeError):
        return None
    if isinstance(feature, dict) and feature.get("_type") == "ClassLabel":
        names = feature.get("names")
        if isinstance(names, list) and names:
            return [str(n) for n in names]
    return None


@dataclass
class Survey:
    """What a first pass over the label and path columns found (no image bytes read)."""

    strings: set[str]
    max_int: int
    paths_usable: bool


def survey(files: list[str], cols: Columns, labels: bool, paths: bool) -> Survey:
    """The distinct string labels and the largest integer label (when `labels`), and whether
    every row with an image has a path and the path stems are distinct (when `paths`)."""
    strings: set[str] = set()
    max_int = -1
    stems: set[str] = set()
    usable = paths
    columns = ([cols.label] if labels else []) + ([f"{cols.image}.path"] if paths else [])
    for path in files if columns else ():
        for batch in open_file(path).iter_batches(batch_size=64 * ROWS, columns=columns):
            if labels:
                values = batch.column(0)
                if pa.types.is_dictionary(values.type):
                    values = values.cast(values.type.value_type)
                if pa.types.is_integer(values.type):
                    found = pc.max(values).as_py()
                    max_int = max(max_int, -1 if found is None else found)
                else:
                    strings.update(v for v in pc.unique(values).to_pylist() if v is not None)
            if usable:
                images = batch.column(len(columns) - 1)
                for present, name in zip(
                    images.is_valid().to_pylist(),
                    images.field("path").to_pylist(),
                    strict=True,
                ):
                    if not present:
                        continue  # a row without an image is rejected whatever its key
                    stem = safe_key(Path(name).stem) if name else ""
                    if not stem or stem in stems:
                        usable = False
                        break
                    stems.add(stem)
    return Survey(strings, max_int, usable)


def new_space(
    name: str, names: list[str] | None, found: Survey, source: str
) -> tuple[LabelSpace, dict[str, int]]:
    """A label space made from the files, and its string label -> class id mapping."""
    if names is None:
        if found.strings and found.max_int >= 0:
            raise PieError(f"{source}: the label columns mix integers and strings across files")
        names = sorted(found.strings) or [str(i) for i in range(found.max_int + 1)]
    if not names:
        raise PieError(f"{source}: no label in any row, so no classes to make a label space of")
    space = LabelSpace(name, tuple((i, None, n) for i, n in enumerate(names)), source)
    return space, {n: i for i, n in enumerate(names)}


@dataclass(frozen=True)
class ParquetReader(Reader):
    """A unit is one row group: (file, row group, its first row in the file); an entry's ref
    is (file, row group, row in the group, row in the file)."""

    cols: Columns
    space_name: str
    n_classes: int
    by_name: dict[str, int]  # string label -> class id
    wnids: dict[int, str]  # class id -> wnid, for the `<wnid>/` key prefix
    path_keys: bool

    def scan(self, unit: tuple[str, int, int], measure: bool) -> list[Entry | Rejected]:
        path, group, first = unit
        columns = [self.cols.image, self.cols.label] + ([self.cols.key] if self.cols.key else [])
        out: list[Entry | Rejected] = []
        i = 0
        for batch in open_file(path).iter_batches(ROWS, row_groups=[group], columns=columns):
            images, names = cells(batch.column(0))
            labels = batch.column(1).to_pylist()
            keys = batch.column(2).to_pylist() if self.cols.key else [None] * len(labels)
            for data, name, raw, given in zip(images, names, labels, keys, strict=True):
                row = first + i
                try:
                    ext, label = self.check(data, raw, given)
                except ValueError as e:
                    out.append(Rejected(f"{path} row {row}", str(e)))
                else:
                    key = self.key(path, row, name, label, given)
                    out.append(Entry((path, group, i, row), key, label, ext, len(data)))
                i += 1
        return out

    def check(self, data: bytes | None, raw: Any, given: Any) -> tuple[str, int]:
        """The image's extension and the class id; `ValueError` with the reason otherwise."""
        if data is None:
            raise ValueError(f"no image bytes in column {self.cols.image!r}")
        if not data:
            raise ValueError(f"empty image bytes in column {self.cols.image!r}")
        if self.cols.key and (given is None or str(given) == ""):
            raise ValueError(f"no key in column {self.cols.key!r}")
        if raw is None:
            raise ValueError(f"no label in column {self.cols.label!r}")
        label = raw if isinstance(raw, int) else self.by_name.get(raw)
        if label is None:
            raise ValueError(f"unknown label {raw!r}: not a class of {self.space_name}")
        if not 0 <= label < self.n_classes:
            raise ValueError(
                f"label {label} is outside the {self.n_classes} classes of {self.space_name}"
            )
        return checked_image(data), label

    def key(self, path: str, row: int, name: str | None, label: int, given: Any) -> str:
        if given is not None:
            return safe_key(str(given))
        stem = Path(name).stem if self.path_keys and name else f"{Path(path).stem}-{row:06d}"
        wnid = self.wnids.get(label)
        return safe_key(f"{wnid}/{stem}" if wnid else stem)

    def samples(self, entries: list[Entry]) -> Iterator[Sample]:
        """Each row group is read once for the shard, its image column only; the shard's
        images are held until written (a training shard's samples are in many row groups)."""
        wanted: dict[tuple[str, int], set[int]] = defaultdict(set)
        for e in entries:
            wanted[e.ref[:2]].add(e.ref[2])
        held: dict[tuple[str, int, int], tuple[bytes, str | None]] = {}
        for (path, group), rows in wanted.items():
            start = 0
            file = open_file(path)
            for batch in file.iter_batches(ROWS, row_groups=[group], columns=[self.cols.image]):
                images, names = cells(batch.column(0))
                for i in rows & set(range(start, start + len(images))):
                    held[path, group, i] = (images[i - start], names[i - start])
                start += len(images)
        for e in entries:
            path, group, i, row = e.ref
            data, name = held.pop((path, group, i))
            meta = {"source": f"{path} row {row}", **({"filename": name} if name else {})}
            yield Sample(e.key, e.label, data, e.ext, meta)

    def sample(self, entry: Entry) -> Sample:
        return next(self.samples([entry]))


def cells(images: pa.Array) -> tuple[list[bytes | None], list[str | None]]:
    """(encoded bytes, path) of each row of an image column."""
    if not pa.types.is_struct(images.type):
        return images.to_pylist(), [None] * len(images)
    data = pc.struct_field(images, "bytes").to_pylist()
    present = images.is_valid().to_pylist()
    data = [d if ok else None for d, ok in zip(data, present, strict=True)]
    if images.type.get_field_index("path") < 0:
        return data, [None] * len(images)
    names = pc.struct_field(images, "path").to_pylist()
    return data, [n if ok else None for n, ok in zip(names, present, strict=True)]


def parquet(
    pattern: str,
    name: str,
    label_space: LabelSpace | str,
    split: str = "eval",
    image: str | None = None,
    label: str = "label",
    key: str | None = None,
) -> Source:
    """The Parquet files matching the glob `pattern` (sorted). `label_space`: an existing label
    space, or the name of a new one made from the files. Every file's columns are checked here,
    before anything is written."""
    check_name(name, "dataset name")
    files = sorted(str(Path(p).resolve()) for p in glob.glob(pattern) if Path(p).is_file())
    if not files:
        raise PieError(f"no Parquet file matches {pattern!r}")
    opened = [open_file(p) for p in files]
    cols = Columns(image_column(opened[0].schema_arrow, image), label, key, False)
    for path, file in zip(files, opened, strict=True):
        check_columns(path, file.schema_arrow, cols, image is not None)
    types = [f.schema_arrow.field(cols.image).type for f in opened]
    has_path = all(pa.types.is_struct(t) and t.get_field_index("path") >= 0 for t in types)
    cols = Columns(cols.image, label, key, has_path)
    source = os.path.abspath(pattern)
    named = {tuple(n) for f in opened if (n := class_names(f, label)) is not None}
    if len(named) > 1:
        raise PieError(f"{pattern}: the files' metadata name different classes for {label!r}")
    names = list(next(iter(named))) if named else None
    own = isinstance(label_space, str)  # a new label space, made from the files
    found = survey(files, cols, labels=own and names is None, paths=has_path and key is None)
    if isinstance(label_space, str):
        space, by_name = new_space(label_space, names, found, source)
    else:
        space = label_space
        if names is not None and len(names) != len(space.classes):
            raise PieError(
                f"{pattern}: the metadata names {len(names)} classes for {label!r}, "
                f"label space {space.name} has {len(space.classes)}"
            )
        by_name = {n: cid for cid, _, n in space.classes} | space.id_of_wnid()
    reader = ParquetReader(
        cols,
        space.name,
        len(space.classes),
        by_name,
        {cid: wnid for cid, wnid, _ in space.classes if wnid},
        found.paths_usable,
    )

    def units() -> Iterator[tuple[str, int, int]]:
        for path in files:
            meta = open_file(path).metadata
            first = 0
            for group in range(meta.num_row_groups):
                yield path, group, first
                first += meta.row_group(group).num_rows

    spec = DatasetSpec(name, space.name, "clean", split, source)
    looked_in = f"column {cols.image!r} of the {len(files)} Parquet files matching {pattern!r}"
    options = {"image_column": cols.image, "label_column": label, "key_column": key}
    return Source(spec, space, units, reader, looked_in, options=options)
