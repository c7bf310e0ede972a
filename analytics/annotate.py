"""`pie annotate FILE --dataset D --source NAME`: per-image annotations from a CSV or Parquet file.

The file names one image per row in its key column (`--key-column`, else the first) and says
something about it in every other column: each becomes rows (name = the column, value = the cell
as text) of table `annotations`, under (dataset, source). A numeric column may be cut into
quantile bins (`--bins quality=4`: values `q1/4 [lo, hi]` ... over the matched images, lo and
hi the smallest and largest value in the bin). An empty cell writes no row: the image is not
annotated for that column. A file with the key column only is a list (say, of known label
errors): every image of the dataset is annotated `listed` = `true` or `false`.

A row's image is found the way ingest made its key (pie.shards.safe_key of a path without its
extension), most specific first:

1. key: the cell is a key of the dataset (`fmnist-test-00042`, `n01440764/ILSVRC2012_val_00000293`);
2. path: the cell without its file extension, or a tail of it, is a key (`val/n01440764/
   ILSVRC2012_val_00000293.JPEG` -> `n01440764/ILSVRC2012_val_00000293`; a folder tree's
   `<class dir>/<stem>`);
3. stem: the file name without directories and extension is the last part of exactly one key
   (`ILSVRC2012_val_00000293.JPEG` -> `n01440764/ILSVRC2012_val_00000293`, the flat ImageNet
   validation folder's `<wnid>/<stem>` keys). A stem two keys share is ambiguous: reported,
   never guessed.

Rows matching no image are counted and reported with a few examples; a file none of whose rows
matches is refused in one line and nothing is written, as is a file naming one image twice.
Annotating the same (dataset, source) again replaces its rows, in one transaction. When the
analysis is up to date the Fisher tests of table annotation_tests (view pie_annotations) are
recomputed in the same transaction (analytics.annotation_tests); otherwise `pie analyze` computes
them with the rest.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from analytics.annotation_tests import annotation_tests, settings
from pie import catalog, console, store
from pie import materialised as materialise
from pie.errors import PieError
from pie.paths import WorkRoot, check_name
from pie.shards import safe_key

if TYPE_CHECKING:
    import duckdb

IMAGES = "select key from images where dataset = ? order by key"
LISTED = "listed"  # the one annotation of a file of keys only
EXAMPLES = 5  # unmatched and ambiguous rows named in the report


def read(path: Path) -> pa.Table:
    """The file as an Arrow table: Parquet (`.parquet`, `.pq`) as typed, CSV with every column as
    text (so that `00042` stays `00042`), an empty cell as null."""
    from pyarrow import csv, parquet

    if not path.is_file():
        raise PieError(f"annotation file {path} not found")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return parquet.read_table(path)
        reader = csv.open_csv(path)  # the header, for the column names
        names = reader.schema.names
        reader.close()
        return csv.read_csv(
            path,
            convert_options=csv.ConvertOptions(
                column_types={n: pa.string() for n in names}, strings_can_be_null=True
            ),
        )
    except (pa.ArrowException, OSError) as e:
        raise PieError(f"cannot read {path}: {str(e).splitlines()[0]}") from None


@dataclass
class Matching:
    """Which image key each row of the file names (None: none, or more than one)."""

    keys: list[str | None]
    how: Counter = field(default_factory=Counter)  # key | path | stem -> rows
    unmatched: list[str] = field(default_factory=list)
    ambiguous: list[tuple[str, list[str]]] = field(default_factory=list)

    @property
    def n_matched(self) -> int:
        return sum(self.how.values())


def candidates(identifier: str | None) -> list[tuple[int, str, str]]:
    """(rank, how, candidate key) that `identifier` may name, most specific first: itself, the
    tails of its path without the extension (longest first), its stem."""
    text = (identifier or "").strip()
    if not text:
        return []
    path = PurePosixPath(text.replace("\\", "/"))
    path = path.with_suffix("") if path.name else path  # `/`, `.`: no name to strip
    parts = safe_key(path.as_posix()).split("/")
    tails = [(1 + i, "path", "/".join(parts[i:])) for i in range(len(parts))]
    return [(0, "key", text), *tails, (len(parts) + 1, "stem", parts[-1])]


def match(identifiers: Sequence[str | None], con: duckdb.DuckDBPyConnection, dataset: str):
    """Match each identifier to a key of `dataset` (table images) by the rule of the module
    docstring. The keys stay in the database: the candidates of each row (a few per row of the
    file) are joined with them there, so memory follows the file, not the dataset."""
    rows = [(i, *c) for i, identifier in enumerate(identifiers) for c in candidates(identifier)]
    types = {"row": pa.int64(), "rank": pa.int64(), "how": pa.string(), "candidate": pa.string()}
    table = pa.table(
        [pa.array([r[k] for r in rows], t) for k, t in enumerate(types.values())], names=list(types)
    )
    con.register("_candidates", table)
    try:
        hits = store.rows(
            con,
            """
            with keys as (
                select key, regexp_extract(key, '[^/]*$') as stem from images where dataset = ?
            ),
            found as (
                select c.row, c.rank, c.how, k.key
                from _candidates as c
                inner join keys as k
                    on k.key = c.candidate and c.how <> 'stem'
                    or k.stem = c.candidate and c.how = 'stem'
            )
            select row, how, list(key order by key)
            from (from found qualify rank = min(rank) over (partition by row))
            group by row, how
            """,
            [dataset],
        )
    finally:
        con.unregister("_candidates")
    best = {row: (how, keys) for row, how, keys in hits}
    result = Matching([])
    for i, identifier in enumerate(identifiers):
        how, found = best.get(i, ("", []))
        if len(found) == 1:
            result.keys.append(found[0])
            result.how[how] += 1
        else:
            result.keys.append(None)
            text = (identifier or "").strip()
            if found:
                result.ambiguous.append((text, found))
            else:
                result.unmatched.append(text)
    return result


def parse_bins(specs: Sequence[str], columns: Sequence[str]) -> dict[str, int]:
    """`--bins NAME=N` options -> {column: N}; an unknown column or N < 2 is a user error."""
    bins = {}
    for spec in specs:
        name, _, n = spec.rpartition("=")
        if not name or not n.isdigit() or int(n) < 2:
            raise PieError(f"--bins {spec!r}: use COLUMN=N with N >= 2 quantile bins")
        if name not in columns:
            raise PieError(f"--bins {spec!r}: no column {name!r} (columns: {', '.join(columns)})")
        bins[name] = int(n)
    return bins


def quantile_bins(values: np.ndarray, n: int) -> list[str | None]:
    """Each value's quantile bin of `n` (NaN: None), labelled `q<i>/<n> [lo, hi]` with the
    smallest and largest value that fell in it; a value on an edge goes to the upper bin."""
    present = values[~np.isnan(values)]
    if len(present) == 0:
        return [None] * len(values)
    edges = np.quantile(present, np.linspace(0, 1, n + 1))
    index = np.searchsorted(edges[1:-1], values, side="right")
    width = len(str(n))
    labels = {}
    for i in np.unique(index[~np.isnan(values)]):
        inside = values[(index == i) & ~np.isnan(values)]
        labels[i] = f"q{i + 1:0{width}d}/{n} [{inside.min():.4g}, {inside.max():.4g}]"
    return [None if np.isnan(v) else labels[i] for v, i in zip(values, index, strict=True)]


def column_values(table: pa.Table, name: str, rows: np.ndarray, bins: int | None) -> list:
    """The text of column `name` at `rows` (null: None), or its quantile bin."""
    column = table.column(name).take(pa.array(rows))
    try:
        if bins is None:
            return column.cast(pa.string()).to_pylist()
        numbers = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        what = "numeric (--bins)" if bins else "readable as text"
        raise PieError(f"column {name!r} ({column.type}) is not {what}") from None
    return quantile_bins(numbers.astype(float), bins)


def annotation_rows(table: pa.Table, key_column: str, matching: Matching, bins: dict) -> pa.Table:
    """(key, name, value) rows for the matched rows of the file (a list: `listed` = true for
    each; `main` marks every other image of the dataset false, in the database)."""
    rows = np.array([i for i, k in enumerate(matching.keys) if k is not None], dtype=np.int64)
    matched = [matching.keys[i] for i in rows]
    columns = [c for c in table.column_names if c != key_column]
    if not columns:
        return pa.table(
            {"key": matched, "name": [LISTED] * len(matched), "value": ["true"] * len(matched)}
        )
    out: dict[str, list] = {"key": [], "name": [], "value": []}
    for name in columns:
        for key, value in zip(
            matched, column_values(table, name, rows, bins.get(name)), strict=True
        ):
            if value is not None:
                out["key"].append(key)
                out["name"].append(name)
                out["value"].append(value)
    return pa.table(out)


def examples(items: Sequence[str]) -> str:
    shown = ", ".join(repr(i) for i in items[:EXAMPLES])
    return shown + (", ..." if len(items) > EXAMPLES else "")


def check_matching(matching: Matching, path: Path, dataset: str, keys: Sequence[str]) -> None:
    """Refuse a file that names no image of the dataset (`keys`: two of its keys, to show), or
    one image in two rows."""
    if not matching.n_matched:
        raise PieError(
            f"none of the {len(matching.keys)} rows of {path.name} names an image of {dataset}"
            f" (rows: {examples(matching.unmatched or [a for a, _ in matching.ambiguous])};"
            f" its keys look like {examples(keys[:2])}): nothing written"
        )
    twice = [k for k, n in Counter(k for k in matching.keys if k is not None).items() if n > 1]
    if twice:
        raise PieError(
            f"{len(twice)} images of {dataset} are named by more than one row of {path.name}"
            f" ({examples(twice)}): give one row per image; nothing written"
        )


def report(matching: Matching, path: Path, dataset: str) -> str:
    how = ", ".join(f"{matching.how[h]} by {h}" for h in ("key", "path", "stem") if matching.how[h])
    line = (
        f"annotate: {matching.n_matched} of {len(matching.keys)} rows of {path.name} name an"
        f" image of {dataset} ({how}); {len(matching.unmatched)} match none"
    )
    if matching.unmatched:
        line += f" ({examples(matching.unmatched)})"
    line += f"; {len(matching.ambiguous)} ambiguous"
    if matching.ambiguous:
        shown = [f"{a!r} -> {' or '.join(found[:3])}" for a, found in matching.ambiguous]
        line += f", their file name ends several keys ({'; '.join(shown[:EXAMPLES])})"
    return line


def refresh_tests(con: duckdb.DuckDBPyConnection, dataset: str, source: str) -> int | None:
    """Recompute annotation_tests when the analysis is up to date (returns its rows); otherwise
    drop the source's old tests and return None: `pie analyze` computes them."""
    if not materialise.attach(con):  # `pie` then reads the stored analysis
        con.execute(
            "delete from annotation_tests where dataset = ? and source = ?", [dataset, source]
        )
        return None
    start = time.perf_counter()
    con.execute("delete from annotation_tests")
    n = annotation_tests(con, *settings(con))
    materialise.record(con, "annotation_tests", n, time.perf_counter() - start)
    return n


