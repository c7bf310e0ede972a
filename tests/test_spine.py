"""The spine's user-facing rules, on tiny databases: which config file is used, experiment names,
read-only commands that create nothing, `pie sql` writing no file, fast `--help`, the Makefile."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from conftest import assert_one_line_error, pie
from rich.console import Console

from analytics.config import AnalyzeConfig
from pie import config, console, store
from pie.errors import PieError
from pie.paths import open_root
from train.config import TrainConfig

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    """The user's PIE_ROOT / PIE_CONFIG must not leak into these tests."""
    monkeypatch.delenv("PIE_ROOT", raising=False)
    monkeypatch.delenv("PIE_CONFIG", raising=False)


@pytest.fixture
def db_root(tmp_path):
    """A work root with an empty database (schema and views)."""
    root = open_root(tmp_path / "work")
    store.connect(root).close()
    return root


def analyze_dataset_config(path: Path, dataset: str) -> Path:
    path.write_text(f'name = "exp"\n[analyze]\ndataset = "{dataset}"\n')
    return path


# -- which config file ------------------------------------------------------------------------


def test_config_precedence_flag_env_root_packaged(tmp_path, monkeypatch):
    root = tmp_path / "work"
    root.mkdir()
    flag, env = tmp_path / "flag.toml", tmp_path / "env.toml"
    assert config.resolve(None, root) == config.DEFAULT_CONFIG
    assert config.DEFAULT_CONFIG.is_file()
    (root / "config.toml").write_text("")
    assert config.resolve(None, root) == root / "config.toml"
    monkeypatch.setenv("PIE_CONFIG", str(env))
    assert config.resolve(None, root) == env
    assert config.resolve(flag, root) == flag
    monkeypatch.setenv("PIE_ROOT", str(root))
    monkeypatch.delenv("PIE_CONFIG")
    assert config.resolve(None, None) == root / "config.toml"


def test_cli_picks_the_config_by_precedence(db_root, tmp_path, monkeypatch):
    """`pie summary` names the config's analyze.dataset when it is unknown: that says which
    file the command read."""
    monkeypatch.chdir(tmp_path)  # no configs/ here: the packaged default must be found anyway
    root = str(db_root.path)
    assert_one_line_error(pie("summary", "--root", root, ok=False), "'fmnist-test'")
    analyze_dataset_config(db_root.config, "from-root")
    assert_one_line_error(pie("summary", "--root", root, ok=False), "'from-root'")
    monkeypatch.setenv("PIE_ROOT", root)
    assert_one_line_error(pie("summary", ok=False), "'from-root'")
    monkeypatch.setenv("PIE_CONFIG", str(analyze_dataset_config(tmp_path / "e.toml", "from-env")))
    assert_one_line_error(pie("summary", ok=False), "'from-env'")
    flag = str(analyze_dataset_config(tmp_path / "f.toml", "from-flag"))
    assert_one_line_error(pie("summary", "-c", flag, ok=False), "'from-flag'")
    monkeypatch.delenv("PIE_ROOT")
    # --root after --config still decides where <root>/config.toml is looked for
    monkeypatch.delenv("PIE_CONFIG")
    assert_one_line_error(pie("summary", "--root", root, ok=False), "'from-root'")


def test_config_that_is_a_directory_or_not_utf8(tmp_path):
    root = str(tmp_path / "work")
    assert_one_line_error(
        pie("train", "--config", str(tmp_path), "--root", root, ok=False), "is a directory"
    )
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes('name = "caf\u00e9"\n'.encode("latin-1"))
    assert_one_line_error(
        pie("train", "--config", str(latin1), "--root", root, ok=False), "is not UTF-8"
    )
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("name", ["../../x", "/srv/x", ".hidden", "a b"])
def test_experiment_names_that_are_not_plain_names_are_refused(tmp_path, name):
    bad = tmp_path / "bad.toml"
    bad.write_text(f'name = "{name}"\n[train]\nepochs = 1\n')
    result = pie("train", "--config", str(bad), "--root", str(tmp_path / "work"), ok=False)
    assert_one_line_error(result, f"invalid experiment name {name!r}")
    with pytest.raises(PieError, match="invalid experiment name"):
        config.load(AnalyzeConfig, bad, "analyze")  # whatever the section
    assert not (tmp_path / "work").exists()


def test_experiment_name_defaults_to_a_checked_file_stem(tmp_path):
    good = tmp_path / "my-exp.toml"
    good.write_text("[train]\nepochs = 4\n")
    assert config.load(TrainConfig, good, "train").experiment == "my-exp"


