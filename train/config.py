"""The `[train]` table: what population to train and how (defaults: the Fashion-MNIST demo)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pie.config import DEVICES

# settings that do not change any model's weights: how the run executes, and which jobs exist
# (a job is one method, sparsity and seed); every other setting is part of what a checkpoint is.
# `save_every` is execution only because a resumed job is bit-identical to an uninterrupted one;
# `channels_last`, `compile` and `deterministic` change kernels, not the computation (float
# rounding aside, as on another GPU); `precision` changes the arithmetic and is part of what a
# checkpoint is.
EXECUTION = (
    "device",
    "threads",
    "workers",
    "loader_workers",
    "save_every",
    "channels_last",
    "compile",
    "deterministic",
)
POPULATION = ("methods", "sparsities", "seeds")

METHODS = ("magnitude", "global_magnitude", "random_independent", "random_cumulative")
DATA_PATHS = ("auto", "memory", "stream")
AUGMENTS = ("auto", "resized_crop_flip", "crop_flip", "flip", "none")
LAYER_SETS = ("reference", "convs", "all")
PRECISIONS = ("fp32", "bf16")
MASKED_WEIGHTS = ("frozen", "reference")


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
    batch_size: int = 128  # the global batch: split evenly over torchrun's processes
    lr: float = 0.1  # per 256 images; scaled linearly with batch_size
    lr_schedule: str = "cosine"  # cosine | step; either is set per step, after a linear warm-up
    lr_milestones: tuple[float, ...] = (30.0, 60.0, 80.0)  # epochs, for lr_schedule = "step"
    warmup_epochs: float = 0.5
    momentum: float = 0.9
    nesterov: bool = True
    # frozen: not on batch-norm parameters or biases; reference: on all but batch norm's
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    # auto: pad-4, random crop and flip for inputs <= 32 px, random resized crop (scale
    # 0.08-1) and flip above; or one of resized_crop_flip, crop_flip, flip, none
    augment: str = "auto"
    # the input pipeline: "memory" decodes the set into RAM (small sets), "stream" reads the
    # shards through DataLoader workers; "auto" picks memory below 2 GB of decoded pixels
    data: str = "auto"
    loader_workers: int = 4  # DataLoader worker processes per process, streaming path
    # start every job from this dense checkpoint (a pie checkpoint directory or a state_dict
    # file, e.g. torchvision's) and prune while fine-tuning; "" = from scratch
    init_from: str = ""
    # gradual pruning, Zhu & Gupta: masks update every prune_frequency steps in [start, end]
    prune_start_epoch: float = 0.5
    prune_end_epoch: float = 2.0
    prune_frequency: int = 50
    block: tuple[int, ...] = (1, 1)  # [h, w]: prune whole blocks by their mean |w|
    # which weights are pruned: reference = every conv (stem included) and every dense layer
    # but the last; convs = convolutions only; all = every conv and dense layer
    prune_layers: str = "reference"
    keep_layers: tuple[str, ...] = ()  # fnmatch patterns of weight names left dense
    # what a masked weight is (train.pruning): "frozen" holds it at 0, without gradient or
    # momentum; "reference" (the study's TF pruning) trains the raw weight under the forward
    # w * mask, recomputes masks from the raw |w| (pruned weights can return), scales the kept
    # weights of random_independent by 1 / (1 - s), fires updates when last_update +
    # prune_frequency <= step, and puts weight decay on biases too
    masked_weights: str = "frozen"
    # execution
    device: str = "auto"
    threads: int = 1  # torch threads per model: part of what makes a checkpoint bit-exact
    workers: int = 2  # models trained in parallel processes (single-process runs)
    save_every: int = 0  # steps between resumable states (0 = none)
    precision: str = "fp32"  # fp32 | bf16 (autocast, CUDA only)
    channels_last: bool = False  # CUDA only
    compile: bool = False  # torch.compile the model, CUDA only
    # CUDA: deterministic algorithms only (cudnn.deterministic, no cudnn.benchmark, cuBLAS's
    # fixed workspace), slower; off: the fastest kernels. CPU runs are always deterministic.
    deterministic: bool = False

    def __post_init__(self) -> None:
        for s in self.sparsities:
            if not 0.0 <= s < 1.0:
                raise ValueError(f"sparsity must be in [0, 1), got {s}")
        for m in self.methods:
            if m not in METHODS:
                raise ValueError(f"unknown pruning method {m!r} (known: {', '.join(METHODS)})")
        choices = {
            "device": (self.device, DEVICES),
            "lr_schedule": (self.lr_schedule, ("cosine", "step")),
            "augment": (self.augment, AUGMENTS),
            "data": (self.data, DATA_PATHS),
            "prune_layers": (self.prune_layers, LAYER_SETS),
            "precision": (self.precision, PRECISIONS),
            "masked_weights": (self.masked_weights, MASKED_WEIGHTS),
        }
        for key, (value, known) in choices.items():
            if value not in known:
                raise ValueError(f"train.{key} must be one of {', '.join(known)}, got {value!r}")
        if self.seeds < 1 or self.epochs <= 0 or self.batch_size < 1 or self.prune_frequency < 1:
            raise ValueError("seeds, epochs, batch_size and prune_frequency must be positive")
        if not 0 <= self.prune_start_epoch <= self.prune_end_epoch <= self.epochs:
            raise ValueError("need 0 <= prune_start_epoch <= prune_end_epoch <= epochs")
        if self.threads < 1 or self.workers < 1 or self.loader_workers < 0:
            raise ValueError("threads and workers must be >= 1, loader_workers >= 0")
        if self.save_every < 0:
            raise ValueError("save_every must be >= 0 (0 = no resumable states)")
        if len(self.block) != 2 or min(self.block) < 1:
            raise ValueError(f"block must be [h, w] with h, w >= 1, got {list(self.block)}")


# -- pie compress -------------------------------------------------------------------------------

ONESHOT = {"oneshot_magnitude": "per_layer", "oneshot_global_magnitude": "global"}
SEMISTRUCTURED = re.compile(r"semistructured_(\d+)_(\d+)$")
QUANTISED = ("float16", "bfloat16", "int8_hybrid", "int8_full")  # pie.compressed.FORMATS
PARENT = re.compile(r"([A-Za-z0-9][A-Za-z0-9_]*)@([0-9.]+)$")  # '<method>@<level>'


@dataclass(frozen=True)
class CompressConfig:
    experiment: str = "default"
    parent: str = "dense"  # the parent population: 'dense', or '<method>@<level>' (one level)
    methods: tuple[str, ...] = ()
    sparsities: tuple[float, ...] = (0.9,)  # the one-shot methods' levels
    finetune_steps: int = 0  # one-shot methods: SGD steps with the masks held, 0 = none
    finetune_lr: float = 0.01  # constant learning rate of the fine-tune
    calibration: int = 512  # int8_full: training images calibrating the activation ranges
    calibration_seed: int = 0
    device: str = "cpu"  # where pruned and float16/bfloat16 models are evaluated (fine-tuned)
    threads: int = 0  # torch threads; 0: torch's default

    def __post_init__(self) -> None:
        for method in self.methods:
            pattern = SEMISTRUCTURED.match(method)
            if pattern and 0 < int(pattern[1]) < int(pattern[2]):
                continue
            if method not in (*ONESHOT, *QUANTISED):
                known = ", ".join((*ONESHOT, "semistructured_<n>_<m>", *QUANTISED))
                raise ValueError(f"unknown compression method {method!r} (known: {known})")
        if self.parent != "dense" and not PARENT.match(self.parent):
            raise ValueError(
                f"compress.parent must be 'dense' or '<method>@<level>', got {self.parent!r}"
            )
        for s in self.sparsities:
            if not 0.0 < s < 1.0:
                raise ValueError(f"compress.sparsities must be in (0, 1), got {s}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.finetune_steps < 0 or self.calibration < 1 or self.threads < 0:
            raise ValueError("finetune_steps and threads must be >= 0, calibration >= 1")
        if not self.finetune_lr > 0:
            raise ValueError(f"finetune_lr must be > 0, got {self.finetune_lr}")
