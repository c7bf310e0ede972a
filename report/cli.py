"""`pie report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pie import config, options
from pie.paths import open_root
from report.config import ReportConfig

app = typer.Typer()


def default_dataset(cfg_path: str) -> str | None:
    """The `[analyze]` table's dataset when `[report]` names none (None: the default's)."""
    doc = config.read_toml(cfg_path)
    section, analyze = doc.get("report"), doc.get("analyze")
    if isinstance(section, dict) and "dataset" in section:
        return None
    return analyze.get("dataset") if isinstance(analyze, dict) else None


@app.command()
def report(
    dataset: Annotated[
        str | None, typer.Option("--dataset", "-d", help="[default: config, else analyze's]")
    ] = None,
    max_gallery: Annotated[
        int | None, typer.Option(help="PIE entries in the gallery at most, largest L1 first")
    ] = None,
    screenshot: Annotated[
        Path | None,
        typer.Option(help="Also write a PNG of the page (headless Chromium)", show_default=False),
    ] = None,
    cfg_path: options.Config = options.DEFAULT,
    root: options.Root = None,
) -> None:
    """One self-contained HTML page of the study (<root>/report/index.html): every population
    (method, level) side by side with what it buys, top-1 against sparsity, per-class impact,
    PIEs (CIEs) and their gallery, robustness. Reads the analysis of the last `pie analyze`;
    works offline, from file://."""
    from report import build

    cfg = config.load(
        ReportConfig,
        cfg_path,
        "report",
        dict(dataset=dataset or default_dataset(cfg_path), max_gallery=max_gallery),
    )
    if screenshot is not None:
        from report import browser

        browser.check_writable(screenshot)  # before the page is built, not after
    page = build.main(open_root(root, create=False), cfg)
    if screenshot is not None:
        browser.screenshot(page, screenshot)
