"""The report's plots, as plotly figures built from a `Study` (rendered in the page by plotly.js).

Every figure keeps its data small: one point per model, one per (population, class), one cell
per (corruption, severity); SVG traces only (no WebGL), so the page renders anywhere. Every
population (method, level) is shown beside the others, named by `Study.name`; each variant is
compared with the dense population.
"""

from __future__ import annotations

import zlib
from collections import defaultdict

import plotly.graph_objects as go

from analytics.population import is_dense, sort_key
from report.data import Study

TEMPLATE = "plotly_white"
HURT, HELPED, PLAIN = "#c0392b", "#2471a3", "#b3b6b7"


def layout(fig: go.Figure, title: str, x: str, y: str, height: int = 420) -> go.Figure:
    fig.update_layout(
        template=TEMPLATE,
        title=title,
        height=height,
        margin=dict(l=60, r=20, t=50, b=50),
        xaxis_title=x,
        yaxis_title=y,
        legend=dict(orientation="h", y=-0.2),
    )
    return fig


def top1(study: Study) -> go.Figure:
    """Every model's top-1 against its population's target sparsity, and per pruning method the
    populations' means with one standard deviation either side, joined to the dense population's;
    a quantised population (sparsity 0 when made from dense) is one marker per method."""
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[m["sparsity"] for m in study.models],
            y=[100 * m["top1"] for m in study.models],
            mode="markers",
            name="models",
            marker=dict(color="rgba(80,80,80,0.45)", size=7),
            text=[m["model_id"] for m in study.models],
            hovertemplate="%{text}<br>sparsity %{x}<br>top-1 %{y:.2f}%<extra></extra>",
        )
    )
    dense = [p for p in study.populations if is_dense(p)]
    variants = [p for p in study.populations if not is_dense(p)]
    methods = sorted({(bool(p["quantised"]), p["method"]) for p in variants})
    for quantised, method in methods or [(False, p["method"]) for p in dense]:
        mine = [p for p in variants if p["method"] == method]
        line = mine if quantised else dense + mine
        fig.add_trace(
            go.Scatter(
                x=[p["sparsity"] for p in line],
                y=[100 * p["mean_top1"] for p in line],
                error_y=dict(array=[100 * (p["std_top1"] or 0) for p in line], visible=True),
                mode="markers" if quantised else "lines+markers",
                marker=dict(symbol="diamond", size=10) if quantised else None,
                name=f"{method}: population mean ± std",
                text=[study.name(p) for p in line],
                hovertemplate="%{text}<br>sparsity %{x}<br>mean top-1 %{y:.2f}%<extra></extra>",
            )
        )
    return layout(fig, "Top-1 against sparsity", "target sparsity", "top-1 (%)")


def jitter(class_id: int) -> float:
    """A fixed horizontal offset in [-0.35, 0.35] per class, so points of one column spread."""
    return (zlib.crc32(str(class_id).encode()) % 1000) / 1000 * 0.7 - 0.35


def class_impact(study: Study) -> go.Figure:
    """Every class's delta_norm_recall per variant population (one column each), significant
    classes in colour (red: hurt, blue: helped)."""
    columns = sorted(
        {(r["method"], r["level"]) for r in study.class_impact},
        key=lambda c: sort_key({"method": c[0], "level": c[1]}),
    )
    position = {c: i for i, c in enumerate(columns)}
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in study.class_impact:
        if not r["significant"]:
            groups["not significant"].append(r)
        elif (r["delta_norm_recall"] or 0) < 0:
            groups["significant, hurt"].append(r)
        else:
            groups["significant, helped"].append(r)
    fig = go.Figure()
    colour = {"not significant": PLAIN, "significant, hurt": HURT, "significant, helped": HELPED}
    for name in ("not significant", "significant, hurt", "significant, helped"):
        rows = groups[name]
        fig.add_trace(
            go.Scatter(
                x=[position[(r["method"], r["level"])] + jitter(r["class_id"]) for r in rows],
                y=[r["delta_norm_recall"] for r in rows],
                mode="markers",
                name=name,
                marker=dict(color=colour[name], size=6, opacity=0.8),
                text=[
                    f"{study.class_names.get(r['class_id'], r['class_id'])}"
                    f"<br>{study.name(r)}"
                    f"<br>p = {r['p_value']:.3g}, q = {r['q_value']:.3g}"
                    if r["p_value"] is not None
                    else f"{study.class_names.get(r['class_id'], r['class_id'])} (no test)"
                    for r in rows
                ],
                hovertemplate="%{text}<br>Δ normalised recall %{y:.4f}<extra></extra>",
            )
        )
    fig.add_hline(y=0, line=dict(color="#555", width=1))
    fig.update_xaxes(
        tickmode="array",
        tickvals=list(range(len(columns))),
        ticktext=[study.name({"method": m, "level": v}) for m, v in columns],
    )
    return layout(
        fig,
        "Per-class impact: normalised recall, compressed minus dense (one point per class)",
        "population",
        "Δ normalised recall",
    )


