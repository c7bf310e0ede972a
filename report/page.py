"""The report page: one self-contained HTML file from a `Study`, its thumbnails and figures.

`template.html` has slots (`<!--slot:name-->`) filled here: the stylesheet and script shipped
beside it (`report.css`, `report.js`), plotly.js itself (`plotly.offline.get_plotlyjs()`, so
nothing is fetched: the page works from `file://`), the figures as plotly JSON and the gallery
as one JSON blob, and the sections' HTML (tables built here, every text escaped). report.js
draws the figures and runs the gallery (filters, sort, pages) with plain DOM.
"""

from __future__ import annotations

import html
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from analytics.population import exemplars, is_dense, level_text, sort_key
from analytics.summary import bytes_text, corruption_cell, count, relative
from report import annotations, figures
from report.config import ReportConfig
from report.data import TOP_PIE_CLASSES, Study

ASSETS = Path(__file__).resolve().parent
N_NAMED = 5  # the most hurt and the most helped classes named per population


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def script_json(value: Any) -> str:
    """JSON safe inside a <script> element (no `</` closes it early)."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")


class Figures:
    """The page's figures by id: `slot` places one, `json` embeds them all."""

    def __init__(self) -> None:
        self.items: dict[str, go.Figure] = {}

    def slot(self, name: str, fig: go.Figure) -> str:
        self.items[name] = fig
        return f'<div class="figure" id="fig-{esc(name)}" data-figure="{esc(name)}"></div>'

    def json(self) -> str:
        parts = (f"{json.dumps(k)}:{fig.to_json()}" for k, fig in self.items.items())
        return ("{" + ",".join(parts) + "}").replace("</", "<\\/")


def name_of(study: Study, class_id: int) -> str:
    return study.class_names.get(class_id, str(class_id))


def top1_section(study: Study, figs: Figures) -> str:
    """Every population side by side: what the compression costs (top-1, impacted classes, PIEs
    or CIEs, the dense top-1 on them, corruption error) beside what it buys (sizes)."""
    rows = [
        (
            level_text(p["level"], p["quantised"]),
            p["method"],
            p["n_models"],
            f"{pct(p['mean_top1'])} ± {pct(p['std_top1'])}",
            "-"
            if p["n_significant_classes"] is None
            else f"{p['n_significant_classes']} / {p['n_classes_tested']}",
            "-"
            if p["n_pie"] is None
            else f"{p['n_pie']} {exemplars(p['quantised'])} ({pct(p['pie_fraction'])}%)",
            pct(p["dense_top1_on_pie"]),
            corruption_cell(p),
            count(p["mean_params"]),
            relative(count(p["mean_nonzero_params"]), p["nonzero_params_vs_dense"]),
            relative(bytes_text(p["mean_size_bytes"]), p["size_vs_dense"]),
        )
        for p in study.populations
    ]
    headers = (
        "level",
        "method",
        "models",
        "top-1 % (mean ± std)",
        "impacted classes",
        "PIEs / CIEs",
        "dense top-1 % on them",
        "CE vs dense",
        "params",
        "non-zero params (x dense)",
        "bytes on disk (x dense)",
    )
    return (
        '<section id="top1"><h2>Every population side by side</h2>'
        "<p>Each compression (method, level: the sparsity, or the bit width of a quantised"
        " population) against the dense population: what it costs (top-1, classes significantly"
        " impacted, the images whose modal label it changes, PIEs or for quantisation CIEs, and"
        " the dense top-1 on them, corruption error where corrupted variants were evaluated: ~"
        " marks a mean CE over fewer than all 15 corruptions at 5 severities, not an mCE) beside"
        " what it buys (mean parameters, non-zero parameters and bytes on disk per model).</p>"
        + table(headers, rows)
        + figs.slot("top1", figures.top1(study))
        + "</section>"
    )


def classes_section(study: Study, figs: Figures) -> str:
    if not study.class_impact:
        return '<section id="classes"><h2>Per-class impact</h2><p>No t-tests stored.</p></section>'
    rule = study.class_impact[0]
    by_population: dict[tuple, list[dict]] = defaultdict(list)
    for r in study.class_impact:
        by_population[(r["method"], r["level"])].append(r)
    blocks = []
    for rows in sorted(by_population.values(), key=lambda rows: sort_key(rows[0])):
        ranked = sorted(
            (r for r in rows if r["delta_norm_recall"] is not None),
            key=lambda r: (r["delta_norm_recall"], r["class_id"]),
        )
        n_sig = sum(r["significant"] for r in rows)

        def listing(chosen: list[dict]) -> list[tuple]:
            return [
                (
                    name_of(study, r["class_id"]),
                    f"{r['delta_norm_recall']:+.4f}",
                    num(r["p_value"]),
                    num(r["q_value"]),
                    "yes" if r["significant"] else "no",
                )
                for r in chosen
            ]

        headers = ("class", "Δ norm. recall", "p", "q", "significant")
        hurt = [r for r in ranked[:N_NAMED] if r["delta_norm_recall"] < 0]
        helped = [r for r in ranked[::-1][:N_NAMED] if r["delta_norm_recall"] > 0]
        blocks.append(
            f'<div class="population"><h3>{esc(study.name(rows[0]))}:'
            f" {n_sig} of {len(rows)} classes significant</h3>"
            f'<div class="pair"><div><h4>most hurt</h4>{table(headers, listing(hurt))}</div>'
            f"<div><h4>most helped</h4>{table(headers, listing(helped))}</div></div></div>"
        )
    test = "q-value (Benjamini-Hochberg)" if rule["significance_on"] == "q" else "p-value"
    return (
        '<section id="classes"><h2>Per-class impact</h2>'
        "<p>Δ normalised recall: a class's recall minus its population's mean top-1, compressed"
        " population minus dense (negative: the compression hurts the class more than the model"
        f" overall). Significant: two-sided Welch t-test, {test} ≤ {rule['alpha']:g}.</p>"
        + figs.slot("classes", figures.class_impact(study))
        + "".join(blocks)
        + "</section>"
    )


