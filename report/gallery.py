"""Gallery thumbnails, read from a dataset's shards by key.

Each image is decoded once, however many populations find it a PIE, shrunk to `size` pixels on
its long side (never enlarged: the page scales small images up, pixelated) and kept as a
`data:` URI, so the page needs no file beside it. Grayscale and palette images become PNG,
others JPEG. Only the shards that hold a wanted key are read, each once, start to end.
"""

from __future__ import annotations

import base64
import io
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

from PIL import Image

from pie.shards import image_field, samples

JPEG_QUALITY = 80


def thumbnail(data: bytes, size: int) -> str:
    """The `data:` URI of an encoded image shrunk to at most `size` pixels on its long side."""
    with Image.open(io.BytesIO(data)) as image:
        image.draft("RGB", (size, size))  # JPEG: decode at a reduced scale (much faster)
        image.thumbnail((size, size))
        out = io.BytesIO()
        if image.mode in ("1", "L", "P"):
            image.save(out, "PNG", optimize=True)
            kind = "png"
        else:
            image.convert("RGB").save(out, "JPEG", quality=JPEG_QUALITY)
            kind = "jpeg"
    return f"data:image/{kind};base64,{base64.b64encode(out.getvalue()).decode()}"


def thumbnails(shard_dir: Path, shards: Mapping[str, str], size: int) -> tuple[dict[str, str], int]:
    """key -> data URI of each key of `shards` (key -> shard file name) found in `shard_dir`;
    also returns how many keys were not found (their shard file is missing)."""
    wanted: dict[str, set[str]] = defaultdict(set)
    for key, shard in shards.items():
        wanted[shard].add(key)
    found: dict[str, str] = {}
    for shard, keys in sorted(wanted.items()):
        path = shard_dir / shard
        if not path.is_file():
            continue
        for sample in samples(str(path)):
            if sample["__key__"] in keys:
                found[sample["__key__"]] = thumbnail(image_field(sample)[1], size)
    return found, len(shards) - len(found)
