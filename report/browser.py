"""Open a report page in headless Chromium (`opened`: the tests check pages with it) and take
screenshots.

    python -m report.browser work/report/index.html report.png [--full-page | --section ID]

Playwright drives the system's Chromium (`chromium` on PATH, Debian's package: `make browser`
installs it); nothing is downloaded. Every request the page makes other than `file:`, `data:`
and `blob:` is blocked and reported, as are console errors and uncaught exceptions: a report
that needs the network, or whose script fails, is caught here.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pie.errors import PieError

LOCAL = ("file:", "data:", "blob:", "about:")
VIEWPORT = {"width": 1280, "height": 1000}


def chromium() -> str | None:
    """The system Chromium's path, None where it is not installed."""
    return shutil.which("chromium")


@contextmanager
def opened(index: Path) -> Iterator[tuple[Any, list[str]]]:
    """(playwright page showing `index`, problems seen so far); a missing browser is a user
    error naming the fix."""
    from playwright.sync_api import sync_playwright

    executable = chromium()
    if executable is None:
        raise PieError("no `chromium` on PATH: install Debian's chromium (make browser)")
    problems: list[str] = []
    with sync_playwright() as p:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        browser = p.chromium.launch(executable_path=executable, args=args)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.on(
                "console",
                lambda m: m.type == "error" and problems.append(f"console error: {m.text}"),
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on(
                "requestfailed",
                lambda r: problems.append(f"request failed: {r.url[:120]} ({r.failure})"),
            )

            def guard(route: Any) -> None:
                url = route.request.url
                if url.startswith(LOCAL):
                    route.continue_()
                else:
                    problems.append(f"network request blocked: {url[:120]}")
                    route.abort()

            page.route("**/*", guard)
            page.goto(Path(index).resolve().as_uri(), wait_until="load")
            page.wait_for_selector("#gallery-grid")
            yield page, problems
        finally:
            browser.close()


def check_writable(out: Path) -> None:
    """Refuse, before the browser starts, a screenshot path whose directory is missing or not
    writable, or that names a directory."""
    if out.is_dir() or not out.parent.is_dir() or not os.access(out.parent, os.W_OK):
        raise PieError(f"cannot write the screenshot to {out}: not a writable file path")


def save(out: Path, png: bytes) -> None:
    """Write the PNG; a path that cannot be written is a user error in one line."""
    try:
        out.write_bytes(png)
    except OSError as e:
        raise PieError(f"cannot write the screenshot to {out}: {e.strerror}") from None


def screenshot(index: Path, out: Path, full_page: bool = False, section: str | None = None) -> Path:
    """A PNG of the page as it opens: the viewport, the whole page, or one section (an element
    id: top1, classes, pies, gallery, robustness)."""
    check_writable(out)
    with opened(index) as (page, problems):
        if section is None:
            png = page.screenshot(full_page=full_page)
        else:
            element = page.locator(f"#{section}")
            if element.count() != 1:
                raise PieError(f"the report at {index} has no section #{section}")
            png = element.screenshot()
    save(out, png)
    if problems:
        raise PieError(f"the report at {index} has problems: {problems[0]}")
    return out


USAGE = "usage: python -m report.browser INDEX.html OUT.png [--full-page | --section ID]"


def main(argv: list[str]) -> int:
    options = argv[2:]
    valid = options in ([], ["--full-page"]) or (len(options) == 2 and options[0] == "--section")
    if len(argv) < 2 or not valid:
        print(USAGE, file=sys.stderr)
        return 2
    try:
        screenshot(
            Path(argv[0]),
            Path(argv[1]),
            full_page=options == ["--full-page"],
            section=options[1] if len(options) == 2 else None,
        )
    except PieError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"screenshot: {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
