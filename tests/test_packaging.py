"""`pip install .` (not only `-e`) gives a working `pie`: the wheel carries every module, the SQL
and the configs (top-level `sql/` and `configs/` in the checkout, `pie/sql` and `pie/configs` in
the wheel), the data files, and the installed copy runs from any directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("pie", "ingest", "train", "infer", "analytics", "report")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built (no build isolation: offline) from a copy of the sources, so that the
    build leaves nothing in the checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    for package in (*PACKAGES, "sql", "configs"):
        shutil.copytree(REPO / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-cache-dir"]
    done = subprocess.run(
        [*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    (path,) = tmp.glob("pie-*.whl")
    return path


def test_wheel_ships_modules_sql_data_and_configs(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        p.relative_to(REPO).as_posix()
        for pattern in ("pie/data/*", "report/*.html", "report/*.js", "report/*.css")
        for p in REPO.glob(pattern)
    }
    expected |= {f"pie/{p.relative_to(REPO).as_posix()}" for p in REPO.glob("sql/*/*.sql")}
    expected |= {f"pie/{p.relative_to(REPO).as_posix()}" for p in REPO.glob("configs/*.toml")}
    # every module, subpackages included (pyproject lists the packages rather than finding them)
    modules = (p for package in PACKAGES for p in REPO.glob(f"{package}/**/*.py"))
    expected |= {p.relative_to(REPO).as_posix() for p in modules}
    assert {"pie/configs/fashion-mnist.toml", "pie/sql/marts/pie.sql"} <= expected
    assert len([n for n in expected if n.endswith(".sql")]) > 30
    assert expected <= names, sorted(expected - names)


def test_installed_copy_runs_from_anywhere(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # what installing a pure-Python wheel does
    probe = "\n".join(
        [
            "import pie, pie.store, pie.config, pie.catalog",
            f"assert pie.__file__.startswith({str(site)!r}), pie.__file__",
            "con = pie.store.memory()",
            "print(con.sql('select count(*) from duckdb_views() where not internal').fetchall())",
            "print(pie.config.resolve().is_file(), len(pie.catalog.imagenet1k().classes))",
            "print(pie.config.packaged('sql').relative_to(pie.__path__[0]).as_posix())",
        ]
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("PIE_CONFIG", None)
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    n_views = len([*REPO.glob("sql/staging/*.sql"), *REPO.glob("sql/marts/*.sql")])
    assert done.stdout.splitlines() == [f"[({n_views},)]", "True 1000", "sql"]
    done = subprocess.run(
        [sys.executable, "-m", "pie", "sql", "--help"], cwd=tmp_path, env=env, capture_output=True
    )
    assert done.returncode == 0 and b"Usage:" in done.stdout
