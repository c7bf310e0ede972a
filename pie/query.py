"""`pie sql`: ad-hoc SQL over the work root's database, opened read-only.

Results print as a table, or as CSV / JSON (records) / Parquet to stdout or `--out`.
Statements that would write are refused by DuckDB's read-only mode, and reported in one line.
"""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import duckdb
import polars as pl
from rich.console import Console
from rich.table import Table

from pie import console, store
from pie.errors import PieError
from pie.paths import WorkRoot

FORMATS = ("table", "csv", "json", "parquet")


def run(con: duckdb.DuckDBPyConnection, query: str) -> pl.DataFrame:
    """Execute `query`; DuckDB errors become one-line user errors."""
    try:
        relation = con.sql(query)
        if relation is None:
            return pl.DataFrame()
        return pl.from_arrow(relation.to_arrow_table())
    except duckdb.Error as e:
        message = str(e).splitlines()[0]
        refused = re.search(r'statement of type "(\w+)".*read-only', message)
        if refused:
            raise PieError(
                f"{refused.group(1)} refused: pie sql opens the database read-only "
                "(nothing was changed)"
            ) from None
        raise PieError(message) from None


def write(df: pl.DataFrame, fmt: str, out: Path | None, max_rows: int) -> None:
    if fmt not in FORMATS:
        raise PieError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    if fmt == "parquet" and out is None:
        raise PieError("--format parquet needs --out FILE")
    if fmt == "table":
        text = render_table(df, max_rows)
        if out is None:
            console.out.print(text)
            return
        buf = io.StringIO()
        Console(file=buf, width=200).print(text)
        out.write_text(buf.getvalue())
        return
    if out is not None and not out.parent.exists():
        raise PieError(f"cannot write {out}: directory {out.parent} does not exist")
    if fmt == "csv":
        df.write_csv(out or sys.stdout)
    elif fmt == "json":
        text = df.write_json()
        if out is None:
            sys.stdout.write(text + "\n")
        else:
            out.write_text(text + "\n")
    else:
        df.write_parquet(out)


def render_table(df: pl.DataFrame, max_rows: int) -> Table:
    table = Table(show_lines=False, caption=f"{df.height} rows" if df.height > max_rows else None)
    for name in df.columns:
        table.add_column(name, overflow="fold")
    for row in df.head(max_rows).iter_rows():
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
) -> pl.DataFrame:
    if fmt not in FORMATS:
        raise PieError(f"unknown format {fmt!r} (known: {', '.join(FORMATS)})")
    con = store.connect(root, read_only=True)
    try:
        df = run(con, query)
    finally:
        con.close()
    write(df, fmt, out, max_rows)
    return df
