"""pie.distributed and the multi-process paths: a world of one without torchrun; on CUDA the
GPU taken before the group starts and a backend that maps CPU tensors too; 2 gloo ranks that
train and infer under the collectives nccl would accept, and train the weights of one process.

The 2-rank run (`two_ranks`, once per module) spawns 2 processes that set torchrun's variables
and call `pie train`'s and `pie infer`'s entry points, as `torchrun -m pie` would, with
`nccl_rules` installed and the trainer's states recorded (`record_training`).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import TINY_TRAIN, pack_tiny

from infer.config import InferConfig
from pie import distributed, store
from pie.models import create
from pie.paths import open_root
from train import population, trainer
from train.config import TrainConfig
from train.trainer import make_job, torch_seed, train_one

# a dense and a 50 % magnitude model of a batch-norm-free arch, 10 steps of 16 images: masks
# update at steps 2..8 (prune_frequency 1), so the rank-0 masks are broadcast 7 times
CFG = TrainConfig(
    **{
        **{k: getattr(TINY_TRAIN, k) for k in ("experiment", "batch_size", "device")},
        "arch": "tiny_cnn",
        "epochs": 2.5,
        "lr": 0.8,
        "prune_start_epoch": 0.5,
        "prune_end_epoch": 2.0,
        "prune_frequency": 1,
        "methods": ("magnitude",),
        "sparsities": (0.0, 0.5),
        "seeds": 1,
        "workers": 1,
        "data": "memory",
    }
)
JOBS = [make_job("t", "dense", 0.0, 0), make_job("t", "magnitude", 0.5, 0)]  # pie's order


def test_without_torchrun_it_is_a_world_of_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    world = distributed.init(torch.device("cpu"))
    assert (world.rank, world.size, world.is_main, world.distributed) == (0, 1, True, False)
    assert distributed.broadcast_object(world, {"a": 1}) == {"a": 1}
    assert distributed.device_of(world, torch.device("cpu")) == torch.device("cpu")
    assert not torch.distributed.is_initialized()


def test_one_process_under_torchrun_joins_a_group_of_one(monkeypatch):
    """`torchrun --nproc_per_node=1` (TORCHELASTIC_RUN_ID set, WORLD_SIZE 1): the process joins
    a group of one, so collectives and DistributedDataParallel run as across many GPUs (what a
    one-GPU machine needs to check the nccl path); its collectives give its own values back."""
    env = {"TORCHELASTIC_RUN_ID": "check", "WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}
    env |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(29_500 + os.getpid() % 1000)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    world = distributed.init(torch.device("cpu"))
    try:
        assert torch.distributed.is_initialized() and torch.distributed.get_world_size() == 1
        assert (world.rank, world.size, world.distributed) == (0, 1, True)
        total = distributed.all_reduce_sum(world, torch.tensor([3, 4]))
        assert total.tolist() == [3, 4]
        assert distributed.broadcast_object(world, {"a": 1}) == {"a": 1}
    finally:
        distributed.shutdown(world)
    assert not torch.distributed.is_initialized()


def test_on_cuda_a_rank_takes_its_gpu_then_starts_a_group_that_maps_cpu_tensors(monkeypatch):
    """What `init` does under torchrun on CUDA (recorded, no GPU needed): the GPU of
    LOCAL_RANK first (nccl's communicators and the object collectives would otherwise all use
    GPU 0), then the group, with CPU tensors mapped to gloo (nccl alone refuses them)."""
    calls: list[tuple[str, Any]] = []
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.append(("set_device", i)))
    monkeypatch.setattr(
        dist, "init_process_group", lambda **kw: calls.append(("init", kw["backend"]))
    )
    world = distributed.init(torch.device("cuda"))
    assert calls == [("set_device", 1), ("init", "cpu:gloo,cuda:nccl")]
    assert (world.rank, world.size, world.local_rank) == (3, 4, 1)
    assert distributed.device_of(world, torch.device("cuda")) == torch.device("cuda", 1)
    assert nccl_mapped(distributed.backend(torch.device("cuda"))) == {"cpu", "cuda"}
    assert distributed.backend(torch.device("cpu")) == "gloo"


# -- collectives as nccl would take them --------------------------------------------------

TENSOR_COLLECTIVES = (
    "broadcast", "all_reduce", "reduce", "all_gather", "all_gather_into_tensor", "gather",
    "scatter", "reduce_scatter", "reduce_scatter_tensor", "all_to_all", "all_to_all_single",
    "send", "recv", "isend", "irecv",
)  # fmt: skip
OBJECT_COLLECTIVES = (
    "broadcast_object_list", "all_gather_object", "gather_object", "scatter_object_list",
    "barrier",
)  # fmt: skip


def nccl_mapped(backend: str) -> set[str]:
    """Device types whose tensors a process group started with `backend` takes:
    "cpu:gloo,cuda:nccl" -> {cpu, cuda}; a bare name -> its devices in torch ("nccl": cuda)."""
    if ":" not in backend:
        return set(dist.Backend.backend_capability[backend])
    return {pair.split(":")[0].strip() for pair in backend.split(",")}


def tensors_in(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, list | tuple):
        return [t for v in value for t in tensors_in(v)]
    return []


def nccl_rules(log: list[tuple[str, str, str, list[int]]]) -> None:
    """Make this process's collectives refuse what they would refuse in the same run on CUDA,
    and log every collective made (name, device type, dtype, shape).

    The emulation. On a CPU run every tensor is a CPU tensor: that alone cannot tell a tensor
    that would live on the GPU in a CUDA run (weights, masks, anything made on `device`) from
    one that would stay on the CPU there (a forgotten `.to(device)`, a count made with
    `torch.tensor`). So the rule assumes the worst: in the CUDA run any tensor sent may be a
    CPU tensor, and a tensor collective is refused unless CPU tensors are mapped by the backend
    pie passes to init_process_group on CUDA (`pie.distributed.backend(cuda)`). Under "nccl"
    (the backend before this test) every tensor collective here is refused, the evaluation's
    all_reduce of its CPU count first; that is the crash of a real multi-GPU run, whose
    evaluation all-reduced a CPU tensor under nccl. Under "cpu:gloo,cuda:nccl" each tensor goes
    to the backend of its device and all are taken: then a CPU tensor is as good as a GPU one,
    which is why the rule can ignore where a tensor would live.

    Object collectives and barriers stage their own tensors on the device torch picks for the
    group (CPU when gloo is mapped; under nccl alone the current GPU, which needs
    `torch.cuda.set_device` before the group starts: checked on its own by
    `test_on_cuda_a_rank_takes_its_gpu_then_starts_a_group_that_maps_cpu_tensors`), so they pass
    here. `monitored_barrier` is gloo's alone and is refused. DistributedDataParallel's own
    traffic (its parameter broadcast, the gradient all-reduce) goes through C++ on the model's
    tensors, which live on the GPU in a CUDA run; it does not pass through these wrappers.
    """
    backend = distributed.backend(torch.device("cuda"))
    mapped = nccl_mapped(backend)

    def strict(name: str, real):
        def call(*args, **kwargs):
            found = tensors_in(list(args) + list(kwargs.values()))
            for t in found:
                log.append((name, t.device.type, str(t.dtype), list(t.shape)))
                if name in TENSOR_COLLECTIVES and t.device.type not in mapped:
                    raise RuntimeError(
                        f"{name} of a {t.device.type} tensor {list(t.shape)}: refused under "
                        f"backend {backend!r}, which maps {sorted(mapped)} only"
                    )
            if not found:
                log.append((name, "", "", []))
            return real(*args, **kwargs)

        return call

    for name in (*TENSOR_COLLECTIVES, *OBJECT_COLLECTIVES):
        setattr(dist, name, strict(name, getattr(dist, name)))

    def monitored_barrier(*args, **kwargs):
        raise RuntimeError(f"monitored_barrier is gloo's only, refused under {backend!r}")

    dist.monitored_barrier = monitored_barrier


# -- what training leaves on each rank ----------------------------------------------------


def record_training(directory: Path, patch=setattr) -> None:
    """Before each final evaluation, save the model's weights, the optimizer's momentum and the
    pruner's masks to `directory/<n>.pt`, n counting the jobs trained (`patch(obj, name,
    value)` sets the hooks: setattr in a spawned rank, monkeypatch.setattr in this process)."""
    directory.mkdir(parents=True, exist_ok=True)
    current: dict[str, Any] = {}

    class SGD(torch.optim.SGD):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            current["optimizer"] = self

    class Pruner(trainer.Pruner):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            current["pruner"] = self

    real = trainer.evaluate

    def evaluate(model, *args, **kwargs):
        optimizer, pruner = current.pop("optimizer"), current.pop("pruner", None)
        params = dict(model.named_parameters())
        torch.save(
            {
                "weights": {k: v.detach().clone() for k, v in params.items()},
                "momentum": {
                    k: optimizer.state[p]["momentum_buffer"].clone() for k, p in params.items()
                },
                "masks": dict(pruner.masks) if pruner is not None else None,
            },
            directory / f"{len(list(directory.glob('*.pt')))}.pt",
        )
        return real(model, *args, **kwargs)

    patch(trainer.torch.optim, "SGD", SGD)
    patch(trainer, "Pruner", Pruner)
    patch(trainer, "evaluate", evaluate)


def rank_main(rank: int, size: int, port: int, root: str, out: str) -> None:
    """One rank of `torchrun --nproc_per_node=2 -m pie train`, then of `... pie infer`."""
    from infer.run import main as infer

    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    log: list = []
    nccl_rules(log)
    record_training(Path(out) / f"rank{rank}")
    try:
        population.main(open_root(root), CFG)
        infer(open_root(root), InferConfig(workers=0, device="cpu", batch_size=6))
    finally:
        (Path(out) / f"rank{rank}.json").write_text(json.dumps(log))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> dict[str, Any]:
    """2 gloo ranks train CFG's population and infer it under `nccl_rules`: the root, what each
    rank recorded, and the first failure (None when both ended well)."""
    base = tmp_path_factory.mktemp("two_ranks")
    root = pack_tiny(open_root(base / "work"), base)
    out = base / "out"
    context = mp.spawn(
        rank_main, args=(2, free_port(), str(root.path), str(out)), nprocs=2, join=False
    )
    error, deadline = None, time.monotonic() + 300
    try:
        while not context.join(timeout=1):
            if time.monotonic() > deadline:
                raise TimeoutError("the 2 ranks did not end in 300 s")
    except Exception as e:  # a rank failed: its traceback, for the tests to show
        error = str(e)
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
    logs = {r: json.loads(p.read_text()) for r in (0, 1) if (p := out / f"rank{r}.json").exists()}
    return {"root": root, "out": out, "error": error, "logs": logs}


def test_train_and_infer_on_two_ranks_use_only_collectives_nccl_takes(two_ranks):
    assert two_ranks["error"] is None, two_ranks["error"]
    for rank in (0, 1):
        log = [(*entry[:3], tuple(entry[3])) for entry in two_ranks["logs"][rank]]
        # the final evaluation of each job: its [correct, seen] count, summed over the ranks
        assert log.count(("all_reduce", "cpu", "torch.int64", (2,))) == len(JOBS)
        # the magnitude job's 7 mask updates, each broadcasting conv1, conv2 and fc1's masks
        masks = [entry for entry in log if entry[0] == "broadcast"]
        assert [shape for *_, shape in masks] == [(8, 1, 3, 3), (16, 8, 3, 3), (32, 784)] * 7
        assert {entry[2] for entry in masks} == {"torch.uint8"}
        assert {"broadcast_object_list", "barrier"} <= {entry[0] for entry in log}
    root = two_ranks["root"]
    with store.connect(root, read_only=True) as con:
        assert store.rows(con, "select count(*) from models") == [(2,)]
        assert store.rows(con, "select count(*), count(distinct model_id) from predictions") == [
            (2 * 20, 2)
        ]


# -- two ranks train the weights of one process -------------------------------------------


def test_two_ranks_train_the_weights_of_one_process(two_ranks, tmp_path, monkeypatch):
    """Same global batches, split 8 + 8 over 2 gloo ranks or whole in one process: after 10
    steps (7 mask updates) the weights and momentum agree to float rounding (the ranks' with
    each other exactly), the masks exactly, and on both ranks every masked weight and its
    momentum buffer is zero."""
    assert two_ranks["error"] is None, two_ranks["error"]
    single = pack_tiny(open_root(tmp_path / "work"), tmp_path)
    record_training(tmp_path / "one", monkeypatch.setattr)
    for job in JOBS:
        train_one(single, CFG, job, 10, "fashion-mnist")
    for i, job in enumerate(JOBS):
        one = torch.load(tmp_path / "one" / f"{i}.pt", weights_only=True)
        ranks = [torch.load(two_ranks["out"] / f"rank{r}" / f"{i}.pt", weights_only=True)
                 for r in (0, 1)]  # fmt: skip
        torch.manual_seed(torch_seed("t", job))
        initial = create("tiny_cnn", 10, 1, 28).state_dict()
        for name, w in one["weights"].items():
            assert (w - initial[name]).abs().max() > 1e-3, name  # trained, not the initial weights
            assert torch.equal(ranks[0]["weights"][name], ranks[1]["weights"][name])  # replicas
            for state in ranks:
                torch.testing.assert_close(state["weights"][name], w, rtol=1e-4, atol=1e-6)
                torch.testing.assert_close(
                    state["momentum"][name], one["momentum"][name], rtol=1e-4, atol=1e-6
                )
        if job.sparsity == 0:
            assert one["masks"] is None and all(state["masks"] is None for state in ranks)
            continue
        assert set(one["masks"]) == {"conv1.weight", "conv2.weight", "fc1.weight"}
        for name, mask in one["masks"].items():
            assert (~mask).float().mean().item() == pytest.approx(0.5, abs=0.01)
            for state in ranks:
                assert torch.equal(state["masks"][name], mask)
                assert (state["weights"][name][~mask] == 0).all()
                assert (state["momentum"][name][~mask] == 0).all()
