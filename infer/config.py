"""The `[infer]` table."""

from __future__ import annotations

from dataclasses import dataclass

from pie.config import DEVICES

PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class InferConfig:
    datasets: tuple[str, ...] = ()  # empty: every evaluation dataset (not training sets, exports)
    batch_size: int = 1000  # images decoded together and sent through every model
    device: str = "auto"
    threads: int = 0  # torch threads for the forward passes; 0: torch's default (one per core)
    workers: int = 2  # DataLoader processes decoding batches (on CPU, scoring them too); 0: none
    precision: str = "fp32"  # bf16: autocast on CUDA; classifier and probabilities in float32
    channels_last: bool = False  # CUDA only
    # GiB of models kept loaded per process that scores (least recently used evicted); unset:
    # half the free memory of the CUDA device at the start, 2 GiB on CPU (each loader worker)
    model_memory: float | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.threads < 0 or self.workers < 0:
            raise ValueError("infer.batch_size must be >= 1, threads and workers >= 0")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.model_memory is not None and not self.model_memory > 0:
            raise ValueError(f"infer.model_memory must be > 0 (GiB), got {self.model_memory}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"infer.precision must be one of {', '.join(PRECISIONS)}")
