"""Image sources. Each yields `Sample`s (or `Rejected` inputs) in a stable order, with a
`DatasetSpec` that says what the dataset is. Encoded images are decoded fully once, to reject
truncated or corrupt files with a readable reason, and then pass through byte for byte; raw
pixel arrays (Fashion-MNIST) become PNG. Dataset names are checked (`pie.paths.check_name`)
when a source is made, before anything is written.

Keys are stable and readable: `fmnist-test-00042` for Fashion-MNIST, `<class dir>/<file stem>`
for folder trees, so that an ImageNet-C file keeps the key of its ImageNet validation parent.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ingest.corruptions import CORRUPTIONS, SEVERITIES
from pie.catalog import FASHION_MNIST, DatasetSpec, LabelSpace, imagenet1k, wnid_subset
from pie.errors import PieError
from pie.paths import check_name
from pie.shards import Sample, safe_key

EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")  # files that folder and manifest sources read
LOOKED_FOR = f"looked for {' '.join(EXTS)}"
FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp"}  # PIL format -> extension


@dataclass(frozen=True)
class Rejected:
    source: str
    error: str


Item = Sample | Rejected


@dataclass(frozen=True)
class Source:
    """A dataset to pack: what it is, its label space, its items (read lazily), and where the
    images were looked for (said when none is found)."""

    spec: DatasetSpec
    space: LabelSpace
    items: Iterable[Item]
    looked_in: str


# -- Fashion-MNIST -------------------------------------------------------------------------

FASHION_FILES = {"train": "train", "test": "t10k"}


def read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file (images: magic 2051, labels: magic 2049) as a uint8 array."""
    try:
        raw = gzip.decompress(path.read_bytes())
    except FileNotFoundError:
        raise PieError(
            f"{path} not found: install Fashion-MNIST with "
            "`apt-get install -y dataset-fashion-mnist` or set ingest.fashion_mnist_dir"
        ) from None
    except (OSError, EOFError) as e:
        raise PieError(f"{path} is not a gzipped IDX file: {e}") from None
    magic = int.from_bytes(raw[:4], "big")
    if magic not in (2049, 2051):
        raise PieError(f"{path} is not an IDX file (magic {magic})")
    ndim = magic - 2048
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise PieError(f"{path} is truncated: expected {shape}, found {data.size} values")
    return data.reshape(shape)


def fashion_mnist(directory: Path, split: str) -> Source:
    """One split of the IDX files; read lazily, so a dataset already packed costs nothing (and
    a limit costs only the images kept)."""
    stem = FASHION_FILES[split]
    name = f"fmnist-{split}"
    split_kind = "train" if split == "train" else "eval"
    directory = directory.resolve()
    spec = DatasetSpec(name, FASHION_MNIST.name, "clean", split_kind, str(directory))

    def items() -> Iterator[Item]:
        images = read_idx(directory / f"{stem}-images-idx3-ubyte.gz")
        labels = read_idx(directory / f"{stem}-labels-idx1-ubyte.gz")
        if len(images) != len(labels):
            raise PieError(f"{directory}: {len(images)} {split} images, {len(labels)} labels")
        for i in range(len(images)):
            buf = io.BytesIO()
            Image.fromarray(images[i]).save(buf, format="PNG")
            label = int(labels[i])
            meta = {"class_name": FASHION_MNIST.classes[label][2], "index": i, "split": split}
            yield Sample(f"{name}-{i:05d}", label, buf.getvalue(), "png", meta)

    return Source(spec, FASHION_MNIST, items(), f"the {stem} IDX files in {directory}")


# -- folder trees ---------------------------------------------------------------------------


