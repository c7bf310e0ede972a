"""`pie sql`: one ad-hoc query over the work root's database, which it never changes.

Only queries run: SELECT (and WITH, FROM, VALUES, DESCRIBE, SHOW, SUMMARIZE, which DuckDB parses
as SELECT) and EXPLAIN. Anything else (COPY ... TO, EXPORT DATABASE, ATTACH, INSTALL/LOAD, SET,
PRAGMA, CALL, DDL, DML) is refused in one line before it runs. A second lock sits under that
one: the connection is read-only, has DuckDB's external access switched off (no file is read or
written besides the database: `read_csv`, `COPY`, extensions all fail) and its configuration
locked (no `SET` turns access back on). The only file `pie sql` writes is `--out`.

Results print as a table (a rich table on a terminal, plain aligned text to a pipe or file, one
line per row, never folded), or as CSV / JSON (an array of records) / Parquet to stdout or
`--out`. CSV and Parquet are written from the result by a separate in-memory DuckDB connection,
so every column type DuckDB has comes out as DuckDB writes it.

When `pie analyze` is up to date, the view names resolve to its materialised tables
(pie.materialised); otherwise the views compute from the predictions (correct, slower) and a
note on stderr says so, as it does for a query over class_tstats or robustness_tstats when
they were computed from other inputs than the current ones. `--timeout SECONDS` interrupts a
query running longer. A query naming a table that does not exist gets one line naming those
that do.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import duckdb
from rich.table import Table

from pie import console, materialised, store
from pie import relations as pie_relations
from pie.errors import PieError
from pie.paths import WorkRoot

FORMATS = ("table", "csv", "json", "parquet")
DEFAULT_MAX_ROWS = 50
QUERIES = ("SELECT", "EXPLAIN")  # duckdb.StatementType names that only read


def check_query(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Exactly one statement, and a query: anything that could write is refused unrun."""
    statements = con.extract_statements(sql)  # parses only
    if not statements:
        raise PieError("empty query: give one SQL statement, e.g. 'select * from model_accuracy'")
    if len(statements) > 1:
        raise PieError(f"pie sql runs one statement at a time, got {len(statements)}")
    kind = statements[0].type.name
    if kind not in QUERIES:
        raise PieError(
            f"{kind} statement refused: pie sql runs queries only (select, with, from, describe, "
            "show, summarize, explain) on a read-only database; write results with --out FILE"
        )


MISSING = re.compile(r"Table with name (\S+) does not exist")


def relations(con: duckdb.DuckDBPyConnection) -> list[tuple[str, str]]:
    """(name, 'table' | 'view') of every relation a query can name (schema main)."""
    return store.rows(
        con,
        "select table_name, case when table_type = 'VIEW' then 'view' else 'table' end"
        " from information_schema.tables where table_schema = 'main' and table_catalog <> 'temp'"
        " order by table_name",
    )


def user_error(e: duckdb.Error, con: duckdb.DuckDBPyConnection | None = None) -> PieError:
    message = str(e).splitlines()[0]
    if isinstance(e, duckdb.PermissionException):
        return PieError(f"refused: pie sql reads the database only ({message})")
    missing = MISSING.search(message)
    if missing and con is not None:
        names = [name for name, _ in relations(con)]
        return PieError(
            f"{missing.group(1)} does not exist; tables and views: {', '.join(names)}"
            " (pie tables describes them)"
        )
    return PieError(message)


def check_out(root: WorkRoot, out: Path) -> None:
    if out.is_dir():
        raise PieError(f"cannot write {out}: it is a directory")
    if not out.parent.is_dir():
        raise PieError(f"cannot write {out}: directory {out.parent} does not exist")
    database = {root.db.resolve(), root.db.with_name(root.db.name + ".wal").resolve()}
    if out.resolve() in database:
        raise PieError(f"cannot write {out}: it is the database")


def write(relation: duckdb.DuckDBPyRelation, fmt: str, out: Path | None, max_rows: int) -> None:
    if fmt == "table":
        rows = relation.limit(max_rows + 1).fetchall()
        if out is None and console.out.is_terminal:
            console.out.print(rich_table(relation.columns, rows, max_rows))
        else:
            emit(plain_table(relation.columns, rows, max_rows), out)
    elif fmt == "json":
        records = [dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()]
        emit(json.dumps(records, default=json_default) + "\n", out)
    else:
        writer = duckdb.connect(":memory:")  # the query's connection cannot write files
        try:
            result = writer.from_arrow(relation.to_arrow_reader())
            if out is not None:
                (result.write_parquet if fmt == "parquet" else result.write_csv)(str(out))
                return
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "result.csv"
                result.write_csv(str(path))
                sys.stdout.write(path.read_text())
        finally:
            writer.close()


def emit(text: str, out: Path | None) -> None:
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)


def json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    return str(value)  # intervals, UUIDs, blobs


def caption(rows: list[tuple], max_rows: int) -> str | None:
    return f"first {max_rows} rows (--max-rows)" if len(rows) > max_rows else None


