"""`pie sql`: ad-hoc SQL over the work root's database, opened read-only.

Results print as a table, or as CSV / JSON (an array of records) / Parquet to stdout or
`--out`. DuckDB writes CSV and Parquet itself, so every column type it has comes out.
Statements that would write are refused by DuckDB's read-only mode, in one line.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import duckdb
from rich.console import Console
from rich.table import Table

from pie import console, store
from pie.errors import PieError
from pie.paths import WorkRoot

FORMATS = ("table", "csv", "json", "parquet")


def user_error(e: duckdb.Error) -> PieError:
    message = str(e).splitlines()[0]
    refused = re.search(r'statement of type "(\w+)".*read-only', message)
    if refused:
        return PieError(
            f"{refused.group(1)} refused: pie sql opens the database read-only "
            "(nothing was changed)"
        )
    return PieError(message)


def write(relation: duckdb.DuckDBPyRelation, fmt: str, out: Path | None, max_rows: int) -> None:
    if out is not None and not out.parent.is_dir():
        raise PieError(f"cannot write {out}: directory {out.parent} does not exist")
    if fmt == "table":
        rows = relation.limit(max_rows + 1).fetchall()
        table = render_table(relation.columns, rows, max_rows)
        if out is None:
            console.out.print(table)
        else:
            buf = io.StringIO()
            Console(file=buf, width=200).print(table)
            out.write_text(buf.getvalue())
    elif fmt == "json":
        records = [dict(zip(relation.columns, row, strict=True)) for row in relation.fetchall()]
        text = json.dumps(records, default=json_default) + "\n"
        if out is None:
            sys.stdout.write(text)
        else:
            out.write_text(text)
    elif fmt == "parquet":
        relation.write_parquet(str(out))
    elif out is not None:
        relation.write_csv(str(out))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "result.csv"
            relation.write_csv(str(path))
            sys.stdout.write(path.read_text())


def json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.date | dt.datetime | dt.time):
        return value.isoformat()
    return str(value)  # intervals, UUIDs, blobs


def render_table(columns: list[str], rows: list[tuple], max_rows: int) -> Table:
    caption = f"first {max_rows} rows (--max-rows)" if len(rows) > max_rows else None
    table = Table(caption=caption)
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows[:max_rows]:
        table.add_row(*(format_cell(v) for v in row))
    return table


def format_cell(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def main(
    root: WorkRoot, query: str, fmt: str = "table", out: Path | None = None, max_rows: int = 50
) -> None:
    if fmt not in FORMATS:  # before running anything
        raise PieError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    if fmt == "parquet" and out is None:
        raise PieError("--format parquet needs --out FILE")
    con = store.connect(root, read_only=True)
    try:
        relation = con.sql(query)
        if relation is not None:
            write(relation, fmt, out, max_rows)
    except duckdb.Error as e:
        raise user_error(e) from None
    finally:
        con.close()
