"""`pie report`: read the study, read the gallery's thumbnails, write `<root>/report/index.html`.

The page is written beside its final name and renamed into place, so a reader never sees half a
page. Shards that cannot be found do not stop it: the gallery then shows the text of those
entries without images, and one warning line says so.
"""

from __future__ import annotations

from pathlib import Path

from pie import console, durable
from pie.paths import WorkRoot
from report import data, gallery, page
from report.config import ReportConfig


def main(root: WorkRoot, cfg: ReportConfig) -> Path:
    """Build the report of `cfg.dataset`; returns the page's path."""
    study = data.load(root, cfg)
    images, n_missing = gallery.thumbnails(study.shard_dir, study.shards, cfg.thumbnail)
    n_missing += len({g["key"] for g in study.gallery}) - len(study.shards)  # no images row
    if n_missing:
        console.err.print(
            f"warning: {n_missing} gallery images not found in {study.shard_dir}:"
            " their entries are shown without thumbnails",
            markup=False,
            soft_wrap=True,
        )
    html = page.render(study, images, n_missing, cfg)
    out = root.report / "index.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    partial.write_text(html, encoding="utf-8")
    durable.replace(partial, out)
    console.out.print(
        f"report: {out} ({len(html) / 1e6:.1f} MB; {len(study.gallery)} of"
        f" {study.n_pie_entries} PIE entries in the gallery, {len(images)} thumbnails)",
        markup=False,
        soft_wrap=True,
    )
    return out