def pies_section(study: Study, figs: Figures) -> str:
    variants = [p for p in study.populations if not is_dense(p)]
    accuracy = {(r["method"], r["level"], r["is_pie"]): r for r in study.pie_accuracy}

    def top1_on(p: dict, is_pie: bool, column: str) -> str:
        r = accuracy.get((p["method"], p["level"], is_pie))
        return pct(r[column]) if r else "-"

    rows = [
        (
            study.name(p),
            "-" if p["n_pie"] is None else f"{p['n_pie']} {exemplars(p['quantised'])}",
            pct(p["pie_fraction"]),
            "-" if p["n_pie_tie_decided"] is None else p["n_pie_tie_decided"],
            f"{top1_on(p, True, 'baseline_top1')} / {top1_on(p, False, 'baseline_top1')}",
            f"{top1_on(p, True, 'variant_top1')} / {top1_on(p, False, 'variant_top1')}",
        )
        for p in variants
    ]
    headers = (
        "population",
        "PIEs / CIEs",
        "share %",
        "of which tie-decided",
        "dense top-1 % PIEs / rest",
        "compressed top-1 % PIEs / rest",
    )
    classes = [
        (
            study.name(r),
            name_of(study, r["class_id"]),
            r["n_pie"],
            f"{pct(r['pie_fraction'])}",
        )
        for r in study.pie_classes
    ]
    return (
        '<section id="pies"><h2>Pruning identified exemplars (PIEs)</h2>'
        "<p>An image is a PIE of a pruned population when that population's modal label differs"
        " from the dense population's; the true label plays no part. The same rule finds the"
        " CIEs (compression identified exemplars) of a quantised population. Tie-decided: a mode"
        " chosen by the tie-break rule.</p>"
        + figs.slot("pie-counts", figures.pie_counts(study))
        + table(headers, rows)
        + figs.slot("pie-top1", figures.pie_top1(study))
        + f"<h3>Classes with the most PIEs (at most {TOP_PIE_CLASSES} per population)</h3>"
        + table(("population", "class", "PIEs", "share of the class %"), classes)
        + "</section>"
    )


def annotations_section(study: Study) -> str:
    """The rows of pie_annotations most worth reading: are a population's PIEs richer in an
    annotation value than its other images?"""
    if not study.annotations:
        return (
            '<section id="annotations"><h2>Annotations</h2><p>No annotated images of'
            f" {esc(study.dataset)} in a population with PIEs (`pie annotate`).</p></section>"
        )
    rows = [
        (
            study.name(r),
            f"{r['source']}: {r['name']} = {r['value']}",
            f"{r['n_pie_with_value']} / {r['n_pie']} ({pct(r['share_pie'])}%)",
            f"{r['n_non_pie_with_value']} / {r['n_non_pie']} ({pct(r['share_non_pie'])}%)",
            num(r["odds_ratio"]),
            num(r["p_value"]),
            num(r["q_value"]),
            "yes" if r["significant"] else "no",
        )
        for r in study.annotations
    ]
    headers = ("population", "annotation", "PIEs", "non-PIEs", "odds ratio", "p", "q",
               "significant")  # fmt: skip
    rule = study.annotations[0]
    test = "q-value (Benjamini-Hochberg)" if rule["significance_on"] == "q" else "p-value"
    return (
        '<section id="annotations"><h2>Annotations</h2>'
        "<p>Per population and annotation value: the PIEs and the other images having it, out of"
        " those annotated for the name; Fisher's exact test (two-sided), significant at"
        f" {test} ≤ {rule['alpha']:g}, q across the values of one name. The"
        f" significant rows first, then by p (at most {annotations.TOP_ANNOTATIONS}).</p>"
        + table(headers, rows)
        + "</section>"
    )


