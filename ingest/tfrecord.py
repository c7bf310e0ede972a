"""ImageNet TFRecords (TF-Slim's `build_imagenet_data.py` and TFDS `imagenet2012`), read
without TensorFlow.

A TFRecord file is a sequence of records: `length` (uint64, little-endian), the masked CRC-32C
of those 8 bytes (uint32), `length` bytes of data and the masked CRC-32C of the data. The data
is a `tf.train.Example` protobuf: `features` (field 1), a map of name -> `Feature` (map entries:
key field 1, value field 2), each a `BytesList` (1), `FloatList` (2) or `Int64List` (3) whose
values are field 1 (int64 values packed or not).

Features read: the image from `image/encoded` (TF-Slim) or `image` (TFDS); the label from
`image/class/label` (TF-Slim: 1-based, 0 is TF-Slim's background class, so `label_offset` 1 is
subtracted) or `label` (TFDS: 0-based, nothing subtracted); the file name from
`image/filename` or `file_name`, for the key `<wnid>/<file stem>` (else
`<wnid>/<tfrecord file>-<record index>`). A record whose data CRC fails, that is no Example,
or whose label or image is unusable is one `ingest_errors` row and the rest is packed; a bad
length CRC or a truncated record ends that file (its framing cannot be trusted past it), also
one row.
"""

from __future__ import annotations

import glob
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ingest.crc32c import masked_crc32c
from ingest.sources import Entry, Reader, Rejected, Source, checked_image
from pie.catalog import DatasetSpec, LabelSpace, imagenet1k
from pie.errors import PieError
from pie.paths import check_name
from pie.shards import Sample, safe_key

IMAGE_FEATURES = ("image/encoded", "image")
LABEL_FEATURES = {"image/class/label": None, "label": 0}  # None: the configured offset
NAME_FEATURES = ("image/filename", "file_name")


class FormatError(ValueError):
    """A record that is not what the format says."""


def records(f: BinaryIO) -> Iterator[tuple[int, bytes | None, str | None]]:
    """(offset of the data, data or None, error or None) for every record of an open file;
    a framing error ends the iteration after being yielded."""
    while True:
        start = f.tell()
        header = f.read(12)
        if not header:
            return
        if len(header) < 12:
            yield start, None, f"truncated record header at byte {start}: rest of file skipped"
            return
        length, length_crc = struct.unpack("<QI", header)
        if masked_crc32c(header[:8]) != length_crc:
            yield start, None, f"length CRC mismatch at byte {start}: rest of file skipped"
            return
        data = f.read(length)
        footer = f.read(4)
        if len(data) < length or len(footer) < 4:
            yield start, None, f"truncated record at byte {start}: rest of file skipped"
            return
        if masked_crc32c(data) != struct.unpack("<I", footer)[0]:
            yield start + 12, None, f"data CRC mismatch in the record at byte {start}"
            continue
        yield start + 12, data, None


def varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise FormatError("truncated varint")
        byte = buf[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise FormatError("varint too long")


def fields(buf: bytes) -> Iterator[tuple[int, int, Any]]:
    """(field number, wire type, value) of a protobuf message: ints for varints and fixed
    widths, bytes for length-delimited fields."""
    pos = 0
    while pos < len(buf):
        tag, pos = varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = varint(buf, pos)
        elif wire == 1:
            value, pos = int.from_bytes(buf[pos : pos + 8], "little"), pos + 8
        elif wire == 2:
            size, pos = varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == 5:
            value, pos = int.from_bytes(buf[pos : pos + 4], "little"), pos + 4
        else:
            raise FormatError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise FormatError("truncated protobuf field")
        yield number, wire, value


def parse_example(data: bytes) -> dict[str, list[bytes] | list[int]]:
    """A `tf.train.Example` as {feature name: its bytes or int64 values} (floats left out)."""
    out: dict[str, list[bytes] | list[int]] = {}
    for number, wire, features in fields(data):
        if number != 1 or wire != 2:
            continue
        for n, w, entry in fields(features):
            if n != 1 or w != 2:
                continue
            name, feature = b"", b""
            for fn, fw, v in fields(entry):
                if fn == 1 and fw == 2:
                    name = v
                elif fn == 2 and fw == 2:
                    feature = v
            out[name.decode("utf-8", "replace")] = feature_values(feature)
    return out


def feature_values(feature: bytes) -> list[bytes] | list[int]:
    for kind, wire, body in fields(feature):
        if kind == 1 and wire == 2:  # BytesList
            return [v for n, w, v in fields(body) if n == 1 and w == 2]
        if kind == 3 and wire == 2:  # Int64List: packed or one varint per value
            values: list[int] = []
            for n, w, v in fields(body):
                if n == 1 and w == 0:
                    values.append(signed(v))
                elif n == 1 and w == 2:
                    pos = 0
                    while pos < len(v):
                        x, pos = varint(v, pos)
                        values.append(signed(x))
            return values
    return []


def signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def first(example: dict[str, list], names: tuple[str, ...]) -> tuple[str, Any] | None:
    for name in names:
        if example.get(name):
            return name, example[name][0]
    return None


@dataclass(frozen=True)
class TFRecordReader(Reader):
    """A unit is one TFRecord file; an entry's ref is (file, data offset, data length)."""

    space: LabelSpace
    label_offset: int

    def scan(self, unit: str, measure: bool) -> list[Entry | Rejected]:
        out: list[Entry | Rejected] = []
        wnids = {cid: wnid for cid, wnid, _ in self.space.classes}
        with open(unit, "rb") as f:
            for index, (offset, data, error) in enumerate(records(f)):
                where = f"{unit} record {index}"
                if error is not None:
                    out.append(Rejected(where, error))
                    continue
                try:
                    image, label, name = self.decode(data)
                    ext = checked_image(image)
                except ValueError as e:
                    out.append(Rejected(where, str(e)))
                    continue
                stem = Path(name).stem if name else f"{Path(unit).stem}-{index:06d}"
                key = safe_key(f"{wnids[label]}/{stem}" if wnids.get(label) else stem)
                out.append(Entry((unit, offset, len(data)), key, label, ext, len(image)))
        return out

    def decode(self, data: bytes) -> tuple[bytes, int, str | None]:
        try:
            example = parse_example(data)
        except (FormatError, UnicodeDecodeError) as e:
            raise ValueError(f"not a tf.train.Example: {e}") from None
        image = first(example, IMAGE_FEATURES)
        found = first(example, tuple(LABEL_FEATURES))
        if image is None or found is None:
            raise ValueError(
                f"no image ({' or '.join(IMAGE_FEATURES)}) or no label "
                f"({' or '.join(LABEL_FEATURES)}) feature; found {', '.join(sorted(example))}"
            )
        feature, raw = found
        offset = LABEL_FEATURES[feature]
        offset = self.label_offset if offset is None else offset
        label = raw - offset
        if not 0 <= label < len(self.space.classes):
            raise ValueError(
                f"{feature} {raw} minus the label offset {offset} is outside the "
                f"{len(self.space.classes)} classes of {self.space.name}"
            )
        name = first(example, NAME_FEATURES)
        return image[1], label, name[1].decode("utf-8", "replace") if name else None

    def sample(self, entry: Entry) -> Sample:
        path, offset, length = entry.ref
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(length)
        image, _, name = self.decode(data)
        meta = {"source": f"{path}@{offset}", **({"filename": name} if name else {})}
        return Sample(entry.key, entry.label, image, entry.ext, meta)


def tfrecord(pattern: str, name: str, split: str = "eval", label_offset: int = 1) -> Source:
    """The TFRecord files matching the glob `pattern` (sorted), ImageNet-1k labels."""
    check_name(name, "dataset name")
    files = sorted(str(Path(p).resolve()) for p in glob.glob(pattern) if Path(p).is_file())
    if not files:
        raise PieError(f"no TFRecord file matches {pattern!r}")
    space = imagenet1k()
    spec = DatasetSpec(name, space.name, "clean", split, os.path.abspath(pattern))
    reader = TFRecordReader(space, label_offset)
    looked_in = f"the {len(files)} TFRecord files matching {pattern!r}"
    options = {"label_offset": label_offset}
    return Source(spec, space, lambda: iter(files), reader, looked_in, options=options)
