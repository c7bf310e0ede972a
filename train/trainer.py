"""Train one model of a population, top to bottom: data, model, optimiser, gradual pruning,
evaluation, checkpoint. Runs in a worker process (or in every torchrun process, together)
and never touches the database.

Determinism: the torch seed is derived from (experiment, method, sparsity, seed); the data
order and augmentation come from (seed, epoch, step) (`train.data`); `threads` is fixed; on CPU
only deterministic algorithms run; so the same job gives a bit-identical `model.pt` on CPU,
resumed or not (`train.resume`). On CUDA the fast kernels run (cudnn.benchmark on) unless
`train.deterministic` asks for deterministic ones (`recipe.determinism`).

Under torchrun every process runs `train_one` for the same job: the model is wrapped in
DistributedDataParallel (`pie.distributed`: gloo on CPU, nccl for CUDA tensors), each process
takes its slice of every global batch (`batch_size` is the global batch, the learning rate
follows it), the pruning masks are computed on rank 0 and broadcast, test top-1 is summed over
the ranks, and rank 0 alone writes resumable states and the checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from pie import checkpoints, distributed
from pie.config import to_dict
from pie.distributed import World
from pie.images import Preprocess, normalize
from pie.models import create, prunable_weights, resolve_device
from pie.paths import WorkRoot
from train import finetune, loaders, resume
from train.config import TrainConfig
from train.data import preprocess, steps
from train.masks import Masks
from train.pruning import Pruner, ReferencePruner, sparsity_report
from train.recipe import (
    check_device,
    check_world,
    determinism,
    learning_rate,
    param_groups,
    schedule,
)


@dataclass(frozen=True)
class Job:
    model_id: str
    method: str  # 'dense' for sparsity 0
    sparsity: float
    seed: int


def make_job(experiment: str, method: str, sparsity: float, seed: int) -> Job:
    if sparsity == 0:
        return Job(f"{experiment}-dense-seed{seed}", "dense", 0.0, seed)
    return Job(f"{experiment}-{method}-s{sparsity:g}-seed{seed}", method, sparsity, seed)


def torch_seed(experiment: str, job: Job) -> int:
    """Independent populations: each (method, sparsity, seed) gets its own stream."""
    text = f"{experiment}/{job.method}/{job.sparsity:g}/{job.seed}"
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


def share_masks(world: World, masks: Masks) -> Masks:
    """Rank 0's masks on every rank (bool tensors travel as uint8)."""
    out = {}
    for name, mask in masks.items():
        out[name] = distributed.broadcast(world, mask.to(torch.uint8), src=0).bool()
    return out


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module,
    batches: Iterable[loaders.Batch],
    cfg: TrainConfig,
    device: torch.device,
    world: World,
    pre: Preprocess,
) -> float:
    """Top-1 over `batches` (this rank's share of the eval set, `loaders.Input.evaluation`), made
    model inputs by `pre`; under torchrun the counts are summed over the ranks."""
    model.eval()
    correct = torch.zeros(2, dtype=torch.int64)
    for x, y in batches:
        x = x.to(device, non_blocking=True)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(cfg, device):
            pred = model(normalize(x, pre)).argmax(1).cpu()
        correct += torch.tensor([int((pred == y).sum()), len(y)])
    distributed.all_reduce_sum(world, correct)
    return int(correct[0]) / max(1, int(correct[1]))


