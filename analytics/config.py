"""The `[analyze]` and `[export]` tables."""

from __future__ import annotations

from dataclasses import dataclass

TIE_BREAKS = ("largest", "smallest")


@dataclass(frozen=True)
class AnalyzeConfig:
    experiment: str = "default"
    dataset: str = "fmnist-test"  # the clean evaluation set the summary reports on
    alpha: float = 0.05  # a class is significantly impacted at p <= alpha (no correction)
    mode_tie_break: str = "largest"  # a tied modal label goes to the largest class id (reference)

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"analyze.alpha must be in (0, 1), got {self.alpha}")
        if self.mode_tie_break not in TIE_BREAKS:
            raise ValueError(f"analyze.mode_tie_break must be one of {', '.join(TIE_BREAKS)}")


@dataclass(frozen=True)
class ExportConfig:
    experiment: str = "default"
    dataset: str = "fmnist-test"
    method: str = "magnitude"
    sparsity: float = 0.9
    non_pie: bool = False  # export the complement (images whose modes agree)
    shard_max_count: int = 10_000

    def __post_init__(self) -> None:
        if not 0 < self.sparsity < 1:
            raise ValueError(f"export.sparsity must be in (0, 1), got {self.sparsity}")