def rich_table(columns: list[str], rows: list[tuple], max_rows: int) -> Table:
    """For a terminal: rich's box table, long cells folded to fit the window."""
    table = Table(caption=caption(rows, max_rows))
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows[:max_rows]:
        table.add_row(*(format_cell(v) for v in row))
    return table


def plain_table(columns: list[str], rows: list[tuple], max_rows: int) -> str:
    """For pipes and files: one line per row, columns padded to their widest cell (numbers to
    the right), a dashed rule under the header; no width limit, nothing folded or cut."""
    shown = rows[:max_rows]
    cells = [[format_cell(v) for v in row] for row in shown]
    numeric = [
        all(isinstance(row[i], int | float | decimal.Decimal) or row[i] is None for row in shown)
        for i in range(len(columns))
    ]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]

    def line(values: list[str]) -> str:
        padded = (
            v.rjust(w) if right else v.ljust(w)
            for v, w, right in zip(values, widths, numeric, strict=True)
        )
        return "  ".join(padded).rstrip()

    lines = [line(list(columns)), "  ".join("-" * w for w in widths), *map(line, cells)]
    note = caption(rows, max_rows)
    return "\n".join([*lines, *([note] if note else [])]) + "\n"


def format_cell(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value).replace("\r", "\\r").replace("\n", "\\n")


def main(
    root: WorkRoot,
    query: str,
    fmt: str = "table",
    out: Path | None = None,
    max_rows: int | None = None,
    timeout: float | None = None,
) -> None:
    """Run one query (see the module docstring) and print or write its result."""
    if timeout is not None and timeout <= 0:
        raise PieError(f"--timeout must be a positive number of seconds, got {timeout:g}")
    if fmt not in FORMATS:  # before running anything
        raise PieError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    if fmt == "parquet" and out is None:
        raise PieError("--format parquet needs --out FILE")
    if max_rows is not None and fmt != "table":
        raise PieError("--max-rows applies to --format table only")
    if max_rows is not None and max_rows < 1:
        raise PieError(f"--max-rows must be at least 1, got {max_rows}")
    if not query.strip():
        raise PieError("empty query: give one SQL statement, e.g. 'select * from model_accuracy'")
    if out is not None:
        check_out(root, out)
    con = store.connect(root, read_only=True, sandbox=True)
    timer = threading.Timer(timeout, con.interrupt) if timeout else None
    try:
        check_query(con, query)
        fresh = materialised.attach(con)
        if timer:
            timer.start()
        write(con.sql(query), fmt, out, DEFAULT_MAX_ROWS if max_rows is None else max_rows)
        if not fresh:
            note_stale(con, query)
    except duckdb.InterruptException:
        raise PieError(f"query stopped after {timeout:g} s (--timeout)") from None
    except duckdb.Error as e:
        raise user_error(e, con) from None
    finally:
        if timer:
            timer.cancel()
        con.close()


def note_stale(con: duckdb.DuckDBPyConnection, query: str) -> None:
    """One line on stderr when the query names a stored analysis table (class_tstats,
    robustness_tstats, materialised.<relation>) computed from other inputs than the current
    ones, or a materialised relation by its view name, which then computes from the
    predictions."""
    names = materialised.stale(con)
    if not names:
        return
    stale, schema = "|".join(names), materialised.SCHEMA
    named = set(re.findall(rf"\b({stale})\b", query))
    stored = {f"{schema}.{n}" for n in re.findall(rf"\b{schema}\.({stale})\b", query)}
    tables = [name for name in materialised.TABLES if name in named] + sorted(stored)
    named -= {name.split(".")[-1] for name in stored}
    parts = []
    if tables:
        parts.append(
            f"{' and '.join(tables)} {'was' if len(tables) == 1 else 'were'} computed from"
            " other predictions, models, datasets or settings than the current ones (or never)"
        )
    if named - set(tables):
        parts.append(
            "the analysis is not materialised or out of date, so views computed from the"
            " predictions (slower)"
        )
    if parts:
        console.err.print(
            f"note: {'; '.join(parts)}: run `pie analyze`", markup=False, soft_wrap=True
        )


def tables(root: WorkRoot) -> list[tuple[str, str, int | None, str]]:
    """Every table and view: (name, kind, rows, grain); views are counted only when the
    analysis is materialised and fresh (rows then come from its tables), else rows is None."""
    con = store.connect(root, read_only=True, sandbox=True)
    try:
        fresh = materialised.attach(con)
        out = []
        for name, kind in relations(con):
            counted = kind == "table" or (fresh and name != "population_predictions")
            n = store.rows(con, f'select count(*) from "{name}"')[0][0] if counted else None
            known = pie_relations.relations().get(name)
            out.append((name, kind, n, known.grain if known else ""))
    finally:
        con.close()
    emit(plain_table(["name", "kind", "rows", "grain"], out, len(out)), None)
    if not fresh:
        console.err.print(
            "note: views are counted once `pie analyze` has materialised them", markup=False
        )
    return out
