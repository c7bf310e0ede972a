"""The project stands alone: no tracked file (README, docs, code, SQL, configs, Makefile,
benchmarks, tests) sends a reader outside the repository, to design files beside a checkout
(`../shared/...`) or to a path of a development machine (`/work/...`, a home directory), and
every Markdown file a tracked file names is one the repository has."""

from __future__ import annotations

import os
import posixpath
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve().relative_to(REPO).as_posix()
# a path outside the repository: design files beside a checkout, or a development machine's
# directories (an absolute /work/..., a home directory); `./work/...` (the work root) is fine
OUTSIDE = re.compile(
    r"\.\./shared\b|(?<![\w.~$}>/-])/(?:work|home|Users|root)/|\b[A-Za-z]:\\+Users\\"
)
MARKDOWN = re.compile(r"(?<![\w/.-])((?:\.{1,2}/)*[\w/.-]*\w\.md)\b")


def tracked() -> list[str]:
    """The repository's tracked files (`git ls-files`), relative to it; outside a git checkout
    (an unpacked sdist), every file but those under hidden, build and environment directories."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, text=True
        ).stdout
        return [name for name in out.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        skip = {"work", "build", "dist", "node_modules", "__pycache__"}
        names = []
        for folder, dirs, files in os.walk(REPO):
            dirs[:] = [d for d in dirs if not d.startswith(".") and d not in skip]
            names += [(Path(folder) / f).relative_to(REPO).as_posix() for f in files if f[0] != "."]
        return names


def outside(line: str, where: str, have: set[str]) -> list[str]:
    """What `line` of file `where` cites outside the repository: paths outside it, and Markdown
    files that are not in `have` (by path from the root or from `where`, or by file name)."""
    found = [m.group(0) for m in OUTSIDE.finditer(line)]
    names = {name.rsplit("/", 1)[-1] for name in have}
    for match in MARKDOWN.finditer(line):
        cited = match.group(1)
        beside = posixpath.normpath(posixpath.join(posixpath.dirname(where), cited))
        if posixpath.normpath(cited) in have or beside in have or cited in names:
            continue
        found.append(f"{cited} (not in the repository)")
    return found


def test_no_tracked_file_cites_a_path_outside_the_repository():
    files = tracked()
    assert "README.md" in files
    have = set(files)
    found = []
    for name in files:
        path = REPO / name
        if name == THIS or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue  # binary (images)
        for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
            found += [f"{name}:{number}: {hit}" for hit in outside(line, name, have)]
    assert found == []


def test_the_check_finds_the_citations_this_project_once_had():
    have = {"README.md", "docs/definitions.md", "docs/data-model.md"}
    cited = [
        ("README.md", "## Definitions (see `../shared/REFERENCE.md` of the design)"),
        ("README.md", "public columns are the ones of ../shared/DESIGN.md"),
        ("infer/predict.py", "the softmax are taken among the subset only (REFERENCE.md)."),
        ("configs/x.toml", "# not given in DESIGN.md: these follow Gale et al."),
        ("bench/x.py", "load /work/main/pie/data/x.tsv"),
        ("Makefile", "# cache in /home/alice/pie"),
        ("tests/x.py", r"open('C:\Users\alice\pie')"),
    ]
    fine = [
        ("README.md", "work/pie.duckdb, ./work/shards/ and `<root>/work/` under PIE_ROOT=/srv/pie"),
        ("README.md", "see [the definitions](docs/definitions.md) and README.md"),
        ("docs/data-model.md", "[definitions.md](definitions.md), [back](../README.md)"),
        ("pie/sql/views/pie.sql", "-- (docs/definitions.md, PIEs)"),
        ("bench/x.py", 'default=Path("/tmp/pie-bench-ingest")'),
    ]
    for where, line in cited:
        assert outside(line, where, have), line
    for where, line in fine:
        assert outside(line, where, have) == [], line
