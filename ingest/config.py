"""The ingest stage's configs: `[ingest]` (packing sources) and `[corrupt]` (variants)."""

from __future__ import annotations

from dataclasses import dataclass

from ingest.corruption_tables import BENCHMARK, COLOUR_ONLY, CORRUPTIONS, SEVERITIES
from pie.paths import check_name


@dataclass(frozen=True)
class IngestConfig:
    fashion_mnist_dir: str = "/usr/share/datasets/fashion-mnist"
    limit: int = 0  # keep the first N images of each split (0 = all): quick looks and tests
    # a shard closes at shard_max_count samples or before its image bytes pass shard_max_size
    shard_max_count: int = 10_000
    shard_max_size: int = 256 * 1024 * 1024
    seed: int = 0  # the order of a training set's samples (evaluation sets stay sorted)
    workers: int = 2  # worker processes; the bytes written do not depend on it

    def __post_init__(self) -> None:
        if self.limit < 0:
            raise ValueError(f"ingest.limit must be >= 0, got {self.limit}")
        if self.shard_max_count < 1 or self.shard_max_size < 1:
            raise ValueError("ingest.shard_max_count and shard_max_size must be positive")
        if self.workers < 1:
            raise ValueError(f"ingest.workers must be >= 1, got {self.workers}")


@dataclass(frozen=True)
class CorruptConfig:
    dataset: str = "fmnist-test"
    corruptions: tuple[str, ...] = BENCHMARK
    severities: tuple[int, ...] = SEVERITIES
    # 0: the parent's geometry (ingest.corrupt.parent_geometry: ImageNet 224 px RGB crops,
    # CIFAR 32 px RGB, Fashion-MNIST 28 px grayscale, ...). A value is for a parent whose
    # images do not fix it (photos of many sizes outside ImageNet-1k); one that differs from
    # the parent's is refused, as is 1 channel for a colour parent.
    image_size: int = 0
    channels: int = 0  # 1: grayscale, 3: RGB
    seed: int = 0
    workers: int = 2  # worker processes; the bytes written do not depend on it
    # how variants are stored: "png" (lossless) or "jpeg" at jpeg_quality (85: the released look)
    format: str = "png"
    jpeg_quality: int = 85

    def __post_init__(self) -> None:
        check_name(self.dataset, "dataset name")  # variants are named <dataset>-<c>-<s>
        if not self.corruptions:
            raise ValueError("no corruption given (corrupt.corruptions or --corruption is empty)")
        if not self.severities:
            raise ValueError("no severity given (corrupt.severities or --severity is empty)")
        for name in self.corruptions:
            if name not in CORRUPTIONS:
                raise ValueError(f"unknown corruption {name!r} (known: {', '.join(CORRUPTIONS)})")
        for s in self.severities:
            if s not in SEVERITIES:
                raise ValueError(f"severity must be 1-5, got {s}")
        if self.channels not in (0, 1, 3):
            raise ValueError("corrupt.channels must be 1 or 3 (0 or left out: the parent's)")
        if self.image_size != 0 and self.image_size < 8:
            raise ValueError("corrupt.image_size must be at least 8 (0 or left out: the parent's)")
        check_colour_only(self.corruptions, self.channels, "corrupt.channels = 1")
        if self.workers < 1:
            raise ValueError(f"corrupt.workers must be >= 1, got {self.workers}")
        if self.format not in ("png", "jpeg"):
            raise ValueError(f"corrupt.format must be png or jpeg, got {self.format!r}")
        if not 1 <= self.jpeg_quality <= 95:
            raise ValueError(f"corrupt.jpeg_quality must be 1-95, got {self.jpeg_quality}")


def check_colour_only(corruptions: tuple[str, ...], channels: int, why: str) -> None:
    """Corruptions that do nothing to grayscale images are refused on 1 channel (`why`: what
    made it 1 channel, for the message)."""
    useless = [name for name in corruptions if name in COLOUR_ONLY]
    if channels == 1 and useless:
        raise ValueError(
            f"{', '.join(useless)} on grayscale images ({why}): "
            f"{'; '.join(COLOUR_ONLY[n] for n in useless)}; leave it out ('all' includes it, "
            "'benchmark' does not) or set channels = 3"
        )