def encoded_image(path: Path) -> tuple[str, bytes]:
    """The file's bytes, untouched, and their format's extension, after decoding them fully
    (a header check alone lets truncated files through). Raises `ValueError` with a short,
    readable reason when the file is not an image pie can store."""
    if path.suffix.lower() not in EXTS:
        raise ValueError(f"not an image file: extension {path.suffix or '(none)'!r}, {LOOKED_FOR}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ValueError(f"cannot read the file: {e.strerror or e}") from None
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.verify()  # container checks (PNG chunk CRCs)
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # the full decode: truncated and corrupt data fail here
            fmt = im.format
    except Image.UnidentifiedImageError:
        raise ValueError("not a readable image: unknown format or corrupt header") from None
    except Image.DecompressionBombError as e:
        raise ValueError(f"image too large to decode safely: {e}") from None
    except Exception as e:  # PIL raises OSError, SyntaxError, struct.error, ... per format
        raise ValueError(f"truncated or corrupt image: {e}") from None
    ext = FORMATS.get(fmt or "")
    if ext is None:
        raise ValueError(f"unsupported image format {fmt} (stores JPEG, PNG, WebP and BMP)")
    return ext, data


def folder_items(
    directory: Path, label_of_dir: dict[str, int], key_prefix: str = ""
) -> Iterator[Item]:
    """`<directory>/<class dir>/<file>` in sorted order; key `<class dir>/<file stem>`."""
    if not directory.is_dir():
        raise PieError(f"{directory} is not a directory")
    for class_dir in sorted(p for p in directory.iterdir() if p.is_dir()):
        label = label_of_dir.get(class_dir.name)
        for path in sorted(p for p in class_dir.rglob("*") if p.is_file()):
            if label is None:
                yield Rejected(
                    str(path), f"class directory {class_dir.name!r} is not in the label space"
                )
                continue
            try:
                ext, data = encoded_image(path)
            except ValueError as e:
                yield Rejected(str(path), str(e))
                continue
            rel = path.relative_to(class_dir).with_suffix("")
            key = key_prefix + safe_key(f"{class_dir.name}/{rel.as_posix()}")
            meta = {"source": str(path.relative_to(directory)), "class_dir": class_dir.name}
            yield Sample(key, label, data, ext, meta)


def in_class_dirs(directory: Path) -> str:
    return f"the class directories of {directory} ({LOOKED_FOR} in <class>/)"


def image_folder(directory: Path, name: str, label_space: str, split: str = "eval") -> Source:
    """An ImageFolder tree. With label_space 'imagenet1k' class dirs are wnids; otherwise the
    sorted class dir names become a new label space named `label_space`."""
    check_name(name, "dataset name")
    directory = directory.resolve()
    if label_space == "imagenet1k":
        space = imagenet1k()
        mapping = space.id_of_wnid()
    else:
        if not directory.is_dir():
            raise PieError(f"{directory} is not a directory")
        dirs = sorted(p.name for p in directory.iterdir() if p.is_dir())
        space = LabelSpace(
            label_space, tuple((i, None, d) for i, d in enumerate(dirs)), str(directory)
        )
        mapping = {d: i for i, d in enumerate(dirs)}
    spec = DatasetSpec(name, space.name, "clean", split, str(directory))
    return Source(spec, space, folder_items(directory, mapping), in_class_dirs(directory))


def imagenet_subset(directory: Path, name: str, which: str) -> Source:
    """ImageNet-A (natural adversarial) or ImageNet-R (renditions): `<wnid>/<file>` trees over a
    200-class subset of ImageNet-1k; models are scored among the subset's logits only."""
    check_name(name, "dataset name")
    directory = directory.resolve()
    space = imagenet1k()
    kind, wnids = {
        "a": ("natural_adversarial", "imagenet_a_wnids.txt"),
        "r": ("rendition", "imagenet_r_wnids.txt"),
    }[which]
    subset = wnid_subset(space, wnids)
    allowed = {w: i for w, i in space.id_of_wnid().items() if i in set(subset)}
    spec = DatasetSpec(name, space.name, kind, "eval", str(directory), class_subset=subset)
    return Source(spec, space, folder_items(directory, allowed), in_class_dirs(directory))


def released_name(parent: str, corruption: str, severity: int) -> str:
    """A released ImageNet-C dataset's name: `pie corrupt` names its own `<parent>-<c>-<s>`, so
    the two coexist for one parent."""
    return f"{parent}-released-{corruption}-{severity}"


def imagenet_c(directory: Path, parent: str, label_space: LabelSpace) -> list[Source]:
    """The released ImageNet-C tree `<corruption>/<severity>/<wnid>/<file>`: one dataset per
    (corruption, severity), named `<parent>-released-<corruption>-<severity>` (origin
    'released'), keeping the parent's keys. Corruption directories must be among the 19 known
    corruptions and severity directories 1-5 (hidden entries are ignored); anything else is
    refused before packing starts."""
    check_name(parent, "parent dataset name")
    directory = directory.resolve()
    if not directory.is_dir():
        raise PieError(f"{directory} is not a directory")
    mapping = label_space.id_of_wnid()
    out, wrong = [], []
    for cdir in sorted(p for p in directory.iterdir() if p.is_dir() and p.name[0] != "."):
        if cdir.name not in CORRUPTIONS:
            wrong.append(f"{cdir.name}/ is not one of the {len(CORRUPTIONS)} corruptions")
            continue
        for sdir in sorted(p for p in cdir.iterdir() if p.is_dir() and p.name[0] != "."):
            if sdir.name not in {str(s) for s in SEVERITIES}:
                wrong.append(f"{cdir.name}/{sdir.name}/ is not a severity 1-5")
                continue
            spec = DatasetSpec(
                released_name(parent, cdir.name, int(sdir.name)),
                label_space.name,
                "corrupted",
                "eval",
                str(sdir),
                parent=parent,
                corruption=cdir.name,
                severity=int(sdir.name),
                origin="released",
            )
            out.append(Source(spec, label_space, folder_items(sdir, mapping), in_class_dirs(sdir)))
    if wrong:
        raise PieError(
            f"{directory} is not an ImageNet-C tree <corruption>/<severity>/<wnid>/: "
            f"{'; '.join(wrong)} (corruptions: {', '.join(CORRUPTIONS)})"
        )
    if not out:
        raise PieError(f"{directory} has no <corruption>/<severity>/ directories")
    return out


def csv_manifest(path: Path, name: str, label_space: LabelSpace, split: str = "eval") -> Source:
    """A CSV with columns `path,label` (and optional `key`); paths relative to the CSV.
    `label` is a class id or a class name/wnid of the label space."""
    check_name(name, "dataset name")
    path = path.resolve()
    if not path.is_file():
        raise PieError(f"manifest {path} not found")
    by_name = {n: cid for cid, _, n in label_space.classes} | label_space.id_of_wnid()
    n_classes = len(label_space.classes)

    def items() -> Iterator[Item]:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if not {"path", "label"} <= set(reader.fieldnames or ()):
                raise PieError(f"manifest {path} needs the columns path,label")
            for row in reader:
                file = (path.parent / row["path"]).resolve()
                raw = row["label"].strip()
                label = int(raw) if raw.isdigit() else by_name.get(raw)
                if label is None or not 0 <= label < n_classes:
                    yield Rejected(row["path"], f"unknown label {raw!r}")
                    continue
                try:
                    ext, data = encoded_image(file)
                except ValueError as e:
                    yield Rejected(row["path"], str(e))
                    continue
                key = safe_key(row.get("key") or Path(row["path"]).with_suffix("").as_posix())
                yield Sample(key, label, data, ext, {"source": row["path"]})

    spec = DatasetSpec(name, label_space.name, "clean", split, str(path))
    return Source(spec, label_space, items(), f"the rows of {path} ({LOOKED_FOR})")
