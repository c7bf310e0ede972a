"""The `[analyze]` and `[export]` tables."""

from __future__ import annotations

import re
from dataclasses import dataclass

TIE_BREAKS = ("largest", "smallest", "exclude")
SIGNIFICANCE_ON = ("p", "q")
MANIFESTS = ("parquet", "csv")
MEMORY = re.compile(r"^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$", re.IGNORECASE)


@dataclass(frozen=True)
class AnalyzeConfig:
    experiment: str = "default"
    dataset: str = "fmnist-test"  # the clean evaluation set the summary reports on
    alpha: float = 0.05  # a class is significantly impacted at p (or q) <= alpha
    significance_on: str = "p"  # p: raw p-values, no correction (the reference); q: BH q-values
    # a tied modal label goes to the largest class id (the reference), or the smallest; exclude:
    # images with a tied mode in either population are neither PIE nor non-PIE
    mode_tie_break: str = "largest"
    memory_limit: str = "2GB"  # DuckDB's memory limit while analysing (it spills beyond)
    threads: int = 0  # DuckDB worker threads; 0: one per core

    def __post_init__(self) -> None:
        if not 0 < self.alpha < 1:
            raise ValueError(f"analyze.alpha must be in (0, 1), got {self.alpha}")
        if self.mode_tie_break not in TIE_BREAKS:
            raise ValueError(f"analyze.mode_tie_break must be one of {', '.join(TIE_BREAKS)}")
        if self.significance_on not in SIGNIFICANCE_ON:
            raise ValueError("analyze.significance_on must be 'p' or 'q'")
        if not MEMORY.match(self.memory_limit):
            raise ValueError(
                f"analyze.memory_limit must be a size such as '2GB', got {self.memory_limit!r}"
            )
        if self.threads < 0:
            raise ValueError(
                f"analyze.threads must be 0 (one per core) or more, got {self.threads}"
            )


@dataclass(frozen=True)
class ExportConfig:
    """The population exported is (experiment, method, level); level unset: `sparsity` (a pruning
    method's level), so a quantised one needs `level` (its bit width)."""

    experiment: str = "default"
    dataset: str = "fmnist-test"
    method: str = "magnitude"
    sparsity: float = 0.9
    level: float | None = None
    non_pie: bool = False  # export the complement (images whose modes agree)
    manifest: str = "parquet"  # the manifest beside the shards: parquet or csv
    shard_max_count: int = 10_000

    def __post_init__(self) -> None:
        if self.method == "dense":
            raise ValueError(
                "export.method must be a compressed population's (dense is the baseline)"
            )
        if self.level is None and not 0 < self.sparsity < 1:
            raise ValueError(f"export.sparsity must be in (0, 1), got {self.sparsity}")
        if self.level is not None and self.level < 0:
            raise ValueError(f"export.level must be 0 or more, got {self.level}")

    @property
    def population_level(self) -> float:
        """The level of the population exported: `level`, else `sparsity`."""
        return self.sparsity if self.level is None else self.level
        if self.manifest not in MANIFESTS:
            raise ValueError(f"export.manifest must be parquet or csv, got {self.manifest!r}")
