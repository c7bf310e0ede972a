"""WebDataset shards: reproducible writing, reading by URL, the wids index.

A sample is one image with its integer label and JSON metadata, stored as
`<key>.<ext>` (the source bytes, untouched), `<key>.cls` (the label in ASCII) and
`<key>.json`. Shards are written into a `.partial` directory that is synced and renamed into
place once complete (`pie.durable`), so a dataset directory is either whole or absent. Bytes
are reproducible: fixed mtime, owner and mode, samples in the order given, JSON with sorted keys.

Where one shard ends is decided by the samples alone (`shard_bounds`): at most `max_count`
samples, and a shard closes before the sample whose image bytes, plus `SAMPLE_OVERHEAD` for
its tar headers, label and metadata, would take it past `max_size` (a single larger sample
gets a shard of its own). So shard k's contents, and its bytes, do not depend on who writes
it: parallel writers (`write_tar`, one whole shard each) produce what one sequential writer
(`write_shards`) would.

The index (`index.json`, wids format) lists each shard's `url`, `nsamples`, `filesize` and
`sha256`, and `offsets`: the name of the shard's offsets file (`<prefix>-000000.idx.npy`, beside
the index), written with the shard. It holds one row per sample, in shard order: the image's
byte offset and size in the tar, the label and the key (`OFFSETS`; 24 bytes plus the longest key
of the shard per image, e.g. 57 bytes for ImageNet's validation keys), so readers find a sample
by position without walking the tar's headers (wids, too, reads samples by offset from a
per-shard index, which it builds at first use). wids ignores the extra fields. An index
written before offsets files has no `offsets`: readers then scan each shard's headers once
(`scan_offsets`).

A url is a path relative to the index (what pie writes), an absolute path, a `file:` URL or a
`pipe:` command (`pipe:aws s3 cp s3://bucket/x-000000.tar -`), so an index can be rewritten to
point at shards on an object store; `shard_urls` and `read_shards` open them as webdataset does.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlparse
from urllib.request import url2pathname

import numpy as np

from pie import durable
from pie.errors import PieError

INDEX = "index.json"
# WebDataset splits a member name at the first dot of its last component: keys have none.
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_\-/]+$")
IMAGE_EXTS = ("png", "jpg", "jpeg", "webp", "ppm", "bmp")
SAMPLE_OVERHEAD = 2048  # bytes counted per sample besides its image: 3 tar headers, cls, json
SHARD_NAME = "{prefix}-{index:06d}.tar"
# one row per sample of a shard: where its image is in the tar, its label and key
OFFSETS = (("offset", "<i8"), ("size", "<i8"), ("label", "<i8"))


@dataclass(frozen=True)
class Sample:
    key: str
    label: int
    data: bytes  # the encoded image, stored as is
    ext: str  # "png", "jpg", ...
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Written:
    """What was packed: one (key, label, shard) per sample, in order."""

    keys: list[str]
    labels: list[int]
    shards: list[str]
    n_shards: int


@dataclass(frozen=True)
class ShardFile:
    """One written shard, as the index lists it."""

    name: str
    nsamples: int
    filesize: int
    sha256: str
    offsets: str = ""  # the name of its offsets file (`offsets_name`); "" for none


def safe_key(text: str) -> str:
    """A WebDataset-safe key from free text (file stems, CSV ids): no dots, no spaces."""
    return re.sub(r"[^A-Za-z0-9_\-/]", "_", text)


def check_key(key: str) -> None:
    if not KEY_PATTERN.match(key):
        raise PieError(f"invalid sample key {key!r}: use letters, digits, _ - / only")


def shard_name(prefix: str, index: int) -> str:
    return SHARD_NAME.format(prefix=prefix, index=index)


def shard_bounds(sizes: Iterable[int], max_count: int, max_size: int) -> list[int]:
    """Where each shard starts, for samples whose image bytes are `sizes` (in order): a list of
    start positions, beginning with 0 (empty for no samples)."""
    starts: list[int] = []
    count = used = 0
    for i, size in enumerate(sizes):
        cost = size + SAMPLE_OVERHEAD
        if not starts or count == max_count or (count and used + cost > max_size):
            starts.append(i)
            count = used = 0
        count += 1
        used += cost
    return starts


def write_tar(samples: Iterable[Sample], path: Path) -> ShardFile:
    """Write one shard and return what its index entry needs."""
    with TarShard(path) as shard:
        for s in samples:
            shard.add(s)
    return shard.file


class TarShard:
    """One shard being written, a sample at a time. The bytes are those of webdataset's
    `TarWriter(mtime=0)` (members in sorted field order, mode 0444, owner bigdata), written with
    the standard library so that worker processes need not import webdataset (and torch with
    it); the sha256 and size are computed on the way, and each image's offset in the tar is
    noted. Once closed without an error, the offsets file is written beside the shard
    (`offsets_name`) and `file` is set."""

    def __init__(self, path: Path) -> None:
        self.path, self.n = path, 0
        self.raw = path.open("wb")
        self.hashed = HashingWriter(self.raw)
        self.tar = tarfile.open(fileobj=self.hashed, mode="w|")  # noqa: SIM115
        self.rows: list[tuple[int, int, int]] = []  # (image offset, size, label) per sample
        self.keys: list[str] = []

    def add(self, s: Sample) -> None:
        check_key(s.key)
        fields = {
            s.ext: s.data,
            "cls": str(s.label).encode(),
            "json": json.dumps(s.meta, sort_keys=True).encode(),
        }
        for name in sorted(fields):
            info = tarfile.TarInfo(f"{s.key}.{name}")
            info.size, info.mtime, info.mode = len(fields[name]), 0, 0o444
            info.uname = info.gname = "bigdata"
            self.tar.addfile(info, io.BytesIO(fields[name]))
            if name == s.ext:  # the data ends the member, padded to 512-byte blocks
                padded = -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
                self.rows.append((self.tar.offset - padded, info.size, s.label))
        self.keys.append(s.key)
        self.n += 1

    def __enter__(self) -> TarShard:
        return self

    def __exit__(self, kind: type | None, *exc: object) -> None:
        self.tar.close()
        self.raw.close()
        if kind is not None:
            return
        name = offsets_name(self.path.name)
        write_offsets(self.path.with_name(name), offsets_table(self.rows, self.keys))
        h = self.hashed
        self.file = ShardFile(self.path.name, self.n, h.size, h.sha256.hexdigest(), name)


def offsets_name(shard: str) -> str:
    """The offsets file of a shard: `<prefix>-000000.tar` -> `<prefix>-000000.idx.npy`."""
    return shard.removesuffix(".tar") + ".idx.npy"


def offsets_table(rows: Sequence[tuple[int, int, int]], keys: Sequence[str]) -> np.ndarray:
    """One record per sample (`OFFSETS`, then `key` as ASCII bytes as wide as the longest)."""
    encoded = [k.encode() for k in keys]
    width = max((len(k) for k in encoded), default=1)
    table = np.empty(len(rows), [*OFFSETS, ("key", f"S{width}")])
    for i, (name, _) in enumerate(OFFSETS):
        table[name] = [row[i] for row in rows]
    table["key"] = encoded
    return table


def write_offsets(path: Path, table: np.ndarray) -> None:
    """A `.npy` file (format 1.0, so the same rows give the same bytes)."""
    with path.open("wb") as f:
        np.lib.format.write_array(f, table, version=(1, 0), allow_pickle=False)


def read_offsets(path: str, expected: int) -> np.ndarray:
    """A shard's offsets file, memory-mapped (read lazily, shared between processes by the page
    cache); missing, unreadable or holding other than `expected` rows is a PieError."""
    try:
        table = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        why = f"offsets file {path} cannot be read ({e})"
        raise PieError(f"{why}: pack the dataset again") from None
    if table.dtype.names is None or table.dtype.names[:3] != tuple(n for n, _ in OFFSETS):
        raise PieError(f"{path} is not an offsets file: pack the dataset again")
    if len(table) != expected:
        raise PieError(
            f"offsets file {path} lists {len(table)} samples, the index {expected}: "
            "pack the dataset again"
        )
    return table


def scan_offsets(path: str, expected: int) -> np.ndarray:
    """The offsets of a local shard whose index names no offsets file (packed before pie wrote
    them), from its tar headers (`tarfile`: image bytes skipped, labels read); the same table
    as `offsets_table`. Members group into samples as webdataset groups them. Fewer or more
    than `expected` samples, or one without an image or a label, is a PieError."""
    rows: list[list[int]] = []
    keys: list[str] = []
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                directory, _, base = member.name.rpartition("/")
                stem, _, ext = base.partition(".")
                key = f"{directory}/{stem}" if directory else stem
                if not keys or keys[-1] != key:
                    keys.append(key)
                    rows.append([-1, 0, -1])
                if ext in IMAGE_EXTS and rows[-1][0] < 0:
                    rows[-1][:2] = member.offset_data, member.size
                elif ext == "cls":
                    rows[-1][2] = int(tar.extractfile(member).read())
    except (OSError, tarfile.TarError, ValueError) as e:
        raise PieError(f"shard {path} cannot be read ({e}): pack the dataset again") from None
    complete = sum(offset >= 0 and label >= 0 for offset, _, label in rows)
    if complete != len(rows) or len(rows) != expected:
        raise PieError(
            f"shard {path} holds {complete} complete samples, its index says {expected}: "
            "truncated or damaged; pack the dataset again"
        )
    return offsets_table([tuple(r) for r in rows], keys)


class HashingWriter:
    """A binary file wrapper that hashes and counts what is written through it."""

    def __init__(self, file: BinaryIO) -> None:
        self.file, self.sha256, self.size = file, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.file.write(data)


def partial_dir(out_dir: Path) -> Path:
    """A fresh, empty `<out_dir>.partial` to write shards into."""
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return partial


def publish(partial: Path, out_dir: Path, shards: Sequence[ShardFile]) -> None:
    """Write the index of a complete `.partial` directory and rename it into place."""
    write_index(partial, out_dir.name, shards)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    durable.replace(partial, out_dir)


def write_shards(
    samples: Iterable[Sample],
    out_dir: Path,
    prefix: str,
    max_count: int = 10_000,
    max_size: int = 256 * 1024 * 1024,
) -> Written:
    """Pack `samples`, streamed in order, into `<out_dir>/<prefix>-000000.tar ...` plus the
    index; shard boundaries as `shard_bounds` (the same bytes as parallel writers)."""
    partial = partial_dir(out_dir)
    keys: list[str] = []
    labels: list[int] = []
    shards: list[str] = []
    files: list[ShardFile] = []
    seen: set[str] = set()
    pending: list[Sample] = []  # the open shard's samples (at most max_count)
    used = 0

    def flush() -> None:
        nonlocal used
        name = shard_name(prefix, len(files))
        files.append(write_tar(pending, partial / name))
        shards.extend([name] * len(pending))
        pending.clear()
        used = 0

    try:
        for s in samples:
            check_key(s.key)
            if s.key in seen:
                raise PieError(f"duplicate sample key {s.key!r} in {out_dir.name}")
            seen.add(s.key)
            cost = len(s.data) + SAMPLE_OVERHEAD
            if pending and (len(pending) == max_count or used + cost > max_size):
                flush()
            pending.append(s)
            used += cost
            keys.append(s.key)
            labels.append(s.label)
        if pending:
            flush()
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if not keys:
        shutil.rmtree(partial)
        raise PieError(f"no samples to write for {out_dir.name}")
    publish(partial, out_dir, files)
    return Written(keys, labels, shards, len(files))


def write_index(directory: Path, name: str, shards: Sequence[ShardFile]) -> None:
    """The wids shard index: relative URLs, so the directory can move. Each shard also gets
    its sha256 (an extra field wids ignores): tar files are padded to 10 KiB records, so sizes
    and counts alone rarely tell two packings apart, and `dataset_hash` must; and the name of
    its offsets file (another extra field), when it has one."""

    def entry(s: ShardFile) -> dict[str, Any]:
        out = {"url": s.name, "nsamples": s.nsamples, "filesize": s.filesize, "sha256": s.sha256}
        return out | {"offsets": s.offsets} if s.offsets else out

    index = {
        "__kind__": "wids-shard-index-v1",
        "wids_version": 1,
        "name": name,
        "shardlist": [entry(s) for s in shards],
    }
    (directory / INDEX).write_text(json.dumps(index, indent=2) + "\n")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_index(directory: Path) -> dict[str, Any]:
    path = directory / INDEX
    if not path.exists():
        raise PieError(f"no shard index at {path}: the dataset is missing or incomplete")
    return json.loads(path.read_text())


def dataset_hash(directory: Path) -> str:
    """The content hash of a packed dataset: the sha256 of its `index.json`, which lists every
    shard with its size, sample count and sha256 (`write_index`). Shard bytes are reproducible,
    so packing the same samples again gives the same hash, and a re-pack with other content
    another one. Predictions and decode caches are pinned to it."""
    path = directory / INDEX
    if not path.exists():
        raise PieError(f"no shard index at {path}: the dataset is missing or incomplete")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def resolve_url(directory: Path, url: str) -> str:
    """An index url as webdataset opens it: `pipe:` and `file:` URLs and absolute paths as
    they are, a relative path joined to the index's directory."""
    scheme = urlparse(url).scheme
    if scheme in ("pipe", "file") or Path(url).is_absolute():
        return url
    if scheme and len(scheme) > 1:  # http:, s3:, ...: webdataset's own gopen decides
        return url
    return str(directory / url)


