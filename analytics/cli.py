"""`pie analyze`, `pie export`, `pie summary`, `pie robustness`, `pie annotate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from analytics import population
from analytics.config import AnalyzeConfig, ExportConfig
from pie import config, options
from pie.paths import open_root

app = typer.Typer()

Dataset = Annotated[str | None, typer.Option("--dataset", "-d", help="[default: config]")]
Method = Annotated[str | None, typer.Option(help="Only the populations of this method")]
Level = Annotated[
    float | None,
    typer.Option(help="Only the populations at this level (sparsity, or bits if quantised)"),
]
Sparsity = Annotated[float | None, typer.Option(help="A pruning method's level: its sparsity")]


@app.command()
def analyze(
    alpha: Annotated[float | None, typer.Option(help="Significance level")] = None,
    significance_on: Annotated[
        str | None,
        typer.Option(help="Test p-values (reference, no correction) or BH q-values: p or q"),
    ] = None,
    tie_break: Annotated[
        str | None,
        typer.Option(help="Tied modes: largest (reference) or smallest class id, or exclude"),
    ] = None,
    memory_limit: Annotated[str | None, typer.Option(help="DuckDB memory limit, e.g. 2GB")] = None,
    force: Annotated[bool, typer.Option(help="Recompute even when nothing changed")] = False,
    cfg_path: options.Config = options.DEFAULT,
    root: options.Root = None,
) -> None:
    """Compute and materialise the analysis (votes, modes, PIEs, per-class t-tests, robustness);
    does nothing when no prediction, model or setting changed since the last run."""
    from analytics import analyze as analyze_stage

    cfg = config.load(
        AnalyzeConfig,
        cfg_path,
        "analyze",
        dict(
            alpha=alpha,
            significance_on=significance_on,
            mode_tie_break=tie_break,
            memory_limit=memory_limit,
        ),
    )
    analyze_stage.main(open_root(root), cfg, force)


@app.command()
def export(
    sparsity: Annotated[float | None, typer.Option(help="Variant population's sparsity")] = None,
    method: Annotated[str | None, typer.Option(help="Variant population's method")] = None,
    level: Annotated[
        float | None,
        typer.Option(help="Variant population's level (bits if quantised) [default: sparsity]"),
    ] = None,
    dataset: Dataset = None,
    non_pie: Annotated[bool, typer.Option("--non-pie", help="Export the complement")] = False,
    manifest: Annotated[
        str | None, typer.Option(help="Manifest beside the shards: parquet or csv")
    ] = None,
    force: Annotated[bool, typer.Option(help="Rewrite an existing export")] = False,
    cfg_path: options.Config = options.DEFAULT,
    root: options.Root = None,
) -> None:
    """Write a population's PIEs (CIEs if quantised; or --non-pie, the rest) of any dataset as
    WebDataset shards with the reference's fields in each JSON, plus a manifest; registered as a
    dataset (kind export). A corrupted variant exports the corrupted images of its clean
    parent's PIEs."""
    from analytics import export as export_stage

    population.chosen_level(level, sparsity)  # both given: they must agree
    cfg = config.load(
        ExportConfig,
        cfg_path,
        "export",
        dict(
            sparsity=sparsity,
            method=method,
            level=level,
            dataset=dataset,
            non_pie=non_pie or None,
            manifest=manifest,
        ),
    )
    export_stage.main(open_root(root), cfg, force)


@app.command()
def summary(
    dataset: Dataset = None,
    method: Method = None,
    level: Level = None,
    sparsity: Sparsity = None,
    cfg_path: options.Config = options.DEFAULT,
    root: options.Root = None,
) -> None:
    """Headline numbers of every population (method, level) side by side on a clean dataset,
    beside what each compression buys (parameters, bytes on disk), and where the results are."""
    from analytics import summary as summary_stage

    cfg = config.load(AnalyzeConfig, cfg_path, "analyze", dict(dataset=dataset))
    level = population.chosen_level(level, sparsity)
    summary_stage.main(open_root(root, create=False), cfg, method, level)  # reads only


@app.command()
def robustness(
    dataset: Dataset = None,
    method: Method = None,
    level: Level = None,
    sparsity: Sparsity = None,
    cfg_path: options.Config = options.DEFAULT,
    root: options.Root = None,
) -> None:
    """Compressed vs dense top-1 per corruption and severity (wide, as papers print it), on the
    clean set and on ImageNet-A/R, with Welch tests (table robustness_tstats)."""
    from analytics import robustness as robustness_stage

    cfg = config.load(AnalyzeConfig, cfg_path, "analyze", dict(dataset=dataset))
    robustness_stage.main(
        open_root(root, create=False), cfg.experiment, cfg.dataset, sparsity, method, level
    )


@app.command()
def results(
    datasets: Annotated[
        list[str] | None,
        typer.Option("--dataset", "-d", help="[default: every dataset with predictions]"),
    ] = None,
    fmt: Annotated[str, typer.Option("--format", "-f", help="csv, parquet or json")] = "csv",
    out: Annotated[
        Path | None, typer.Option(help="Directory for the files [default: <root>/results]")
    ] = None,
    root: options.Root = None,
) -> None:
    """Per dataset, each model's top-1/top-5 in the columns of timm's results CSVs (plus method,
    sparsity, seed, and top1_diff against the dense parent): results-<dataset>.<format>."""
    from analytics import results as results_stage

    results_stage.main(open_root(root, create=False), options.split_list(datasets) or (), fmt, out)


@app.command()
def annotate(
    file: Annotated[
        Path, typer.Argument(help="CSV or Parquet: an image key or file name, then annotations")
    ],
    source: Annotated[
        str, typer.Option(help="Name of this set of annotations (replaces one of the same name)")
    ],
    dataset: Dataset = None,
    key_column: Annotated[
        str | None,
        typer.Option(help="The column naming the image \\[default: the first]", show_default=False),
    ] = None,
    bins: Annotated[
        list[str] | None,
        typer.Option("--bins", help="COLUMN=N: N quantile bins of a numeric column (repeatable)"),
    ] = None,
    cfg_path: options.Config = options.DEFAULT,
    root: options.Root = None,
) -> None:
    """Per-image annotations (known label errors, human study labels, a quality score) from a
    CSV or Parquet file; view pie_annotations tests whether the PIEs are richer in each value."""
    from analytics import annotate as annotate_stage

    cfg = config.load(AnalyzeConfig, cfg_path, "analyze", dict(dataset=dataset))
    annotate_stage.main(open_root(root), file, cfg.dataset, source, key_column, bins or ())