def main(
    root: WorkRoot,
    path: Path,
    dataset: str,
    source: str,
    key_column: str | None = None,
    bins: Sequence[str] = (),
) -> int:
    """Match the file's rows to the dataset's images and store their annotations under
    (dataset, source), replacing that source's earlier ones; returns the rows written."""
    started = datetime.now()
    check_name(source, "source name")
    table = read(path)
    key_column = key_column or table.column_names[0]
    if key_column not in table.column_names:
        raise PieError(f"{path.name} has no column {key_column!r} (--key-column)")
    binned = parse_bins(bins, [c for c in table.column_names if c != key_column])
    try:
        identifiers = table.column(key_column).cast(pa.string()).to_pylist()
    except pa.ArrowException:
        raise PieError(f"column {key_column!r} of {path.name} cannot name images") from None
    with store.connect(root, read_only=True) as con:  # match before taking the writer's lock
        catalog.dataset(con, dataset)
        keys = [k for (k,) in store.rows(con, IMAGES + " limit 2", [dataset])]
        if not keys:
            raise PieError(f"dataset {dataset} has no images")
        matching = match(identifiers, con, dataset)
    check_matching(matching, path, dataset, keys)
    rows = annotation_rows(table, key_column, matching, binned)
    with (
        store.writer_lock(root, "pie annotate"),
        store.connect(root) as con,
        store.transaction(con),
    ):
        con.execute("delete from annotations where dataset = ? and source = ?", [dataset, source])
        con.register("_annotations", rows)
        con.execute(
            "insert into annotations select ?, key, ?, name, value from _annotations",
            [dataset, source],
        )
        if rows.column("name").to_pylist()[:1] == [LISTED]:  # the rest of the dataset
            con.execute(
                f"insert into annotations select ?, key, ?, ?, 'false' from ({IMAGES})"
                " where key not in (select key from _annotations)",
                [dataset, source, LISTED, dataset],
            )
        con.unregister("_annotations")
        (written,) = store.rows(
            con,
            "select count(*) from annotations where dataset = ? and source = ?",
            [dataset, source],
        )[0]
        n_tests = refresh_tests(con, dataset, source)
        names = sorted(set(rows.column("name").to_pylist()))
        summary = (
            f"annotate: wrote {written} annotations of {dataset} from source {source}"
            f" ({', '.join(names)}); "
            + (
                "the analysis is out of date: `pie analyze` tests them"
                if n_tests is None
                else f"view pie_annotations tests them ({n_tests} rows in all)"
            )
        )
        config = {"file": str(path), "dataset": dataset, "source": source,
                      "key_column": key_column, "bins": binned}  # fmt: skip
        store.record_run(con, "annotate", None, config, summary, started)
    for line in (report(matching, path, dataset), summary):
        console.out.print(line, markup=False, soft_wrap=True)  # one line each, brackets kept
    return written
