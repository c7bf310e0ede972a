"""The DuckDB store: schema, views, bulk appends and transactions.

One process writes (DuckDB allows a single writing process), and only in short steps; parallel
workers stage Parquet parts under `parts/` that the writer loads. Analysis and `pie sql` open the
file read-only. A writing stage holds `writer_lock` for its whole run, the database only briefly.
Tables and views are the SQL files of `sql/` (pie.relations: one relation per file, created in
the order derived from what each one reads).
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb

from pie import console, provenance, relations
from pie.errors import PieError
from pie.paths import WorkRoot

if TYPE_CHECKING:  # pyarrow is imported where used: `pie sql` starts without it
    import pyarrow as pa

# Bumped whenever a table of sql/schema changes shape in a way its file cannot migrate (a column
# added `if not exists` needs no bump); stored in `settings`. A database of another version is
# refused in one line rather than failing later in the middle of a stage.
SCHEMA_VERSION = "5"
# How long a reader retries while a writer holds the database file (seconds); a writer waits
# for readers as long as it must, and says whom it waits for after WAIT_NOTICE seconds.
READ_WAIT = 30.0
WAIT_NOTICE = 2.0
LOCK_FILE = ".lock"  # `writer_lock`: the one writing stage of a work root


def connect(
    root: WorkRoot, read_only: bool = False, *, sandbox: bool = False, wait: float | None = None
) -> duckdb.DuckDBPyConnection:
    """Open the work root's database; a writable connection creates or updates schema and views.

    DuckDB lets one process open the file for writing or many for reading, not both: a writer
    (`pie infer` connects, loads, closes for each short load step) and a reader therefore meet
    now and then. Either one retries with a short backoff. A reader gives up after `wait`
    seconds (READ_WAIT) with one line naming the holder. A writer, the work root's one writer
    (`writer_lock`) in the middle of what may be a long run, waits as long as it must (or
    `wait` seconds when given): after WAIT_NOTICE seconds it says once, on stderr, whom it
    waits for (the process DuckDB names, with its command line where /proc shows it).

    sandbox=True (`pie sql`): read-only, DuckDB's external access off (no file other than the
    database is read or written, no extension installed or loaded) and the configuration locked.
    """
    read_only = read_only or sandbox
    if read_only and not root.db.exists():
        raise PieError(f"no database at {root.db}: run `pie ingest` first")
    settings = {"enable_external_access": False, "lock_configuration": True} if sandbox else {}
    started = time.monotonic()
    if wait is None:
        wait = READ_WAIT if read_only else float("inf")
    pause, told = 0.02, False
    while True:
        try:
            con = duckdb.connect(str(root.db), read_only=read_only, config=settings)
            break
        except duckdb.IOException as e:
            if "lock" not in str(e).lower():
                raise PieError(f"cannot open database {root.db}: {e}") from None
            holder = re.search(r"PID (\d+)", str(e))
            waited = time.monotonic() - started
            if waited >= wait:
                by = f" by process {holder.group(1)}" if holder else " by another process"
                raise PieError(f"database {root.db} is locked{by}: try again later") from None
            if not read_only and not told and waited >= WAIT_NOTICE:
                who = describe(int(holder.group(1))) if holder else "its readers"
                console.err.print(
                    f"waiting for {who} to close {root.db}", markup=False, soft_wrap=True
                )
                told = True
            time.sleep(pause)
            pause = min(pause * 2, 0.5)
    try:
        check_version(con, root.db)
    except PieError:
        con.close()
        raise
    if not read_only and stored_digest(con) != schema_digest():
        create_schema(con)
    return con


def describe(pid: int) -> str:
    """`process <pid> (<its command line>)`, the command where /proc shows it."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return f"process {pid}"
    command = " ".join(a.decode(errors="replace") for a in argv if a)
    command = " ".join(command.split())  # one line, whatever the arguments hold
    return f"process {pid} ({command[:200]})" if command else f"process {pid}"


