"""Image sources. Each yields `Sample`s (or `Rejected` inputs) in a stable order, with a
`DatasetSpec` that says what the dataset is. Encoded images pass through byte for byte;
raw pixel arrays (Fashion-MNIST) become PNG.

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

from pie.catalog import FASHION_MNIST, DatasetSpec, LabelSpace, imagenet1k, wnid_subset
from pie.errors import PieError
from pie.shards import Sample, safe_key

EXTS = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png", ".webp": "webp", ".bmp": "bmp"}


@dataclass(frozen=True)
class Rejected:
    source: str
    error: str


Item = Sample | Rejected


@dataclass(frozen=True)
class Source:
    """A dataset to pack: what it is, its label space, and its items (read lazily)."""

    spec: DatasetSpec
    space: LabelSpace
    items: Iterable[Item]


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


def fashion_mnist(directory: Path, split: str, limit: int = 0) -> Source:
    """One split of the IDX files; read lazily, so a dataset already packed costs nothing."""
    stem = FASHION_FILES[split]
    name = f"fmnist-{split}"
    split_kind = "train" if split == "train" else "eval"
    spec = DatasetSpec(name, FASHION_MNIST.name, "clean", split_kind, str(directory))

    def items() -> Iterator[Item]:
        images = read_idx(directory / f"{stem}-images-idx3-ubyte.gz")
        labels = read_idx(directory / f"{stem}-labels-idx1-ubyte.gz")
        if len(images) != len(labels):
            raise PieError(f"{directory}: {len(images)} {split} images, {len(labels)} labels")
        for i in range(min(limit, len(images)) if limit else len(images)):
            buf = io.BytesIO()
            Image.fromarray(images[i]).save(buf, format="PNG")
            label = int(labels[i])
            meta = {"class_name": FASHION_MNIST.classes[label][2], "index": i, "split": split}
            yield Sample(f"{name}-{i:05d}", label, buf.getvalue(), "png", meta)

    return Source(spec, FASHION_MNIST, items())


# -- folder trees ---------------------------------------------------------------------------


def encoded_image(path: Path) -> tuple[str, bytes]:
    """The file's bytes and extension, after checking the header parses (no decoding)."""
    ext = EXTS.get(path.suffix.lower())
    if ext is None:
        raise ValueError(f"not an image file extension: {path.suffix}")
    data = path.read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        im.verify()
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
            except Exception as e:
                yield Rejected(str(path), f"unreadable image: {e}")
                continue
            rel = path.relative_to(class_dir).with_suffix("")
            key = key_prefix + safe_key(f"{class_dir.name}/{rel.as_posix()}")
            meta = {"source": str(path.relative_to(directory)), "class_dir": class_dir.name}
            yield Sample(key, label, data, ext, meta)


def image_folder(directory: Path, name: str, label_space: str, split: str = "eval") -> Source:
    """An ImageFolder tree. With label_space 'imagenet1k' class dirs are wnids; otherwise the
    sorted class dir names become a new label space named `label_space`."""
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
    return Source(spec, space, folder_items(directory, mapping))


def imagenet_subset(directory: Path, name: str, which: str) -> Source:
    """ImageNet-A (natural adversarial) or ImageNet-R (renditions): `<wnid>/<file>` trees over a
    200-class subset of ImageNet-1k; models are scored among the subset's logits only."""
    space = imagenet1k()
    kind, wnids = {
        "a": ("natural_adversarial", "imagenet_a_wnids.txt"),
        "r": ("rendition", "imagenet_r_wnids.txt"),
    }[which]
    subset = wnid_subset(space, wnids)
    allowed = {w: i for w, i in space.id_of_wnid().items() if i in set(subset)}
    spec = DatasetSpec(name, space.name, kind, "eval", str(directory), class_subset=subset)
    return Source(spec, space, folder_items(directory, allowed))


def imagenet_c(directory: Path, parent: str, label_space: LabelSpace) -> list[Source]:
    """The released ImageNet-C tree `<corruption>/<severity>/<wnid>/<file>`: one dataset per
    (corruption, severity), named `<parent>-<corruption>-<severity>`, keeping the parent's keys."""
    if not directory.is_dir():
        raise PieError(f"{directory} is not a directory")
    mapping = label_space.id_of_wnid()
    out = []
    for cdir in sorted(p for p in directory.iterdir() if p.is_dir()):
        for sdir in sorted(p for p in cdir.iterdir() if p.is_dir() and p.name.isdigit()):
            spec = DatasetSpec(
                f"{parent}-{cdir.name}-{sdir.name}",
                label_space.name,
                "corrupted",
                "eval",
                str(sdir),
                parent=parent,
                corruption=cdir.name,
                severity=int(sdir.name),
            )
            out.append(Source(spec, label_space, folder_items(sdir, mapping)))
    if not out:
        raise PieError(f"{directory} has no <corruption>/<severity>/ directories")
    return out


def csv_manifest(path: Path, name: str, label_space: LabelSpace, split: str = "eval") -> Source:
    """A CSV with columns `path,label` (and optional `key`); paths relative to the CSV.
    `label` is a class id or a class name/wnid of the label space."""
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
                except Exception as e:
                    yield Rejected(row["path"], f"unreadable image: {e}")
                    continue
                key = safe_key(row.get("key") or Path(row["path"]).with_suffix("").as_posix())
                yield Sample(key, label, data, ext, {"source": row["path"]})

    spec = DatasetSpec(name, label_space.name, "clean", split, str(path))
    return Source(spec, label_space, items())
