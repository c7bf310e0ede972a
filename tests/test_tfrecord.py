"""TFRecords without TensorFlow: CRC-32C against its definition, records written here by a
hand-made tf.train.Example encoder, TF-Slim's 1-based labels, bad CRCs recorded."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ingest import pack
from ingest.config import IngestConfig
from ingest.crc32c import crc32c, masked_crc32c
from ingest.tfrecord import parse_example, tfrecord
from pie import store
from pie.catalog import imagenet1k
from pie.errors import PieError
from pie.shards import read_shards


def crc32c_bitwise(data: bytes) -> int:
    """CRC-32C from its definition: reflected polynomial 0x82F63B78, init and xorout ~0."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_crc32c_matches_its_definition():
    assert crc32c(b"123456789") == 0xE3069283  # the check value of CRC-32C
    assert crc32c(b"") == 0 and crc32c(b"a") == crc32c_bitwise(b"a")
    rng = np.random.default_rng(0)
    for n in (3, 4, 255, 256, 257, 511, 4097, 20_000):
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert crc32c(data) == crc32c_bitwise(data), n
    assert crc32c(b"123456789") != zlib.crc32(b"123456789")  # not the IEEE CRC


# -- a tf.train.Example encoder, written from the protobuf wire format --------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(number: int, payload: bytes) -> bytes:  # wire type 2: length-delimited
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def example(features: dict[str, bytes | int], packed: bool = True) -> bytes:
    entries = b""
    for name, value in features.items():
        if isinstance(value, bytes):
            feature = field(1, field(1, value))  # BytesList
        elif packed:
            feature = field(3, field(1, varint(value)))  # Int64List, packed
        else:
            feature = field(3, varint(1 << 3 | 0) + varint(value))  # Int64List, one varint
        entries += field(1, field(1, name.encode()) + field(2, feature))
    return field(1, entries)


def record(data: bytes) -> bytes:
    length = struct.pack("<Q", len(data))
    return (
        length
        + struct.pack("<I", masked_crc32c(length))
        + data
        + struct.pack("<I", masked_crc32c(data))
    )


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buf, format="JPEG")
    return buf.getvalue()


def test_example_decoding():
    data = example({"image/encoded": b"\x00\xffbytes", "image/class/label": 300})
    assert parse_example(data) == {"image/encoded": [b"\x00\xffbytes"], "image/class/label": [300]}
    unpacked = example({"label": 7}, packed=False)
    assert parse_example(unpacked) == {"label": [7]}


@pytest.fixture
def records(tmp_path) -> Path:
    """Two TF-Slim files: labels 1..3 (1-based), the third record of the first with a bad
    data CRC."""
    out = tmp_path / "tf"
    out.mkdir()
    for f in range(2):
        blob = b""
        for i in range(3):
            label = 1 + (f + i) % 3
            name = f"img_{f}{i}.JPEG".encode()
            image = jpeg(10 * f + i)
            data = example(
                {"image/encoded": image, "image/class/label": label, "image/filename": name}
            )
            rec = record(data)
            if f == 0 and i == 2:
                rec = rec[:-1] + bytes([rec[-1] ^ 1])
            blob += rec
        (out / f"train-{f:05d}-of-00002").write_bytes(blob)
    return out


def test_tfrecords_pack_with_the_label_offset_and_bad_crcs_recorded(root, records):
    source = tfrecord(str(records / "train-*"), "tf", "eval")
    pack.main(root, IngestConfig(workers=1), [source])
    wnids = {cid: wnid for cid, wnid, _ in imagenet1k().classes}
    expected = {}
    for f in range(2):
        for i in range(3):
            if (f, i) != (0, 2):
                label = (f + i) % 3  # TF-Slim's 1 + c is ImageNet-1k class c
                expected[f"{wnids[label]}/img_{f}{i}"] = (label, jpeg(10 * f + i))
    back = {r["__key__"]: (r["cls"], r["jpg"]) for r in read_shards(root.shards("tf"))}
    assert back == expected
    con = store.connect(root, read_only=True)
    errors = store.rows(con, "select source, error from ingest_errors")
    con.close()
    assert len(errors) == 1
    source, error = errors[0]
    assert source.endswith("train-00000-of-00002 record 2")
    assert error.startswith("data CRC mismatch in the record at byte ")


def test_a_broken_length_ends_its_file_only(root, tmp_path):
    good = record(example({"image/encoded": jpeg(0), "image/class/label": 1}))
    (tmp_path / "a.tfrecord").write_bytes(good + b"\x00" * 12 + good)
    (tmp_path / "b.tfrecord").write_bytes(good)
    pack.main(root, IngestConfig(workers=1), [tfrecord(str(tmp_path / "*.tfrecord"), "t")])
    con = store.connect(root, read_only=True)
    n = store.rows(con, "select n_images from datasets")
    errors = store.rows(con, "select error from ingest_errors")
    con.close()
    assert n == [(2,)]
    assert errors == [(f"length CRC mismatch at byte {len(good)}: rest of file skipped",)]


def test_labels_outside_the_classes_and_missing_files_are_refused(root, tmp_path):
    data = example({"image/encoded": jpeg(0), "image/class/label": 0})  # TF-Slim's background
    (tmp_path / "x.tfrecord").write_bytes(record(data))
    with pytest.raises(PieError, match="no image for dataset t"):
        pack.main(root, IngestConfig(workers=1), [tfrecord(str(tmp_path / "x.tfrecord"), "t")])
    con = store.connect(root, read_only=True)
    errors = store.rows(con, "select error from ingest_errors")
    con.close()
    assert errors == [
        ("image/class/label 0 minus the label offset 1 is outside the 1000 classes of imagenet1k",)
    ]
    with pytest.raises(PieError, match="no TFRecord file matches"):
        tfrecord(str(tmp_path / "nothing-*"), "t")
    assert not root.shards("t").exists() and not root.shards("t.partial").exists()
