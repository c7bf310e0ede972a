"""`pie ingest ...` (one command per source) and `pie corrupt`."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer

from ingest.config import CorruptConfig, IngestConfig
from ingest.corruption_tables import BENCHMARK, CORRUPTIONS
from pie import config, options
from pie.errors import PieError
from pie.paths import open_root

# Stage modules are imported inside the commands: `pie --help` and `pie sql` stay fast.

app = typer.Typer()
ingest_app = typer.Typer(
    help="Pack image sources into WebDataset shards under <root>/shards.", no_args_is_help=True
)
app.add_typer(ingest_app, name="ingest")

Name = Annotated[str, typer.Option("--name", help="Dataset name")]
Source = Annotated[Path, typer.Argument(help="Source directory")]
Split = Annotated[str, typer.Option(help="train (written in a seeded random order) or eval")]
Workers = Annotated[
    int | None, typer.Option(help="Worker processes (the bytes do not depend on it)")
]
Seed = Annotated[int | None, typer.Option(help="Order of a training set's samples")]
MaxCount = Annotated[int | None, typer.Option(help="Samples per shard at most")]
MaxSize = Annotated[int | None, typer.Option(help="Image bytes per shard at most")]


def load(
    cfg_path: str,
    workers: int | None = None,
    seed: int | None = None,
    shard_max_count: int | None = None,
    shard_max_size: int | None = None,
    **overrides,
) -> IngestConfig:
    overrides |= dict(
        workers=workers, seed=seed, shard_max_count=shard_max_count, shard_max_size=shard_max_size
    )
    return config.load(IngestConfig, cfg_path, "ingest", overrides)


def check_split(split: str, seed: int | None) -> None:
    """--split is train or eval; --seed orders a training set only."""
    if split not in ("train", "eval"):
        raise PieError(f"--split must be train or eval, got {split!r}")
    if seed is not None and split != "train":
        raise PieError("--seed orders a training set: evaluation sets stay sorted (--split eval)")


@ingest_app.command("fashion-mnist")
def fashion_mnist(
    directory: Annotated[
        str | None, typer.Option("--dir", help="Directory of the gzipped IDX files")
    ] = None,
    limit: Annotated[
        int | None, typer.Option(help="Keep the first N images of each split (0 = all)")
    ] = None,
    workers: Workers = None,
    seed: Seed = None,
    shard_max_count: MaxCount = None,
    shard_max_size: MaxSize = None,
    cfg_path: options.Config = options.DEFAULT,
    root: options.Root = None,
) -> None:
    """The embedded Fashion-MNIST (Debian dataset-fashion-mnist): fmnist-train, fmnist-test."""
    from ingest import pack, sources

    cfg = load(
        cfg_path,
        workers,
        seed,
        shard_max_count,
        shard_max_size,
        fashion_mnist_dir=directory,
        limit=limit,
    )
    found = [sources.fashion_mnist(Path(cfg.fashion_mnist_dir), s) for s in ("train", "test")]
    pack.main(open_root(root), cfg, found)


@ingest_app.command("imagefolder")
def imagefolder(
    directory: Source,
    name: Name,
    label_space: Annotated[
        str, typer.Option(help="'imagenet1k' (class dirs are wnids) or a new label space name")
    ] = "imagenet1k",
    split: Split = "eval",
    workers: Workers = None,
    seed: Seed = None,
    shard_max_count: MaxCount = None,
    shard_max_size: MaxSize = None,
    cfg_path: options.Config = options.DEFAULT,
    root: options.Root = None,
) -> None:
    """An ImageFolder tree <class>/<image> (ImageNet train/val and the like); JPEGs pass through."""
    from ingest import pack, sources

    check_split(split, seed)
    found = [sources.image_folder(directory, name, label_space, split)]  # checks the name
    pack.main(
        open_root(root), load(cfg_path, workers, seed, shard_max_count, shard_max_size), found
    )


def imagenet_subset(variant: str, what: str) -> None:
    """`pie ingest imagenet-<variant>`: a <wnid>/<image> tree of 200 ImageNet-1k classes."""

    @ingest_app.command(
        f"imagenet-{variant}",
        help=f"{what} (<wnid>/<image>, 200 classes): scored among its 200 classes' logits.",
    )
    def command(
        directory: Source,
        name: Name = f"imagenet-{variant}",
        workers: Workers = None,
        shard_max_count: MaxCount = None,
        shard_max_size: MaxSize = None,
        cfg_path: options.Config = options.DEFAULT,
        root: options.Root = None,
    ) -> None:
        from ingest import pack, sources

        found = [sources.imagenet_subset(directory, name, variant)]  # checks the name
        cfg = load(cfg_path, workers, None, shard_max_count, shard_max_size)
        pack.main(open_root(root), cfg, found)


imagenet_subset("a", "ImageNet-A")
imagenet_subset("r", "ImageNet-R renditions")


@ingest_app.command("imagenet-c")
def imagenet_c(
    directory: Source,
    parent: Annotated[str, typer.Option(help="The clean dataset the tree corrupts")],
    workers: Workers = None,
    shard_max_count: MaxCount = None,
    shard_max_size: MaxSize = None,
    cfg_path: options.Config = options.DEFAULT,
    root: options.Root = None,
) -> None:
    """The released ImageNet-C tree <corruption>/<severity>/<wnid>/<image>: one dataset each,
    named <parent>-released-<corruption>-<severity> (pie corrupt's own are <parent>-<c>-<s>)."""
    from ingest import pack, sources
    from pie import catalog, store
    from pie.paths import check_name

    check_name(parent, "--parent dataset name")
    work = open_root(root)
    with store.connect(work, read_only=True) as con:
        space = catalog.label_space(con, catalog.dataset(con, parent)["label_space"])
    pack.main(
        work,
        load(cfg_path, workers, None, shard_max_count, shard_max_size),
        sources.imagenet_c(directory, parent, space),
    )


@ingest_app.command("csv")
def csv_manifest(
    manifest: Annotated[Path, typer.Argument(help="CSV with columns path,label[,key]")],
    name: Name,
    label_space: Annotated[str, typer.Option(help="imagenet1k, fashion-mnist or a stored one")],
    split: Split = "eval",
    workers: Workers = None,
    seed: Seed = None,
    shard_max_count: MaxCount = None,
    shard_max_size: MaxSize = None,
    cfg_path: options.Config = options.DEFAULT,
    root: options.Root = None,
) -> None:
    """A CSV manifest of image paths and labels."""
    from ingest import pack, sources
    from pie import catalog, store
    from pie.paths import check_name

    check_name(name, "dataset name")
    check_split(split, seed)
    work = open_root(root)
    if label_space in catalog.BUILTIN_SPACES:
        space = catalog.BUILTIN_SPACES[label_space]()
    else:
        with store.connect(work, read_only=True) as con:
            space = catalog.label_space(con, label_space)
    pack.main(
        work,
        load(cfg_path, workers, seed, shard_max_count, shard_max_size),
        [sources.csv_manifest(manifest, name, space, split)],
    )


@ingest_app.command("imagenet-val")
def imagenet_val(
    directory: Source,
    labels: Annotated[
        Path,
        typer.Option(help="LOC_val_solution.csv or a filename,wnid CSV: each file's class"),
    ],
    name: Name = "imagenet-val",
    workers: Workers = None,
    shard_max_count: MaxCount = None,
    shard_max_size: MaxSize = None,
    cfg_path: options.Config = options.DEFAULT,
    root: options.Root = None,
) -> None:
    """The flat ImageNet validation folder (ILSVRC2012_val_*.JPEG) with a file-to-wnid mapping;
    keys <wnid>/<file stem>, as an ImageFolder tree of it would have."""
    from ingest import pack, sources

    found = [sources.imagenet_val(directory, labels, name)]  # checks the name
    cfg = load(cfg_path, workers, None, shard_max_count, shard_max_size)
    pack.main(open_root(root), cfg, found)


@ingest_app.command("tfrecord")
def tfrecord(
    pattern: Annotated[str, typer.Argument(help="Glob of TFRecord files, quoted: 'dir/train-*'")],
    name: Name,
    split: Split = "eval",
    label_offset: Annotated[
        int,
        typer.Option(
            help="Subtracted from image/class/label (TF-Slim's labels are 1-based: 1); "
            "TFDS's 'label' is 0-based and never shifted"
        ),
    ] = 1,
    workers: Workers = None,
    seed: Seed = None,
    shard_max_count: MaxCount = None,
    shard_max_size: MaxSize = None,
    cfg_path: options.Config = options.DEFAULT,
    root: options.Root = None,
) -> None:
    """ImageNet TFRecords (TF-Slim or TFDS: image/encoded or image, image/class/label or label),
    read without TensorFlow, every record's CRC checked; ImageNet-1k labels."""
    from ingest import pack
    from ingest import tfrecord as tfr

    check_split(split, seed)
    found = [tfr.tfrecord(pattern, name, split, label_offset)]  # checks the name
    cfg = load(cfg_path, workers, seed, shard_max_count, shard_max_size)
    pack.main(open_root(root), cfg, found)


@ingest_app.command("parquet")
def parquet(
    pattern: Annotated[str, typer.Argument(help="Glob of Parquet files, quoted: 'data/train-*'")],
    name: Name,
    label_space: Annotated[
        str | None,
        typer.Option(
            help="imagenet1k, fashion-mnist or a stored one (labels are its class ids, names or "
            "wnids); another name makes a new label space from the files \\[default: --name]",
            show_default=False,
        ),
    ] = None,
    image_column: Annotated[
        str | None,
        typer.Option(
            help="Encoded images: binary, or a struct with bytes and path (the `datasets` "
            "layout) \\[default: the only such column, else 'image']",
            show_default=False,
        ),
    ] = None,
    label_column: Annotated[str, typer.Option(help="Integer or string labels")] = "label",
    key_column: Annotated[
        str | None,
        typer.Option(
            help="Sample keys \\[default: the image path's stem when every row has one and they "
            "are distinct, else <file stem>-<row>; prefixed <wnid>/ with ImageNet labels]",
            show_default=False,
        ),
    ] = None,
    split: Split = "eval",
    workers: Workers = None,
    seed: Seed = None,
    shard_max_count: MaxCount = None,
    shard_max_size: MaxSize = None,
    cfg_path: options.Config = options.DEFAULT,
    root: options.Root = None,
) -> None:
    """Image datasets stored as Parquet (Hugging Face `datasets` or any table of encoded images),
    read a row group at a time; class names from the `datasets` metadata when there is some.
    Bad rows go to ingest_errors; the bytes pass through untouched."""
    from ingest import pack
    from ingest import parquet as pq_source
    from pie import catalog, store
    from pie.paths import WorkRoot, check_name, root_path

    check_name(name, "dataset name")
    check_split(split, seed)
    space: catalog.LabelSpace | str = label_space or name  # a name: a new label space
    work = WorkRoot(root_path(root))  # nothing is created before the files are checked
    if space in catalog.BUILTIN_SPACES:
        space = catalog.BUILTIN_SPACES[space]()
    elif work.db.exists():
        # not stored: the files make it
        with store.connect(work, read_only=True) as con, contextlib.suppress(PieError):
            space = catalog.label_space(con, space)
    found = [
        pq_source.parquet(pattern, name, space, split, image_column, label_column, key_column)
    ]  # checks every file's columns
    cfg = load(cfg_path, workers, seed, shard_max_count, shard_max_size)
    pack.main(open_root(root), cfg, found)


@app.command()
def corrupt(
    dataset: Annotated[
        str | None, typer.Argument(help="Clean dataset [default: corrupt.dataset]")
    ] = None,
    corruption: Annotated[
        list[str] | None,
        typer.Option(
            "--corruption",
            "-x",
            help=f"Corruption names, repeatable or comma-separated; 'benchmark' = the 15, "
            f"'all' = all {len(CORRUPTIONS)} [default: corrupt.corruptions]",
            show_default=False,
        ),
    ] = None,
    severity: Annotated[
        list[str] | None,
        typer.Option("--severity", "-s", help="Severities 1-5 [default: corrupt.severities]"),
    ] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    workers: Workers = None,
    image_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="png (lossless) or jpeg (quality corrupt.jpeg_quality, 85: as released)",
        ),
    ] = None,
    cfg_path: options.Config = options.DEFAULT,
    root: options.Root = None,
) -> None:
    """ImageNet-C style variants of a clean dataset: one dataset per (corruption, severity)."""
    from ingest import corrupt as corrupt_stage

    names = options.split_list(corruption)
    if names:
        expanded = {"all": CORRUPTIONS, "benchmark": BENCHMARK}
        names = tuple(n for name in names for n in expanded.get(name, (name,)))
    levels = options.numbers(severity, int, "--severity")
    cfg = config.load(
        CorruptConfig,
        cfg_path,
        "corrupt",
        dict(
            dataset=dataset,
            corruptions=names,
            severities=levels,
            seed=seed,
            workers=workers,
            format=image_format,
        ),
    )
    corrupt_stage.main(open_root(root), cfg)