def gallery_blob(study: Study, images: dict[str, str], cfg: ReportConfig) -> dict[str, Any]:
    """The gallery's data: entries as compact rows (see report.js), each image once."""
    populations = sorted(
        {(g["method"], g["level"]) for g in study.gallery},
        key=lambda p: sort_key({"method": p[0], "level": p[1]}),
    )
    index = {p: i for i, p in enumerate(populations)}
    keys = sorted({g["key"] for g in study.gallery})
    key_index = {k: i for i, k in enumerate(keys)}
    classes = sorted(
        {g["label"] for g in study.gallery}
        | {g["baseline_mode"] for g in study.gallery}
        | {g["variant_mode"] for g in study.gallery}
    )
    return {
        "pageSize": cfg.page_size,
        "total": study.n_pie_entries,
        "populations": [study.name({"method": m, "level": v}) for m, v in populations],
        "classes": {str(c): name_of(study, c) for c in classes},
        "keys": keys,
        "images": [images.get(k) for k in keys],
        # key index, true label, population, dense mode, pruned mode, dense share, pruned share,
        # l1 distance, cie rank, tie-decided (0/1); in the order of the L1 ranking
        "entries": [
            [
                key_index[g["key"]],
                g["label"],
                index[(g["method"], g["level"])],
                g["baseline_mode"],
                g["variant_mode"],
                round(g["baseline_agreement"], 4),
                round(g["variant_agreement"], 4),
                round(g["l1_distance"], 4),
                g["cie_rank"],
                int(bool(g["tie_decided"])),
            ]
            for g in study.gallery
        ],
        **annotations.gallery_fields(keys, study.annotation_labels),
    }


def gallery_section(study: Study, n_missing: int) -> str:
    shown = len(study.gallery)
    note = (
        f"{shown} of {study.n_pie_entries} PIE entries (one per population and image), the"
        " largest L1 distance between the compressed and the dense label distributions first"
        f" (CIE ranking){'' if shown == study.n_pie_entries else ' (report.max_gallery)'}."
    )
    if n_missing:
        note += f" {n_missing} images have no thumbnail: their shards were not found."
    return (
        '<section id="gallery"><h2>PIE gallery</h2>'
        f'<p id="gallery-note">{esc(note)}</p>'
        '<div class="controls">'
        '<label>class <select id="filter-class"><option value="">all classes</option>'
        "</select></label>"
        '<label>population (method, level) <select id="filter-population">'
        '<option value="">all</option></select></label>'
        '<label>annotation <select id="filter-annotation"><option value="">any</option>'
        "</select></label>"
        '<label>sort <select id="sort"><option value="l1">L1 distance (CIE rank)</option>'
        '<option value="class">true class</option><option value="key">key</option>'
        "</select></label>"
        '<span id="gallery-count"></span>'
        "</div>"
        '<div id="gallery-grid"></div>'
        '<div class="pager"><button id="page-prev">previous</button>'
        '<span id="page-info"></span><button id="page-next">next</button></div>'
        "</section>"
    )


def robustness_section(study: Study, figs: Figures) -> str:
    heatmaps = figures.corruption_heatmaps(study)
    parts = ['<section id="robustness"><h2>Robustness</h2>']
    if heatmaps:
        parts.append(
            "<p>Mean top-1 error of each compressed population on each corrupted variant of"
            f" {esc(study.dataset)}, divided by the dense population's on the same images"
            " (above 1: more fragile than dense).</p>"
        )
        parts.extend(figs.slot(name, fig) for name, fig in heatmaps.items())
    else:
        parts.append(f"<p>No corrupted variant of {esc(study.dataset)} was evaluated.</p>")
    adversarial = figures.adversarial(study)
    if adversarial is None:
        parts.append("<p>No ImageNet-A/R set was evaluated.</p>")
    else:
        parts.append(figs.slot("adversarial", adversarial))
        parts.append(
            table(
                ("dataset", "population", "models", "top-1 % (mean ± std)", "error / dense"),
                (
                    (
                        r["dataset"],
                        study.name(r),
                        r["n_models"],
                        f"{pct(r['mean_top1'])} ± {pct(r['std_top1'])}",
                        num(r["error_vs_dense"]),
                    )
                    for r in study.adversarial
                ),
            )
        )
    return "".join(parts) + "</section>"


def render(study: Study, images: dict[str, str], n_missing: int, cfg: ReportConfig) -> str:
    """The whole page."""
    figs = Figures()
    body = "".join(
        (
            top1_section(study, figs),
            classes_section(study, figs),
            pies_section(study, figs),
            annotations_section(study),
            gallery_section(study, n_missing),
            robustness_section(study, figs),
        )
    )
    title = f"pie report: {study.experiment} on {study.dataset}"
    subtitle = (
        f"{len(study.models)} models in {len(study.populations)} populations;"
        f" generated {datetime.now().isoformat(timespec='seconds')}"
    )
    slots = {
        "title": esc(title),
        "subtitle": esc(subtitle),
        "style": (ASSETS / "report.css").read_text(),
        "plotly": get_plotlyjs(),
        "body": body,
        "figures": figs.json(),
        "gallery": script_json(gallery_blob(study, images, cfg)),
        "script": (ASSETS / "report.js").read_text(),
    }
    template = (ASSETS / "template.html").read_text()
    return re.sub(r"<!--slot:(\w+)-->", lambda m: slots[m.group(1)], template)
