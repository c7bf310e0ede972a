"""Several processes, torch's way: `torchrun` starts them and sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT; `init` joins the process group and says who this
process is. Without torchrun it is a world of one and nothing is initialised; under torchrun
even one process joins a group (of one), so one GPU runs the DDP and nccl path as eight would.

Backends (`backend`): gloo on CPU; on CUDA "cpu:gloo,cuda:nccl", so a CUDA tensor goes through
nccl and a CPU tensor (which nccl refuses) through gloo, as do object collectives and barriers.
Each process takes the GPU of its LOCAL_RANK before the group starts, so that nccl's
communicators and its CUDA work land on that GPU rather than all on GPU 0. Every collective pie
makes goes through the helpers here; only rank 0 writes the database and the checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    group: bool = False  # in a process group (launched by torchrun), whatever its size

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """Collectives and DistributedDataParallel are on: launched by torchrun (a group of one
        included), or any world of more than one process."""
        return self.group or self.size > 1


def launched() -> bool:
    """Started by torchrun (it sets TORCHELASTIC_RUN_ID, also for one process) or by any
    launcher that sets WORLD_SIZE > 1."""
    return "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def backend(device: torch.device) -> str:
    """The backend `init_process_group` gets for a run on `device`: "gloo" on CPU,
    "cpu:gloo,cuda:nccl" on CUDA (nccl for CUDA tensors, gloo for CPU tensors and objects)."""
    return "cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo"


def init(device: torch.device) -> World:
    """Join the process group when launched by torchrun; a world of one otherwise.

    On CUDA each process takes the GPU of its LOCAL_RANK first, then the group starts with
    `backend(device)`. Idempotent.
    """
    if not launched():
        return World()
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend(device))
    return World(rank, size, local_rank, group=True)


def device_of(world: World, device: torch.device) -> torch.device:
    """The device this rank uses: its own GPU under torchrun on CUDA."""
    if device.type == "cuda" and world.distributed:
        return torch.device("cuda", world.local_rank)
    return device


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def broadcast_object(world: World, value: Any, src: int = 0) -> Any:
    """`value` of rank `src` on every rank (picklable objects)."""
    if not world.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast(world: World, tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Rank `src`'s `tensor` on every rank, in place; returns it."""
    if world.distributed:
        dist.broadcast(tensor, src=src)
    return tensor


def all_reduce_sum(world: World, tensor: torch.Tensor) -> torch.Tensor:
    """The sum of `tensor` over the ranks, in place on every rank; returns it."""
    if world.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def shutdown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()
