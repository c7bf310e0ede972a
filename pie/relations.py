"""The SQL files: one relation per file, its header read here, its creation order derived.

`sql/schema/<name>.sql` creates a table, `sql/staging/<name>.sql` (the integer-id plumbing) and
`sql/marts/<name>.sql` (what users query) hold a plain `select`, created as a view of that name.
`sql/steps/<name>.sql` are queries the writers run on what they are writing (a temporary table,
Parquet parts), never created in the database (`step`). Every file starts with the same header
lines, read by machine:

    -- grain: one row per (model, dataset, image)
    -- keys: model_id, dataset, key        (`none`: an append-only log or a single row)
    -- materialised: stored                (optional: stored | transient, see pie.materialised)

No list says in which order to create them: a relation references others by name after `from`
or `join` (CTE names aside), and the order is a topological sort of those references, the
relations taken by name, so it does not depend on how the files are listed. A reference to no
relation, or a cycle, is an error naming the files.
"""

from __future__ import annotations

import functools
import graphlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pie.config import packaged

FOLDERS = ("schema", "staging", "marts")
MATERIALISED = ("stored", "transient")
HEADER = re.compile(
    r"-- grain: (?P<grain>.+)\n-- keys: (?P<keys>.+)\n(?:-- materialised: (?P<m>\w+)\n)?"
)
CTE = re.compile(r"(?:\bwith|,)\s+(\w+)\s+as\s*\(")
# a name after from/join (not a table function, not `is distinct from`), and the names of a
# comma-separated from list
SOURCE = re.compile(
    r"(?<!distinct\s)\b(?:from|join)\s+(\w+)\b(?!\s*\()((?:\s+as\s+\w+)?(?:\s*,\s*\w+(?:\s+as\s+\w+)?)*)"
)


@dataclass(frozen=True)
class Relation:
    name: str
    folder: str  # schema (a table) | staging | marts (views)
    sql: str
    grain: str
    keys: tuple[str, ...]  # empty: none
    materialised: str | None  # stored | transient | None
    references: frozenset[str]

    @property
    def is_table(self) -> bool:
        return self.folder == "schema"

    def create(self) -> str:
        """The statement that creates it (a table's file is its own statements)."""
        return self.sql if self.is_table else f"create or replace view {self.name} as\n{self.sql}"


def strip(sql: str) -> str:
    """The SQL without comments and string literals, lowercased."""
    return re.sub(r"--[^\n]*|'(?:[^']|'')*'", " ", sql).lower()


def sources(sql: str) -> set[str]:
    """The names a query reads after `from` and `join`, its CTEs left out."""
    code = strip(sql)
    names = set()
    for first, rest in SOURCE.findall(code):
        names.add(first)
        names.update(re.findall(r",\s*(\w+)", rest))
    return names - set(CTE.findall(code))


def parse(path: Path) -> Relation:
    sql = path.read_text()
    found = HEADER.match(sql)
    if found is None:
        raise ValueError(f"{path}: the header must start `-- grain: ...` then `-- keys: ...`")
    materialised = found["m"]
    if materialised not in (None, *MATERIALISED):
        raise ValueError(f"{path}: materialised must be one of {', '.join(MATERIALISED)}")
    keys = found["keys"].strip()
    return Relation(
        name=path.stem,
        folder=path.parent.name,
        sql=sql,
        grain=found["grain"].strip(),
        keys=() if keys == "none" else tuple(k.strip() for k in keys.split(",")),
        materialised=materialised,
        references=frozenset(sources(sql) - {path.stem}),
    )


def in_order(relations: Iterable[Relation]) -> dict[str, Relation]:
    """The relations by name in creation order: each after every relation it references (a
    topological sort of the relations taken by name, so the same whatever order they come in);
    an unknown reference or a cycle is a ValueError."""
    by_name = {r.name: r for r in sorted(relations, key=lambda r: r.name)}
    for r in by_name.values():
        unknown = sorted(r.references - by_name.keys())
        if unknown:
            raise ValueError(f"{r.folder}/{r.name}.sql reads unknown relations: {unknown}")
    graph = {name: sorted(r.references) for name, r in by_name.items()}
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as e:
        raise ValueError(f"the SQL files read each other in a cycle: {e.args[1]}") from None
    return {name: by_name[name] for name in order}


def files(root: Path) -> list[Path]:
    return [p for folder in FOLDERS for p in sorted((root / folder).glob("*.sql"))]


@functools.cache
def relations() -> dict[str, Relation]:
    """Every relation of pie's SQL, by name, in creation order."""
    return in_order(parse(p) for p in files(packaged("sql")))


def relation(name: str) -> Relation:
    return relations()[name]


@functools.cache
def step(name: str) -> str:
    """The query of `sql/steps/<name>.sql`."""
    return parse(packaged("sql") / "steps" / f"{name}.sql").sql
