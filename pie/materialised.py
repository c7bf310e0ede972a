"""Materialised analysis: the heavy views computed once by `pie analyze`, read by everyone after.

The relations whose header says `-- materialised: stored` (RELATIONS, in creation order) keep
their one definition in their SQL file (pie.relations). `build` creates the table
`materialised.<name>` from that view, sorted by the keys its header states, and points the
connection's name at it (a temporary view shadowing the stored one), so each relation is
computed from the materialised ones before it. The predictions are scanned once in all: for
population_votes (`-- materialised: transient`), held in memory for the build only. The
fingerprint of the inputs (view `analysis_inputs`) is stored with every table in
`materialisations`, and with the tables `pie analyze` writes from these (TABLES: class_tstats,
robustness_tstats, annotation_tests).

Staleness: `attach` points a reader's connection at the materialised tables only when the stored
fingerprint equals the current one; otherwise the names keep resolving to the views (correct,
slower), and `is_fresh` tells readers such as `pie summary` to ask for `pie analyze`.
"""

from __future__ import annotations

import time

import duckdb

from pie import relations, store

SCHEMA = "materialised"
# Tables of the main schema that `pie analyze` writes from the relations (analytics.tstats,
# analytics.robustness, analytics.annotation_tests); their fingerprints are recorded beside the
# relations'.
TABLES = ("class_tstats", "robustness_tstats", "annotation_tests")


def marked(kind: str) -> tuple[str, ...]:
    return tuple(r.name for r in relations.relations().values() if r.materialised == kind)


# In creation order (a relation may read the ones before it).
RELATIONS = marked("stored")
# Computed before RELATIONS, in memory, for the build only: population_votes (a row per population,
# image and predicted label) is read by modal_labels and pie and then dropped; it is not stored
# (at 3x the rows of modal_labels, writing it would cost more than anything read from it saves),
# so label_votes computes from the predictions.
TRANSIENT = marked("transient")


def fingerprint(con: duckdb.DuckDBPyConnection) -> str:
    return store.rows(con, "select fingerprint from analysis_inputs")[0][0]


def stored(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    """Materialised relation -> the fingerprint it was built at (empty before any analyze)."""
    return dict(store.rows(con, "select name, fingerprint from materialisations"))


def stale(con: duckdb.DuckDBPyConnection) -> list[str]:
    """The relations and TABLES not computed from the inputs as they are now (or never)."""
    built = stored(con)
    current = fingerprint(con)
    return [name for name in (*RELATIONS, *TABLES) if built.get(name) != current]


def is_fresh(con: duckdb.DuckDBPyConnection) -> bool:
    """Every relation is materialised and every table of TABLES written, from the inputs as
    they are now."""
    return not stale(con)


def record(con: duckdb.DuckDBPyConnection, name: str, n_rows: int, seconds: float) -> None:
    """Record that `name` was (re)computed now, from the current inputs."""
    con.execute(
        "insert or replace into materialisations (name, fingerprint, n_rows, seconds)"
        " values (?, ?, ?, ?)",
        [name, fingerprint(con), n_rows, seconds],
    )


def shadow(con: duckdb.DuckDBPyConnection, name: str) -> None:
    con.execute(f"create or replace temp view {name} as select * from {SCHEMA}.{name}")


def attach(con: duckdb.DuckDBPyConnection) -> bool:
    """Point this connection's view names at the materialised tables if they are fresh;
    returns whether it did (else the views compute from the predictions)."""
    if not is_fresh(con):
        return False
    for name in RELATIONS:
        shadow(con, name)
    return True


def build(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Materialise every relation (a writable connection, inside the caller's transaction);
    returns rows per relation. The connection reads the new tables afterwards."""
    con.execute(f"create schema if not exists {SCHEMA}")
    for (name,) in store.rows(
        con, "select table_name from information_schema.tables where table_schema = ?", [SCHEMA]
    ):
        if name not in RELATIONS:  # materialised by an earlier pie, no longer
            con.execute(f"drop table {SCHEMA}.{name}")
    con.execute("delete from materialisations where name not in ?", [[*RELATIONS, *TABLES]])
    for name in TRANSIENT:
        con.execute(f"create or replace temp table _{name} as select * from {name}")
        con.execute(f"create or replace temp view {name} as select * from _{name}")
    counts = {}
    for name in RELATIONS:
        start = time.perf_counter()
        # sorted by its keys, the table is written in whole row groups (unsorted, the parallel
        # writers leave partial ones that the next checkpoint rewrites), clustered for the joins
        order = ", ".join(relations.relation(name).keys)
        counts[name] = store.rows(  # a create table ... as returns the rows it wrote
            con, f"create or replace table {SCHEMA}.{name} as select * from {name} order by {order}"
        )[0][0]
        shadow(con, name)
        record(con, name, counts[name], time.perf_counter() - start)
    for name in TRANSIENT:
        con.execute(f"drop view {name}")  # the stored view again: it computes from predictions
        con.execute(f"drop table _{name}")
    return counts