def shard_urls(directory: Path) -> list[tuple[str, int]]:
    """(url, number of samples) of every shard, in index order: what streaming readers open
    (webdataset or wids); the counts give an epoch's length without opening the tars."""
    return [
        (resolve_url(directory, s["url"]), int(s["nsamples"]))
        for s in read_index(directory)["shardlist"]
    ]


def shard_offsets(directory: Path) -> list[str | None]:
    """The offsets file of every shard, in index order (a path relative to the index is joined
    to its directory); None where the index names none (written before offsets files)."""
    return [
        str(directory / s["offsets"]) if s.get("offsets") else None
        for s in read_index(directory)["shardlist"]
    ]


def local_path(url: str) -> str | None:
    """The local file of a shard URL (a path or `file:` URL); None for `pipe:` and remote
    schemes (one letter is a Windows drive)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return url2pathname(parsed.path)
    if parsed.scheme and len(parsed.scheme) > 1:
        return None
    return url


def check_present(directory: Path) -> None:
    """Every local shard the index lists is there: a missing one is a user error naming it
    (before a run starts rather than in a loader worker). Remote shards are not looked at."""
    for url, _ in shard_urls(directory):
        path = local_path(url)
        if path is not None and not Path(path).is_file():
            raise PieError(f"shard {path} is missing: its dataset changed since it was packed")


def shard_paths(directory: Path) -> list[Path]:
    """The local files of a dataset's shards; a `pipe:` shard has none (a user error)."""
    paths = []
    for url, _ in shard_urls(directory):
        parsed = urlparse(url)
        if parsed.scheme == "file":
            paths.append(Path(url2pathname(parsed.path)))
        elif parsed.scheme and len(parsed.scheme) > 1:
            raise PieError(f"shard {url} of {directory} is not a local file")
        else:
            paths.append(Path(url))
    return paths