def test_settings_differences_name_each_side_and_ignore_what_is_asked():
    """The one comparison of recorded vs asked settings (packed datasets, checkpoints, resume
    states, exports): tuples match their stored lists, a missing key is null, `ignore` skips."""
    stored = {"lr": 0.1, "sizes": [1, 2], "seed": None, "workers": 2}
    assert (
        config.differences(stored, {"lr": 0.1, "sizes": (1, 2), "workers": 4}, ["workers"]) is None
    )
    assert config.differences(stored, {"lr": 0.2, "sizes": (1, 2), "seed": None, "new": "x"}) == (
        "lr=0.1, new=(unset), workers=2",
        "lr=0.2, new=x, workers=(unset)",
    )


# -- read-only commands create nothing -------------------------------------------------------


@pytest.mark.parametrize("command", [["sql", "select 1"], ["summary"]])
def test_read_only_commands_need_an_existing_root(tmp_path, command):
    missing = tmp_path / "typo"
    result = pie(*command, "--root", str(missing), ok=False)
    assert_one_line_error(result, f"no work root at {missing}")
    assert not missing.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(pie(*command, "--root", str(empty), ok=False), "no database at")
    assert list(empty.iterdir()) == []


# -- pie sql ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("copy (select 1) to '{tmp}/x.csv'", "COPY statement refused"),
        ("copy datasets to '{tmp}/x.parquet' (format parquet)", "COPY statement refused"),
        ("export database '{tmp}/dump'", "EXPORT statement refused"),
        ("attach '{tmp}/other.duckdb' as other", "ATTACH statement refused"),
        ("install httpfs", "LOAD statement refused"),
        ("load parquet", "LOAD statement refused"),
        ("set enable_external_access = true", "SET statement refused"),
        ("pragma enable_profiling", "PRAGMA statement refused"),
        ("call pragma_version()", "CALL statement refused"),
        ("create temp table t as select 1", "CREATE statement refused"),
        ("insert into settings values ('x', 'y')", "INSERT statement refused"),
        ("select 1; select 2", "one statement at a time, got 2"),
        ("   ", "empty query"),
        ("/* only a comment */", "empty query"),
        ("select * from read_csv('{tmp}/../data.csv')", "refused: pie sql reads the database"),
        ("explain analyze copy (select 1) to '{tmp}/y.csv'", "refused: pie sql reads"),
    ],
)
def test_sql_writes_no_file(db_root, tmp_path, statement, message):
    target = tmp_path / "target"
    target.mkdir()
    (tmp_path / "data.csv").write_text("a\n1\n")
    before = sorted(p.name for p in db_root.path.iterdir())
    result = pie("sql", statement.format(tmp=target), "--root", str(db_root.path), ok=False)
    assert_one_line_error(result, message)
    assert list(target.iterdir()) == []
    assert sorted(p.name for p in db_root.path.iterdir()) == before


def test_sql_still_answers_queries(db_root):
    root = str(db_root.path)
    assert pie("sql", "select 6 * 7 as answer", "-f", "csv", "--root", root).stdout == (
        "answer\n42\n"
    )
    described = pie("sql", "describe datasets", "-f", "csv", "--root", root).stdout
    assert described.splitlines()[1].startswith("name,VARCHAR")
    assert "physical_plan" in pie("sql", "explain select 1", "--root", root).stdout


def test_sql_out_writes_only_the_named_file(db_root, tmp_path):
    out = tmp_path / "answer.parquet"
    pie("sql", "select 42 as n", "-f", "parquet", "-o", str(out), "--root", str(db_root.path))
    import pyarrow.parquet as pq

    assert pq.read_table(out).to_pylist() == [{"n": 42}]
    assert_one_line_error(
        pie("sql", "select 1", "-o", str(db_root.db), "--root", str(db_root.path), ok=False),
        "it is the database",
    )
    csv_rows = ("sql", "select 1", "-f", "csv", "--max-rows", "3", "--root", str(db_root.path))
    assert_one_line_error(pie(*csv_rows, ok=False), "--max-rows applies to --format table only")


def test_sql_plain_table_aligns_and_never_folds(db_root):
    sql = (
        "select * from (values ('a', 1, 2.5::double, null),"
        " ('long ' || repeat('z', 130), 10, -0.25, 'two\nlines')) t(label, n, x, note)"
    )
    out = pie("sql", sql, "--max-rows", "1", "--root", str(db_root.path)).stdout
    assert out.splitlines() == [
        "label  n    x  note",
        "-----  -  ---  ----",
        "a      1  2.5  NULL",
        "first 1 rows (--max-rows)",
    ]
    out = pie("sql", sql, "--root", str(db_root.path)).stdout.splitlines()
    width = len("long ") + 130
    assert out[0] == "label".ljust(width) + "   n      x  note"
    assert out[3] == "long " + "z" * 130 + "  10  -0.25  two\\nlines"
    assert len(out) == 4