def pie_counts(study: Study) -> go.Figure:
    """PIEs (CIEs of a quantised population) per variant population, split into those a
    tie-break decided and the rest."""
    variants = [p for p in study.populations if not is_dense(p) and p["n_pie"] is not None]
    names = [study.name(p) for p in variants]
    fig = go.Figure()
    for label, values in (
        ("decided by the modes", [p["n_pie"] - p["n_pie_tie_decided"] for p in variants]),
        ("decided by a tie-break", [p["n_pie_tie_decided"] for p in variants]),
    ):
        fig.add_trace(go.Bar(x=names, y=values, name=label))
    fig.update_traces(hovertemplate="%{x}: %{y} exemplars<extra>%{fullData.name}</extra>")
    fig.update_layout(barmode="stack")
    fig.update_xaxes(type="category")
    return layout(fig, "PIEs (CIEs) per population", "population", "images", height=360)


def pie_top1(study: Study) -> go.Figure:
    """Each population's mean top-1 on the PIEs and on the other images (pie_accuracy)."""
    fig = go.Figure()
    for is_pie, subset in ((True, "PIEs"), (False, "non-PIEs")):
        rows = [r for r in study.pie_accuracy if r["is_pie"] is is_pie]
        for column, who in (("baseline_top1", "dense"), ("variant_top1", "compressed")):
            fig.add_trace(
                go.Bar(
                    x=[study.name(r) for r in rows],
                    y=[100 * r[column] for r in rows],
                    name=f"{who} on {subset}",
                    hovertemplate="%{x}: %{y:.2f}%<extra>%{fullData.name}</extra>",
                )
            )
    fig.update_xaxes(type="category")
    return layout(
        fig, "Top-1 on PIEs and on the rest", "variant population (its PIE set)", "top-1 (%)", 360
    )


def corruption_heatmaps(study: Study) -> dict[str, go.Figure]:
    """Per (origin, variant population): error relative to the dense population's on the same
    corrupted set (1 = as fragile as dense), corruption x severity."""
    cells: dict[tuple, dict[tuple, float]] = defaultdict(dict)
    for r in study.corruptions:
        if not is_dense(r) and r["error_vs_dense"] is not None:
            cells[(r["origin"], r["method"], r["level"])][(r["corruption"], r["severity"])] = r[
                "error_vs_dense"
            ]
    figures = {}
    for (origin, method, level), values in cells.items():  # in the order of study.corruptions
        corruptions = sorted({c for c, _ in values})
        severities = sorted({s for _, s in values})
        z = [[values.get((c, s)) for s in severities] for c in corruptions]
        fig = go.Figure(
            go.Heatmap(
                z=z,
                x=[str(s) for s in severities],
                y=corruptions,
                colorscale="RdBu_r",
                zmid=1.0,
                text=[[f"{v:.3f}" if v is not None else "" for v in row] for row in z],
                texttemplate="%{text}",
                hovertemplate="%{y}, severity %{x}: error x %{z:.3f} of dense<extra></extra>",
                colorbar=dict(title="error / dense"),
            )
        )
        fig.update_xaxes(type="category")
        layout(
            fig,
            f"{study.name({'method': method, 'level': level})} ({origin} corruptions): error"
            " relative to dense",
            "severity",
            "",
            height=max(260, 60 + 34 * len(corruptions)),
        )
        figures[f"corruption-{origin}-{method}-{level:g}"] = fig
    return figures


def adversarial(study: Study) -> go.Figure | None:
    """Mean top-1 of every population on each ImageNet-A/R set present (None: none is)."""
    if not study.adversarial:
        return None
    fig = go.Figure()
    for name in sorted({r["dataset"] for r in study.adversarial}):
        rows = [r for r in study.adversarial if r["dataset"] == name]
        fig.add_trace(
            go.Bar(
                x=[study.name(r) for r in rows],
                y=[100 * r["mean_top1"] for r in rows],
                error_y=dict(array=[100 * (r["std_top1"] or 0) for r in rows], visible=True),
                name=name,
                hovertemplate="%{x}: %{y:.2f}%<extra>%{fullData.name}</extra>",
            )
        )
    fig.update_xaxes(type="category")
    return layout(fig, "ImageNet-A / ImageNet-R: top-1", "population", "top-1 (%)", 360)