def read_shards(directory: Path) -> Iterator[dict[str, Any]]:
    """Yield raw samples in shard order: `__key__`, the image bytes under its extension,
    `cls` (int) and `json` (dict)."""
    for url, _ in shard_urls(directory):
        yield from read_url(url)


def read_url(url: str) -> Iterator[dict[str, Any]]:
    """The raw samples of one shard, opened by URL (a path, `file:` or `pipe:`, as webdataset
    opens them; other schemes through webdataset's `gopen`). The tar stream is parsed here
    (ustar headers, pax and GNU long names): about twice as fast as webdataset's reader and
    without importing torch. Members group into samples as webdataset groups them: the key is
    the name up to the first dot of its last component."""
    with open_url(url) as stream:
        sample: dict[str, Any] = {}
        for name, data in tar_members(stream, url):
            directory, _, base = name.rpartition("/")
            stem, _, field = base.partition(".")
            key = f"{directory}/{stem}" if directory else stem
            if sample and sample["__key__"] != key:
                yield finish_sample(sample)
                sample = {}
            sample["__key__"] = key
            sample[field] = data
        if sample:
            yield finish_sample(sample)


def finish_sample(sample: dict[str, Any]) -> dict[str, Any]:
    sample["cls"] = int(sample["cls"])
    sample["json"] = json.loads(sample["json"])
    return sample


