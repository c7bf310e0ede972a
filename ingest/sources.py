"""Image sources. A source lists its inputs in a stable order (`Source.units`, cut into units
of work), a `Reader` checks each unit in a worker process (`scan`: `Entry`s and `Rejected`
inputs) and later turns an entry back into a `Sample` (`sample`) for the worker that writes its
shard. Encoded images are decoded fully once, when scanned, to reject truncated or corrupt
files with a readable reason, and then pass through byte for byte; raw pixel arrays
(Fashion-MNIST) become PNG. Dataset names are checked (`pie.paths.check_name`) when a source is
made, before anything is listed or written; listing waits until packing, so a dataset already
packed costs nothing.

Keys are stable and readable: `fmnist-test-00042` for Fashion-MNIST, `<class dir>/<file stem>`
for folder trees and `<wnid>/<file stem>` for the flat ImageNet validation folder and
TFRecords, so that an ImageNet-C file keeps the key of its ImageNet validation parent in
whichever layout that parent was ingested.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from itertools import islice
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from ingest.corruption_tables import CORRUPTIONS, SEVERITIES
from pie.catalog import FASHION_MNIST, DatasetSpec, LabelSpace, imagenet1k, wnid_subset
from pie.errors import PieError
from pie.paths import check_name
from pie.shards import Sample, safe_key

EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")  # files that folder and manifest sources read
LOOKED_FOR = f"looked for {' '.join(EXTS)}"
FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp"}  # PIL format -> extension
UNIT = 256  # inputs per unit of scanning work
WNID = re.compile(r"^n\d{8}$")


@dataclass(frozen=True)
class Rejected:
    source: str
    error: str


@dataclass(frozen=True, slots=True)
class Entry:
    """An input that passed its checks: `ref` is what the source's reader opens again to pack
    it (a path, an index, a record's place), `size` its image's bytes (shard boundaries)."""

    ref: Any
    key: str
    label: int
    ext: str
    size: int


class Reader(Protocol):
    """Checks a unit of inputs and reads an entry back; picklable (sent to workers)."""

    def scan(self, unit: Any, measure: bool) -> list[Entry | Rejected]:
        """The unit's entries and rejected inputs, in order. `measure`: sizes must be exact
        (else a source may give an upper bound, `Source.size_bound`)."""
        ...

    def sample(self, entry: Entry) -> Sample:
        """The entry's sample: its bytes as stored, label and metadata."""
        ...

    def samples(self, entries: list[Entry]) -> Iterator[Sample]:
        """One shard's samples, in order: `sample` of each entry, unless the source reads its
        inputs cheaper together (a Parquet row group holds many images)."""
        return map(self.sample, entries)


@dataclass(frozen=True)
class Source:
    """A dataset to pack: what it is, its label space, its inputs (listed lazily, in units of
    work, in their final order for an evaluation set), how they are read, and where the images
    were looked for (said when none is found). `size_bound`: an upper bound on any image's
    bytes, when known (then scanning need not measure what cannot decide a shard boundary)."""

    spec: DatasetSpec
    space: LabelSpace
    units: Callable[[], Iterator[Any]]
    reader: Reader
    looked_in: str
    size_bound: int | None = None
    options: dict[str, Any] = field(default_factory=dict)  # source options that change contents


def batched(items: Iterator[Any], size: int = UNIT) -> Iterator[list[Any]]:
    """`items` in lists of `size`, the units of scanning work (itertools.batched is 3.12+)."""
    while batch := list(islice(items, size)):
        yield batch


# -- Fashion-MNIST -------------------------------------------------------------------------

FASHION_FILES = {"train": "train", "test": "t10k"}
PNG_28_BOUND = 2048  # a 28x28 8-bit PNG: 812 filtered bytes, stored uncompressed at worst


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


@cache
def idx_pair(directory: Path, stem: str) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of one split, read once per process."""
    images = read_idx(directory / f"{stem}-images-idx3-ubyte.gz")
    labels = read_idx(directory / f"{stem}-labels-idx1-ubyte.gz")
    if len(images) != len(labels):
        raise PieError(f"{directory}: {len(images)} {stem} images, {len(labels)} labels")
    return images, labels


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@dataclass(frozen=True)
class FashionReader(Reader):
    directory: Path
    stem: str
    name: str  # the dataset name: keys are <name>-<index>
    split: str

    def scan(self, unit: tuple[int, int], measure: bool) -> list[Entry | Rejected]:
        images, labels = idx_pair(self.directory, self.stem)
        return [
            Entry(
                i,
                f"{self.name}-{i:05d}",
                int(labels[i]),
                "png",
                len(png(images[i])) if measure else PNG_28_BOUND,
            )
            for i in range(*unit)
        ]

    def sample(self, entry: Entry) -> Sample:
        images, _ = idx_pair(self.directory, self.stem)
        i = entry.ref
        meta = {
            "class_name": FASHION_MNIST.classes[entry.label][2],
            "index": i,
            "split": self.split,
        }
        return Sample(entry.key, entry.label, png(images[i]), "png", meta)


def fashion_mnist(directory: Path, split: str) -> Source:
    """One split of the IDX files, in file order (a training split is shuffled when packed)."""
    stem = FASHION_FILES[split]
    name = f"fmnist-{split}"
    split_kind = "train" if split == "train" else "eval"
    directory = directory.resolve()
    spec = DatasetSpec(name, FASHION_MNIST.name, "clean", split_kind, str(directory))

    def units() -> Iterator[tuple[int, int]]:
        n = len(idx_pair(directory, stem)[1])
        for start in range(0, n, 4 * UNIT):
            yield (start, min(n, start + 4 * UNIT))

    reader = FashionReader(directory, stem, name, split)
    looked_in = f"the {stem} IDX files in {directory}"
    return Source(spec, FASHION_MNIST, units, reader, looked_in, size_bound=PNG_28_BOUND)


# -- files: folder trees, the flat validation folder, manifests --------------------------------


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
    return checked_image(data), data


def checked_image(data: bytes) -> str:
    """The extension of an encoded image's format, after decoding it fully; `ValueError` with
    a readable reason otherwise."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
            if fmt == "PNG":
                im.verify()  # container checks (chunk CRCs); the image must be opened again
            else:
                im.load()  # the full decode: truncated and corrupt data fail here
        if fmt == "PNG":
            with Image.open(io.BytesIO(data)) as im:
                im.load()
    except Image.UnidentifiedImageError:
        raise ValueError("not a readable image: unknown format or corrupt header") from None
    except Image.DecompressionBombError as e:
        raise ValueError(f"image too large to decode safely: {e}") from None
    except Exception as e:  # PIL raises OSError, SyntaxError, struct.error, ... per format
        raise ValueError(f"truncated or corrupt image: {e}") from None
    ext = FORMATS.get(fmt or "")
    if ext is None:
        raise ValueError(f"unsupported image format {fmt} (stores JPEG, PNG, WebP and BMP)")
    return ext


@dataclass(frozen=True)
class FileReader(Reader):
    """Files under `directory`; a unit is a list of `(relative path, label, key)` or
    `Rejected` (refused while listing, e.g. an unknown class)."""

    directory: Path

    def scan(self, unit: list[tuple[str, int, str] | Rejected], measure: bool) -> list:
        out: list[Entry | Rejected] = []
        for item in unit:
            if isinstance(item, Rejected):
                out.append(item)
                continue
            rel, label, key = item
            try:
                ext, data = encoded_image(self.directory / rel)
            except ValueError as e:
                out.append(Rejected(str(self.directory / rel), str(e)))
                continue
            out.append(Entry(rel, key, label, ext, len(data)))
        return out

    def sample(self, entry: Entry) -> Sample:
        data = (self.directory / entry.ref).read_bytes()
        return Sample(entry.key, entry.label, data, entry.ext, {"source": entry.ref})


def is_dir(directory: Path) -> Path:
    if not directory.is_dir():
        raise PieError(f"{directory} is not a directory")
    return directory


def folder_units(directory: Path, label_of_dir: dict[str, int]) -> Callable[[], Iterator]:
    """`<directory>/<class dir>/<file>` in sorted order; key `<class dir>/<file stem>`."""

    def items() -> Iterator[tuple[str, int, str] | Rejected]:
        for class_dir in sorted(p for p in is_dir(directory).iterdir() if p.is_dir()):
            label = label_of_dir.get(class_dir.name)
            for path in sorted(p for p in class_dir.rglob("*") if p.is_file()):
                if label is None:
                    why = f"class directory {class_dir.name!r} is not in the label space"
                    yield Rejected(str(path), why)
                    continue
                rel = path.relative_to(directory).as_posix()
                yield rel, label, safe_key(Path(rel).with_suffix("").as_posix())

    return lambda: batched(items())


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
        dirs = sorted(p.name for p in is_dir(directory).iterdir() if p.is_dir())
        space = LabelSpace(
            label_space, tuple((i, None, d) for i, d in enumerate(dirs)), str(directory)
        )
        mapping = {d: i for i, d in enumerate(dirs)}
    spec = DatasetSpec(name, space.name, "clean", split, str(directory))
    units = folder_units(directory, mapping)
    return Source(spec, space, units, FileReader(directory), in_class_dirs(directory))


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
    units = folder_units(directory, allowed)
    return Source(spec, space, units, FileReader(directory), in_class_dirs(directory))


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
    directory = is_dir(directory.resolve())
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
            units = folder_units(sdir, mapping)
            out.append(Source(spec, label_space, units, FileReader(sdir), in_class_dirs(sdir)))
    if wrong:
        raise PieError(
            f"{directory} is not an ImageNet-C tree <corruption>/<severity>/<wnid>/: "
            f"{'; '.join(wrong)} (corruptions: {', '.join(CORRUPTIONS)})"
        )
    if not out:
        raise PieError(f"{directory} has no <corruption>/<severity>/ directories")
    return out


def read_val_labels(path: Path) -> dict[str, str]:
    """file stem -> wnid from `LOC_val_solution.csv` (`ImageId,PredictionString`, the wnid
    first in the prediction string) or a plain `filename,wnid` CSV (a header row optional,
    file names with or without their extension)."""
    if not path.is_file():
        raise PieError(f"labels file {path} not found")
    with path.open(newline="") as f:
        rows = [r for r in csv.reader(f) if r and any(cell.strip() for cell in r)]
    if rows and [c.strip() for c in rows[0][:2]] == ["ImageId", "PredictionString"]:
        pairs = [(r[0], (r[1].split() or [""])[0]) for r in rows[1:] if len(r) >= 2]
    else:
        if rows and len(rows[0]) >= 2 and not WNID.match(rows[0][1].strip()):
            rows = rows[1:]  # a header: its second column is no wnid
        pairs = [(r[0], r[1]) for r in rows if len(r) >= 2]
    bad = [r for r in rows if len(r) < 2]
    if bad or not pairs:
        raise PieError(
            f"{path} is neither LOC_val_solution.csv (ImageId,PredictionString) nor a "
            f"filename,wnid CSV" + (f": row {bad[0]!r} has one column" if bad else ": no rows")
        )
    return {Path(name.strip()).stem: wnid.strip() for name, wnid in pairs}


def imagenet_val(directory: Path, labels: Path, name: str) -> Source:
    """The flat ImageNet validation folder (`ILSVRC2012_val_00000001.JPEG` ...) with a
    file-to-wnid mapping (`read_val_labels`); keys `<wnid>/<file stem>`, as an ImageFolder tree
    of the same images would have. A file the mapping does not name, a wnid outside
    ImageNet-1k, and a mapped file that is missing are each one `ingest_errors` row; the rest
    is packed."""
    check_name(name, "dataset name")
    directory, labels = directory.resolve(), labels.resolve()
    space = imagenet1k()
    ids = space.id_of_wnid()

    def items() -> Iterator[tuple[str, int, str] | Rejected]:
        wnid_of = read_val_labels(labels)
        found = set()
        for path in sorted(p for p in is_dir(directory).iterdir() if p.is_file()):
            found.add(path.stem)
            wnid = wnid_of.get(path.stem)
            if wnid is None:
                yield Rejected(str(path), f"not named in {labels.name}")
            elif wnid not in ids:
                yield Rejected(str(path), f"unknown wnid {wnid!r} (not an ImageNet-1k class)")
            else:
                yield path.name, ids[wnid], safe_key(f"{wnid}/{path.stem}")
        for stem in sorted(wnid_of.keys() - found):
            yield Rejected(stem, f"named in {labels.name} but not found in {directory}")

    spec = DatasetSpec(name, space.name, "clean", "eval", str(directory))
    looked_in = f"{directory} ({LOOKED_FOR}, named in {labels})"
    return Source(spec, space, lambda: batched(items()), FileReader(directory), looked_in)


def csv_manifest(path: Path, name: str, label_space: LabelSpace, split: str = "eval") -> Source:
    """A CSV with columns `path,label` (and optional `key`); paths relative to the CSV.
    `label` is a class id or a class name/wnid of the label space."""
    check_name(name, "dataset name")
    path = path.resolve()
    if not path.is_file():
        raise PieError(f"manifest {path} not found")
    by_name = {n: cid for cid, _, n in label_space.classes} | label_space.id_of_wnid()
    n_classes = len(label_space.classes)

    def items() -> Iterator[tuple[str, int, str] | Rejected]:
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if not {"path", "label"} <= set(reader.fieldnames or ()):
                raise PieError(f"manifest {path} needs the columns path,label")
            for row in reader:
                raw = row["label"].strip()
                label = int(raw) if raw.isdigit() else by_name.get(raw)
                if label is None or not 0 <= label < n_classes:
                    yield Rejected(row["path"], f"unknown label {raw!r}")
                    continue
                key = safe_key(row.get("key") or Path(row["path"]).with_suffix("").as_posix())
                yield row["path"], label, key

    spec = DatasetSpec(name, label_space.name, "clean", split, str(path))
    looked_in = f"the rows of {path} ({LOOKED_FOR})"
    return Source(spec, label_space, lambda: batched(items()), FileReader(path.parent), looked_in)
