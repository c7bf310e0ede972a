"""The SQL files as a DAG: every header is read, the creation order is derived from what each
file reads (whatever order the files are listed in), and it binds on an empty database; an
unknown reference or a cycle is an error naming it."""

from __future__ import annotations

import random
from pathlib import Path

import duckdb
import pytest

from pie import relations
from pie.config import packaged


def write(folder: Path, name: str, sql: str, kind: str = "staging") -> Path:
    path = folder / kind / f"{name}.sql"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"-- grain: one row per thing\n-- keys: id\n{sql}")
    return path


def test_references_skip_ctes_comments_strings_and_table_functions():
    sql = """-- reads from nowhere: from predictions
    with named as (select * from models), final as (
        select n.id from named as n, classes as c, runs
        inner join datasets as d on d.x is distinct from n.y
        left join read_parquet('from images') as p using (id)
    )
    select * from final"""
    assert relations.sources(sql) == {"models", "datasets", "classes", "runs"}


def test_every_file_states_grain_and_keys_and_its_columns_exist():
    con = duckdb.connect()
    every = relations.relations()
    assert {r.folder for r in every.values()} == set(relations.FOLDERS)
    for r in every.values():
        con.execute(r.create())
        assert r.grain.startswith("one row"), r.name
        info = con.execute(f"select name from pragma_table_info('{r.name}')").fetchall()
        columns = {c for (c,) in info}
        assert set(r.keys) <= columns, r.name
    assert {r.name for r in every.values() if r.materialised == "transient"} == {"population_votes"}
    steps = sorted((packaged("sql") / "steps").glob("*.sql"))
    assert steps and all(relations.parse(p).grain.startswith("one row") for p in steps)


def test_the_derived_order_binds_on_an_empty_database():
    con = duckdb.connect()
    created = set()
    for name, r in relations.relations().items():
        assert r.references <= created, name  # each after what it reads
        con.execute(r.create())
        created.add(name)
    assert con.execute("select count(*) from pie").fetchall() == [(0,)]


def test_a_shuffled_file_order_gives_the_same_order():
    paths = relations.files(packaged("sql"))
    expected = list(relations.relations())
    for seed in range(5):
        random.Random(seed).shuffle(paths)
        assert list(relations.in_order(relations.parse(p) for p in paths)) == expected


def test_an_unknown_reference_is_an_error_naming_it(tmp_path):
    a = write(tmp_path, "a", "select * from nowhere")
    with pytest.raises(ValueError, match=r"staging/a.sql reads unknown relations: \['nowhere'\]"):
        relations.in_order([relations.parse(a)])


def test_a_cycle_is_an_error_naming_it(tmp_path):
    files = [
        write(tmp_path, "a", "select * from b"),
        write(tmp_path, "b", "with x as (select * from c) select * from x"),
        write(tmp_path, "c", "select * from a"),
        write(tmp_path, "d", "select * from a"),
        write(tmp_path, "e", "select 1 as id"),
    ]
    with pytest.raises(ValueError, match=r"in a cycle: \['(\w)', .*'\1'\]") as raised:
        relations.in_order(relations.parse(p) for p in files)
    assert "'d'" not in str(raised.value)  # d reads the cycle, it is not in it
    assert list(relations.in_order(relations.parse(p) for p in files[-1:])) == ["e"]


def test_a_file_without_the_header_is_an_error(tmp_path):
    path = tmp_path / "staging" / "x.sql"
    path.parent.mkdir()
    path.write_text("-- x: one row per thing\nselect 1")
    with pytest.raises(ValueError, match=r"must start `-- grain: \.\.\.`"):
        relations.parse(path)