def autocast(cfg: TrainConfig, device: torch.device):
    if cfg.precision == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def train_one(
    root: WorkRoot,
    cfg: TrainConfig,
    job: Job,
    num_classes: int,
    label_space: str,
    eval_pre: Preprocess | None = None,
) -> checkpoints.Sidecar | None:
    """Train, prune and save one checkpoint; returns its sidecar (None on ranks other than 0,
    which write nothing). Continues from the job's resumable state when there is one."""
    started = time.time()
    device = resolve_device(cfg.device)
    deterministic = determinism(cfg, device)  # before CUDA starts
    world = distributed.init(device)
    device = distributed.device_of(world, device)
    check_world(cfg, world)
    check_device(cfg, device)
    torch.set_num_threads(cfg.threads)
    pre, pin = preprocess(cfg), device.type == "cuda"
    seed = torch_seed(cfg.experiment, job)
    train, test = loaders.load_data(cfg, root, world, seed, pin, eval_pre or pre)
    steps_per_epoch, total = steps(cfg, train.shards.n_images)

    # model, optimiser, pruner
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = create(cfg.arch, num_classes, cfg.channels, cfg.image_size)
    if cfg.init_from:
        finetune.load_dense(model, cfg.init_from, cfg.arch, num_classes)
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(
        param_groups(model, cfg.weight_decay, cfg.masked_weights),
        lr=0.0,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
    )
    plan = schedule(cfg, job.sparsity, steps_per_epoch)
    pruner = None
    if job.sparsity > 0:
        weights = prunable_weights(model, cfg.prune_layers, cfg.keep_layers)
        share = partial(share_masks, world) if world.distributed else None
        if cfg.masked_weights == "reference":
            pruner = ReferencePruner(
                model, weights, job.method, plan, generator, tuple(cfg.block), share
            )
        else:
            pruner = Pruner(weights, job.method, plan, generator, tuple(cfg.block), share)

    # where a killed run of this job stopped
    state_file = resume.state_path(root, job.model_id)
    step, recent = 0, []
    if state_file.exists():
        step, recent = resume.load(state_file, to_dict(cfg), model, optimizer, pruner, generator)
    net: torch.nn.Module = model
    if world.distributed:
        ids = [device.index] if device.type == "cuda" else None
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if cfg.compile:
        net = torch.compile(net)

    # the loop: at the start of each step the pruner updates the masks (on schedule, step 0
    # included); during backward it zeroes the gradients of masked weights
    model.train()
    for x, y in train.batches(step, total):
        if pruner is not None:
            pruner.update(step, optimizer)
        x, y = x.to(device, non_blocking=pin), y.to(device, non_blocking=pin)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, total, steps_per_epoch, cfg)
        with autocast(cfg, device):
            loss = F.cross_entropy(net(normalize(x, pre)), y, label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if pruner is not None and world.distributed:
            pruner.mask_gradients()
        optimizer.step()
        step += 1
        recent = [*recent[-99:], loss.detach()]
        if cfg.save_every and step % cfg.save_every == 0 and step < total:
            if world.is_main:
                resume.save(
                    state_file,
                    step=step,
                    model=model,
                    optimizer=optimizer,
                    pruner=pruner,
                    generator=generator,
                    losses=[float(v) for v in recent],
                    config=to_dict(cfg),
                )
            distributed.barrier(world)

    if pruner is not None:
        pruner.finish()  # "reference": w * mask baked into the stock weights
    test_top1 = evaluate(model, test.evaluation(), cfg, device, world, test.pre)
    if not world.is_main:
        distributed.barrier(world)
        return None
    achieved, per_layer = sparsity_report(
        {
            k: v.detach()
            for k, v in prunable_weights(model, cfg.prune_layers, cfg.keep_layers).items()
        }
    )
    losses = [float(v) for v in recent]
    sidecar = checkpoints.Sidecar(
        model_id=job.model_id,
        experiment=cfg.experiment,
        arch=cfg.arch,
        num_classes=num_classes,
        label_space=label_space,
        method=job.method,
        target_sparsity=job.sparsity,
        achieved_sparsity=achieved,
        layer_sparsity=per_layer,
        seed=job.seed,
        torch_seed=seed,
        train_dataset=cfg.dataset,
        eval_dataset=cfg.eval_dataset,
        test_top1=test_top1,
        train_loss=sum(losses) / max(1, len(losses)),
        steps=total,
        schedule={
            "begin_step": plan.begin_step,
            "end_step": plan.end_step,
            "frequency": plan.frequency,
        },
        preprocess=pre.to_dict(),
        config=to_dict(cfg),
        torch_version=torch.__version__,
        device=str(device),
        seconds=round(time.time() - started, 2),
        world_size=world.size,
        data=train.path,
        deterministic=deterministic,
    )
    saved = checkpoints.save(root, model.cpu(), sidecar)
    state_file.unlink(missing_ok=True)
    distributed.barrier(world)
    return saved