@contextmanager
def writer_lock(root: WorkRoot, command: str) -> Iterator[None]:
    """Be the work root's one writing stage for the duration of the block.

    `<root>/.lock` is held with `fcntl.flock` (released by the kernel however the process ends,
    SIGKILL included) and holds `pid <pid>: <command>`; a second writer stops at once with one
    line naming the first. Readers never take it: they only meet the short load steps.
    """
    path = root.path / LOCK_FILE
    f = path.open("a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise PieError(f"{root.path} is being written by {holder}: wait for it to end") from None
    try:
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}: {command}\n")
        f.flush()
        yield
    finally:
        f.seek(0)
        f.truncate()
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def check_version(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """A database made by a pie with another schema is refused (an empty one is fine)."""
    tables = {r[0] for r in rows(con, "select table_name from information_schema.tables")}
    if "datasets" not in tables:
        return  # a new database: create_schema stamps it
    found = (
        rows(con, "select value from settings where name = 'schema_version'")
        if "settings" in tables
        else []
    )
    version = found[0][0] if found else "1"
    if version != SCHEMA_VERSION:
        raise PieError(
            f"database {path} has schema version {version}, this pie needs {SCHEMA_VERSION}: "
            "rebuild it in a new work root (or delete this one)"
        )


def memory() -> duckdb.DuckDBPyConnection:
    """An in-memory database with the full schema and views (tests, benchmarks)."""
    con = duckdb.connect(":memory:")
    create_schema(con)
    return con


@functools.cache
def schema_digest() -> str:
    """A digest of this pie's tables and views (their SQL, in creation order)."""
    parts = [SCHEMA_VERSION, *(r.create() for r in relations.relations().values())]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def stored_digest(con: duckdb.DuckDBPyConnection) -> str | None:
    """The schema digest the database was last brought up to date with (None: never)."""
    tables = {r[0] for r in rows(con, "select table_name from information_schema.tables")}
    if "settings" not in tables:
        return None
    found = rows(con, "select value from settings where name = 'schema_digest'")
    return found[0][0] if found else None


def create_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the tables that are missing (adding the columns a table's file adds to an older
    one) and (re)create every view, in creation order; stamps the schema version and digest, so
    that a writable connection skips this while the SQL is unchanged. A changed digest also
    changes analysis_inputs: the materialised analysis is rebuilt on the new views."""
    for relation in relations.relations().values():
        con.execute(relation.create())
    con.execute("insert or ignore into settings values ('schema_version', ?)", [SCHEMA_VERSION])
    con.execute("insert or replace into settings values ('schema_digest', ?)", [schema_digest()])


@contextmanager
def transaction(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """All or nothing: commit on success, roll back on any exception (Ctrl-C included)."""
    con.execute("begin transaction")
    try:
        yield con
    except BaseException:
        con.execute("rollback")
        raise
    con.execute("commit")


def append(con: duckdb.DuckDBPyConnection, table: str, frame: pa.Table) -> int:
    """Bulk-insert an Arrow table by column name; returns the number of rows."""
    if frame.num_rows == 0:
        return 0
    con.register("_append_frame", frame)
    try:
        con.execute(f"insert into {table} by name select * from _append_frame")
    finally:
        con.unregister("_append_frame")
    return frame.num_rows


PREDICTION_COLUMNS = ("model_id", "dataset", "key", "label", "pred", "top5", "p_label", "p_pred")


def insert_predictions(
    con: duckdb.DuckDBPyConnection, select: str, params: Sequence[Any] = ()
) -> int:
    """Store the rows of `select` (a query with the columns PREDICTION_COLUMNS, by name) in
    `predictions`, each with its key interned in `image_keys` and its model id in `model_ords`
    (new ones get the next ids, in sorted order), and add their counts to
    `model_class_counts`; returns the number of rows. With
    delete_predictions, the one way predictions are written: callers hold the transaction (and
    the work root's writer lock)."""
    columns = ", ".join(PREDICTION_COLUMNS)
    con.execute(
        f"create or replace temp table _incoming as select {columns} from ({select})",
        list(params),
    )
    try:
        for table, name, ordinal in (
            ("image_keys", "key", "key_id"),
            ("model_ords", "model_id", "model_ord"),
        ):
            con.execute(
                f"insert into {table} ({name}, {ordinal})"
                f" select {name}, (select coalesce(max({ordinal}), 0) from {table})"
                f" + row_number() over (order by {name})"
                f" from (select distinct {name} from _incoming anti join {table} using ({name}))"
            )
        con.execute(
            f"insert into predictions ({columns}, key_id, model_ord)"
            f" select {', '.join('i.' + c for c in PREDICTION_COLUMNS)}, k.key_id, m.model_ord"
            " from _incoming as i inner join image_keys as k using (key)"
            " inner join model_ords as m using (model_id)"
        )
        con.execute(
            f"create or replace temp table _counts as {relations.step('incoming_class_counts')}"
        )
        con.execute(
            "delete from model_class_counts as m using _counts as c"
            " where m.model_id = c.model_id and m.dataset = c.dataset"
            " and m.class_id = c.class_id"
        )
        con.execute("insert into model_class_counts select * from _counts")
        count_write(con)
        return rows(con, "select count(*) from _incoming")[0][0]
    finally:
        con.execute("drop table if exists _incoming")
        con.execute("drop table if exists _counts")


def delete_predictions(
    con: duckdb.DuckDBPyConnection, where: str, params: Sequence[Any] = ()
) -> None:
    """Delete the predictions matching `where` (a condition on model_id and dataset only) and
    their model_class_counts rows; interned keys stay."""
    for table in ("predictions", "model_class_counts"):
        con.execute(f"delete from {table} where {where}", list(params))
    count_write(con)


def count_write(con: duckdb.DuckDBPyConnection) -> None:
    """Add one to `settings.predictions_version`, the count of writes to the predictions (in
    the writer's transaction): view analysis_inputs reads it, so predictions replaced by others
    of the same row count still make the analysis stale."""
    con.execute(
        "insert or replace into settings select 'predictions_version', (coalesce((select"
        " value::bigint from settings where name = 'predictions_version'), 0) + 1)::varchar"
    )


def rows(con: duckdb.DuckDBPyConnection, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
    """Run a query and fetch everything (never leaves an open result behind)."""
    return con.execute(sql, list(params)).fetchall()


def root_relative(con: duckdb.DuckDBPyConnection, path: str | Path) -> str:
    """`path` relative to the work root (the directory of the connection's database file) when
    it lies under it, so that a copied or moved root still works; else `path` as given."""
    (db,) = rows(
        con, "select path from duckdb_databases() where database_name = current_database()"
    )[0]
    path = Path(path)
    if db is None or not path.is_absolute():  # in memory, or already relative
        return path.as_posix()
    try:
        return path.resolve().relative_to(Path(db).resolve().parent).as_posix()
    except ValueError:
        return str(path)


def record_run(
    con: duckdb.DuckDBPyConnection,
    stage: str,
    experiment: str | None,
    config: dict[str, Any],
    summary: str,
    started_at: datetime,
) -> None:
    """One row of `runs`, with the pie that ran it (pie.provenance)."""
    con.execute(
        "insert into runs (stage, experiment, config, summary, started_at, pie_version,"
        " pie_commit) values (?, ?, ?, ?, ?, ?, ?)",
        [
            stage,
            experiment,
            json.dumps(config, sort_keys=True),
            summary,
            started_at,
            provenance.version(),
            provenance.commit(),
        ],
    )


def configure(con: duckdb.DuckDBPyConnection, memory_limit: str, threads: int = 0) -> None:
    """DuckDB's memory limit (e.g. '2GB'; instead of its default of 80 % of the machine's RAM)
    and worker threads (0: one per core); a value DuckDB does not accept is refused in one line."""
    try:
        con.execute(f"set memory_limit = '{memory_limit}'")
        if threads:
            con.execute(f"set threads = {int(threads)}")
    except duckdb.Error as e:
        raise PieError(f"bad DuckDB setting ({str(e).splitlines()[0]})") from None
