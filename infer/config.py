"""The `[infer]` table."""

from __future__ import annotations

from dataclasses import dataclass

from pie.config import DEVICES


@dataclass(frozen=True)
class InferConfig:
    datasets: tuple[str, ...] = ()  # empty: every evaluation dataset (not training sets, exports)
    batch_size: int = 1000
    device: str = "auto"
    threads: int = 1  # torch threads per worker
    workers: int = 2  # worker processes, each evaluating one (model, dataset) pair at a time

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.threads < 1 or self.workers < 1:
            raise ValueError("infer.batch_size, threads and workers must be >= 1")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
