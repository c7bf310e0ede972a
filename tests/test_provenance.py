"""Which pie made something: `pie --version`, the commit of a git checkout (and `-dirty`),
nothing outside git, and the provenance columns an older database gets on opening."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

import duckdb
from typer.testing import CliRunner

from pie import provenance, store
from pie.cli import app
from pie.paths import open_root

REPO = Path(__file__).resolve().parent.parent


def git(directory: Path, *args: str) -> str:
    command = ["git", "-C", str(directory), "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()


def test_version_prints_the_version_and_the_commit_of_the_checkout():
    head = git(REPO, "rev-parse", "HEAD")
    dirty = git(REPO, "status", "--porcelain", "--untracked-files=no")
    done = CliRunner().invoke(app, ["--version"])
    assert done.exit_code == 0, done.output
    expected = f"pie {metadata.version('pie')} (commit {head}{'-dirty' if dirty else ''})"
    assert done.output == expected + "\n"


def test_a_checkout_gives_its_head_and_marks_changes(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git(tmp_path, "add", "a.py")
    git(tmp_path, "commit", "-q", "-m", "one")
    head = git(tmp_path, "rev-parse", "HEAD")
    assert provenance.commit.__wrapped__(tmp_path) == head
    (tmp_path / "new.py").write_text("")  # untracked: not a change to the code
    assert provenance.commit.__wrapped__(tmp_path) == head
    (tmp_path / "a.py").write_text("x = 2\n")
    assert provenance.commit.__wrapped__(tmp_path) == f"{head}-dirty"
    # pie inside another repository's tree (a venv in a checkout) is not that checkout
    (tmp_path / "site").mkdir()
    assert provenance.commit.__wrapped__(tmp_path / "site") is None


def test_no_commit_outside_git_or_without_git(tmp_path, monkeypatch):
    assert provenance.commit.__wrapped__(tmp_path) is None
    monkeypatch.setenv("PATH", str(tmp_path))  # no git to run
    assert provenance.commit.__wrapped__(REPO) is None


def test_an_older_database_gets_the_provenance_columns(tmp_path):
    root = open_root(tmp_path / "work")
    store.connect(root).close()
    old = duckdb.connect(str(root.db))  # as a pie before provenance left it
    for table in ("inference_runs", "runs"):
        for column in ("pie_version", "pie_commit"):
            old.execute(f"alter table {table} drop column {column}")
    old.execute("delete from settings where name = 'schema_digest'")
    old.close()
    con = store.connect(root)
    for table in ("inference_runs", "runs"):
        columns = {c for (c,) in store.rows(con, f"select name from pragma_table_info('{table}')")}
        assert {"pie_version", "pie_commit"} <= columns, table
    con.close()
