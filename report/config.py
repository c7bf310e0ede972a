"""The `[report]` table."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReportConfig:
    experiment: str = "default"
    # the clean dataset reported on; unset, the `[analyze]` table's (`pie report` looks it up)
    dataset: str = "fmnist-test"
    max_gallery: int = 5000  # PIE entries in the gallery at most, the largest L1 distance first
    thumbnail: int = 64  # a gallery thumbnail's long side in pixels
    page_size: int = 60  # gallery entries per page

    def __post_init__(self) -> None:
        if self.max_gallery < 0:
            raise ValueError(f"report.max_gallery must be 0 or more, got {self.max_gallery}")
        if not 8 <= self.thumbnail <= 512:
            raise ValueError(f"report.thumbnail must be in [8, 512] pixels, got {self.thumbnail}")
        if not 1 <= self.page_size <= 1000:
            raise ValueError(f"report.page_size must be in [1, 1000], got {self.page_size}")