@contextmanager
def open_url(url: str) -> Iterator[BinaryIO]:
    """A readable binary stream of a shard URL; a `pipe:` command that fails is a user error
    naming it."""
    parsed = urlparse(url)
    if parsed.scheme == "pipe":
        command = url[len("pipe:") :]
        proc = subprocess.Popen(command, shell=True, stdout=subprocess.PIPE)
        assert proc.stdout is not None
        try:
            yield proc.stdout
            while proc.stdout.read(1 << 16):  # the tar's end padding: let the command finish
                pass
        finally:
            proc.stdout.close()
            status = proc.wait()
        if status != 0:
            raise PieError(f"shard command {command!r} exited with status {status}")
    elif parsed.scheme == "file" or not parsed.scheme or len(parsed.scheme) == 1:
        path = url2pathname(parsed.path) if parsed.scheme == "file" else url
        try:
            f = open(path, "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            raise PieError(
                f"shard {path} is missing: its dataset changed since it was packed"
            ) from None
        with f:
            yield f
    else:
        from webdataset.gopen import gopen  # imports torch: only for remote schemes

        with gopen(url, "rb") as f:
            yield f


def tar_members(stream: BinaryIO, url: str) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each regular file of a tar stream."""
    long_name: str | None = None
    while True:
        header = read_exactly(stream, 512, url)
        if header is None or header == bytes(512):
            return
        size = int(header[124:136].rstrip(b"\0 ") or b"0", 8)
        kind = header[156:157]
        data = read_exactly(stream, size + (-size % 512), url)
        if data is None:
            raise PieError(f"shard {url} is truncated")
        data = data[:size]
        if kind in (b"x", b"L"):  # pax extended header / GNU long name: the next member's name
            long_name = pax_path(data) if kind == b"x" else data.rstrip(b"\0").decode()
            continue
        if kind not in (b"0", b"\0"):
            long_name = None
            continue
        name = header[0:100].rstrip(b"\0").decode()
        prefix = header[345:500].rstrip(b"\0").decode()
        if prefix and header[257:262] == b"ustar":
            name = f"{prefix}/{name}"
        yield long_name or name, data
        long_name = None


def pax_path(data: bytes) -> str | None:
    for record in data.decode().splitlines():
        _, _, item = record.partition(" ")
        field, _, value = item.partition("=")
        if field == "path":
            return value
    return None


def read_exactly(stream: BinaryIO, n: int, url: str) -> bytes | None:
    """n bytes, or None at the end of the stream; a partial read is a truncated shard."""
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    if left == n and n:
        return None
    if left:
        raise PieError(f"shard {url} is truncated")
    return b"".join(chunks)


def image_field(sample: dict[str, Any]) -> tuple[str, bytes]:
    """The (extension, bytes) of a raw sample's image."""
    for ext in IMAGE_EXTS:
        if ext in sample:
            return ext, sample[ext]
    raise PieError(f"sample {sample.get('__key__')!r} has no image ({', '.join(IMAGE_EXTS)})")