# -- fast help, python -m pie -----------------------------------------------------------------

HELP_PROBE = """
import runpy, sys
sys.argv = ["pie", *sys.argv[1:]]
try:
    runpy.run_module("pie", run_name="__main__")
except SystemExit as e:
    assert e.code in (0, None), e.code
print("HEAVY:", ",".join(m for m in ("torch", "scipy") if m in sys.modules))
"""


def test_progress_shows_a_rate_and_only_rank_zero_draws(monkeypatch):
    """One progress bar for every stage (infer's shows images per second); under torchrun the
    other ranks draw none: they share rank 0's work."""
    drawn = io.StringIO()
    monkeypatch.setattr(console, "err", Console(file=drawn, force_terminal=True, width=100))
    with console.progress("packing", 10, "img") as advance:
        advance(10)
    monkeypatch.setenv("RANK", "1")
    with console.progress("rank one", 10) as advance:
        advance(10)
    assert "packing" in drawn.getvalue() and "img/s" in drawn.getvalue()
    assert "rank one" not in drawn.getvalue()


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["corrupt", "--help"]])
def test_help_imports_neither_torch_nor_scipy(args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", HELP_PROBE, *args], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "Usage:" in done.stdout and done.stdout.splitlines()[-1] == "HEAVY: "


def test_help_shows_the_defaults_in_brackets():
    """Help texts are rich markup: an unescaped `[default: ...]` would silently vanish."""
    assert "[default: 50]" in pie("sql", "--help").stdout
    assert "[default: ./work]" in pie("train", "--help").stdout


# -- the Makefile -----------------------------------------------------------------------------

make = pytest.mark.skipif(shutil.which("make") is None, reason="needs make")


def make_dry(*args: str, **env: str) -> list[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("PIE_ROOT", "PIE_CONFIG")}
    done = subprocess.run(
        ["make", "-n", "--no-print-directory", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**environ, **env},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@make
def test_make_leaves_root_and_config_to_the_environment():
    (line,) = [x for x in make_dry("summary", PIE_ROOT="/elsewhere") if "pie summary" in x]
    assert "--root" not in line and "--config" not in line
    (line,) = [x for x in make_dry("summary", "ROOT=/r", "CONFIG=c.toml") if "pie summary" in x]
    assert line.split()[-4:] == ["--config", "c.toml", "--root", "/r"]
    assert "rm -rf /elsewhere" in make_dry("clean", PIE_ROOT="/elsewhere")
    shown = subprocess.run(["make", "help"], cwd=REPO, capture_output=True, text=True).stdout
    assert "$PIE_ROOT" in shown and "$PIE_CONFIG" in shown


@make
def test_make_bench_runs_every_bench_script_and_only_those():
    """Every one but the GPU check, which `make gpu-check` runs (on a GPU machine), and the
    benches' shared module (`bench/synthetic.py`, which has nothing to run)."""
    listed = " ".join(make_dry("bench"))
    scripts = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "bench").glob("*.py"))
    named = sorted(w for w in listed.replace(";", " ").split() if w.startswith("bench/"))
    shared = ("bench/gpu_check.py", "bench/synthetic.py")
    assert scripts and named == [s for s in scripts if s not in shared]
    assert "__main__" not in (REPO / "bench" / "synthetic.py").read_text()
    assert make_dry("gpu-check") == ["python3 bench/gpu_check.py"]


def test_a_database_of_another_schema_version_is_refused(tmp_path):
    root = open_root(tmp_path / "work")
    old = duckdb.connect(str(root.db))  # what pie 0.1 left: tables, no schema_version
    old.execute("create table datasets (name varchar primary key, label_space varchar)")
    old.execute("create table settings (name varchar primary key, value varchar not null)")
    old.close()
    for read_only in (False, True):
        with pytest.raises(PieError, match="schema version 1, this pie needs"):
            store.connect(root, read_only=read_only)
    fresh = open_root(tmp_path / "fresh")
    store.connect(fresh).close()
    con = store.connect(fresh, read_only=True)
    assert store.rows(con, "select value from settings where name = 'schema_version'") == [
        (store.SCHEMA_VERSION,)
    ]
    con.close()
