"""The `[train]` table: what population to train and how (defaults: the Fashion-MNIST demo)."""

from __future__ import annotations

from dataclasses import dataclass

from pie.config import DEVICES

# settings that do not change any model's weights: how the run executes, and which jobs exist
# (a job is one method, sparsity and seed); every other setting is part of what a checkpoint is
EXECUTION = ("device", "threads", "workers")
POPULATION = ("methods", "sparsities", "seeds")

METHODS = ("magnitude", "global_magnitude", "random_independent", "random_cumulative")


@dataclass(frozen=True)
class TrainConfig:
    experiment: str = "default"
    dataset: str = "fmnist-train"
    eval_dataset: str = "fmnist-test"  # for the test top-1 in each sidecar
    arch: str = "small_cnn"
    # preprocessing (saved in each checkpoint; inference repeats it)
    image_size: int = 28
    channels: int = 1
    mean: tuple[float, ...] = (0.2860,)
    std: tuple[float, ...] = (0.3530,)
    # population: dense models for sparsity 0, then every method at every other sparsity
    methods: tuple[str, ...] = ("magnitude",)
    sparsities: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7, 0.9)
    seeds: int = 5
    # optimisation (the reference recipe, scaled down): SGD + Nesterov, warm-up, label smoothing
    epochs: float = 3.0
    batch_size: int = 128
    lr: float = 0.1  # per 256 images; scaled linearly with batch_size
    lr_schedule: str = "cosine"  # cosine | step
    lr_milestones: tuple[float, ...] = (30.0, 60.0, 80.0)  # epochs, for lr_schedule = "step"
    warmup_epochs: float = 0.5
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4  # not on batch-norm parameters or biases
    label_smoothing: float = 0.1
    augment: bool = True  # random horizontal flips
    # gradual pruning, Zhu & Gupta: masks update every prune_frequency steps in [start, end]
    prune_start_epoch: float = 0.5
    prune_end_epoch: float = 2.0
    prune_frequency: int = 50
    # execution
    device: str = "auto"
    threads: int = 1  # torch threads per model: part of what makes a checkpoint bit-exact
    workers: int = 2  # models trained in parallel processes

    def __post_init__(self) -> None:
        for s in self.sparsities:
            if not 0.0 <= s < 1.0:
                raise ValueError(f"sparsity must be in [0, 1), got {s}")
        for m in self.methods:
            if m not in METHODS:
                raise ValueError(f"unknown pruning method {m!r} (known: {', '.join(METHODS)})")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.lr_schedule not in ("cosine", "step"):
            raise ValueError(f"lr_schedule must be cosine or step, got {self.lr_schedule!r}")
        if self.seeds < 1 or self.epochs <= 0 or self.batch_size < 1 or self.prune_frequency < 1:
            raise ValueError("seeds, epochs, batch_size and prune_frequency must be positive")
        if not 0 <= self.prune_start_epoch <= self.prune_end_epoch <= self.epochs:
            raise ValueError("need 0 <= prune_start_epoch <= prune_end_epoch <= epochs")
        if self.threads < 1 or self.workers < 1:
            raise ValueError("threads and workers must be >= 1")
