"""pie.distributed: a world of one without torchrun; real process groups under it."""

from __future__ import annotations

import torch

from pie import distributed


def test_without_torchrun_it_is_a_world_of_one(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    world = distributed.init(torch.device("cpu"))
    assert (world.rank, world.size, world.is_main, world.distributed) == (0, 1, True, False)
    assert distributed.broadcast_object(world, {"a": 1}) == {"a": 1}
    assert distributed.device_of(world, torch.device("cpu")) == torch.device("cpu")
    assert not torch.distributed.is_initialized()
