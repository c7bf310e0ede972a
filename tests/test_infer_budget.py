"""Inference memory is bounded by `infer.model_memory`, not by the model count: the cache evicts
by bytes in least-recently-used order, a run of many models under a tiny budget stores the same
predictions as under a large one (checked against a plain forward pass here), and an
out-of-memory error while loading a model or normalising a batch is retried like one in the
forward pass (torch.cuda.OutOfMemoryError raised by a patched function)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn
from conftest import TINY_TRAIN as TINY
from test_infer import expected, images, stored

from infer import score
from infer.config import InferConfig
from infer.loader import chunks, read_chunk
from infer.pending import Group, Member
from infer.run import main as infer
from infer.score import InWorkers, ModelCache, Scorer
from pie import catalog, checkpoints, config, store
from pie.catalog import FASHION_MNIST
from pie.errors import PieError
from pie.images import Preprocess
from pie.models import create
from pie.paths import open_root
from pie.shards import Reader

CPU = torch.device("cpu")
N_MODELS = 4
PRE = Preprocess(28, 1, TINY.mean, TINY.std)


def blob(n: int) -> nn.Module:
    """A module of exactly `n` bytes (one uint8 buffer)."""
    module = nn.Module()
    module.register_buffer("b", torch.zeros(n, dtype=torch.uint8))
    return module


def test_cache_evicts_by_bytes_least_recently_used_first():
    sizes = {"a": 40, "b": 30, "c": 50, "e": 20, "big": 150}
    loads = []
    cache = ModelCache(100, lambda key: loads.append(key) or blob(sizes[key]))
    for key in ("a", "b", "a"):  # a, b resident (70 bytes); a used last
        cache.get(key)
    assert loads == ["a", "b"]
    cache.get("c")  # 120 > 100: b, the least recently used, goes; a stays
    assert list(cache.resident) == ["a", "c"] and cache.used == 90
    cache.get("e")  # 110 > 100: a goes
    assert list(cache.resident) == ["c", "e"] and cache.used == 70
    cache.get("c")
    cache.get("a")  # 40 + 70 > 100: e goes (c was used after it)
    assert list(cache.resident) == ["c", "a"] and cache.used == 90
    cache.get("big")  # larger than the budget: kept alone
    assert list(cache.resident) == ["big"] and cache.used == 150
    assert loads == ["a", "b", "c", "e", "a", "big"]


def add_models(root, n: int) -> list[str]:
    """n randomly initialised small CNNs for fmnist-test, registered as `pie train` does."""
    ids = []
    with store.connect(root) as con:
        for seed in range(n):
            torch.manual_seed(seed)
            sidecar = checkpoints.Sidecar(
                f"m{seed}", "t", "small_cnn", 10, FASHION_MNIST.name, "dense", 0.0, 0.0, {},
                seed, seed, "fmnist-train", "fmnist-test", 0.0, 0.0, 0, {}, PRE.to_dict(), {},
                torch.__version__, "cpu", 0.0,
            )  # fmt: skip
            model = create("small_cnn", 10, 1, 28).eval()
            catalog.register_model(con, checkpoints.save(root, model, sidecar))
            ids.append(sidecar.model_id)
    return ids


def test_many_models_under_a_tiny_budget_store_the_same_predictions(packed, tmp_path, monkeypatch):
    root = packed
    ids = add_models(root, N_MODELS)
    shutil.copytree(root.path, tmp_path / "large")
    large = open_root(tmp_path / "large")

    resident, loaded = [], []
    real_get, real_load = ModelCache.get, score.load_model

    def get(self, key):
        model = real_get(self, key)
        resident.append(len(self.resident))
        return model

    def load(directory):
        loaded.append(directory)
        return real_load(directory)

    monkeypatch.setattr(ModelCache, "get", get)
    monkeypatch.setattr(score, "load_model", load)
    tiny = InferConfig(workers=0, device="cpu", batch_size=10, model_memory=1e-9)  # 1 byte
    assert infer(root, tiny) == N_MODELS
    assert max(resident) == 1  # one model at a time, each loaded once (one wave per model)
    assert sorted(loaded) == sorted(str(root.checkpoint(m)) for m in ids)

    resident.clear()
    assert infer(large, InferConfig(workers=0, device="cpu", batch_size=10)) == N_MODELS
    assert max(resident) == N_MODELS

    keys, pixels = images(root, "fmnist-test")
    for m in ids:
        want = expected(root, m, keys, pixels)
        got, got_large = stored(root, m, "fmnist-test"), stored(large, m, "fmnist-test")
        assert got.keys() == got_large.keys() == want.keys()
        for k in want:
            assert got[k][0] == got_large[k][0] == want[k][0], (m, k)
            assert got[k][1] == pytest.approx(want[k][1], abs=1e-5)
            assert got_large[k][1] == pytest.approx(want[k][1], abs=1e-5)


def test_a_loader_worker_keeps_one_model_under_a_tiny_budget(packed, monkeypatch):
    """The workers' cache (infer.score.InWorkers, here in this process): same
    predictions as a plain forward pass, one model resident at a time."""
    root = packed
    ids = add_models(root, 3)
    monkeypatch.setattr(score, "WORKER_MODELS", None)
    members = tuple(Member(m, "t", "", PRE, str(root.checkpoint(m))) for m in ids)
    group = Group("fmnist-test", root.shards("fmnist-test"), "", None, PRE, members, True)
    want = {m: expected(root, m, *images(root, "fmnist-test")) for m in ids}
    in_worker = InWorkers((group,), model_memory=1)
    for chunk in chunks(root.shards("fmnist-test"), 10, 0, PRE):
        batch = in_worker(read_chunk(chunk, Reader()))
        assert len(score.WORKER_MODELS.resident) == 1
        for m in ids:
            out = batch.outputs[m]
            assert out["pred"].tolist() == [want[m][k][0] for k in batch.keys]
            np.testing.assert_allclose(
                out["p_pred"], [want[m][k][1] for k in batch.keys], atol=1e-5
            )


class Doubler(nn.Module):
    """logits = 2 * x summed over the pixels of each channel, for any input size."""

    def forward(self, x):
        return 2 * x.flatten(2).sum(2)


def by_hand(pixels: torch.Tensor, pre: Preprocess) -> torch.Tensor:
    x = (pixels.double() / 255 - pre.mean[0]) / pre.std[0]
    return 2 * x.flatten(2).sum(2)


def failing_once(function, when=lambda *a: True):
    """`function`, except that its first call for which `when` holds raises a CUDA OOM."""
    failed = []

    def wrapped(*args, **kwargs):
        if not failed and when(*args, **kwargs):
            failed.append(True)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return function(*args, **kwargs)

    return wrapped, failed


def pixels_and_pre():
    pre = Preprocess(2, 3, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    pixels = torch.randint(0, 256, (8, 3, 2, 2), dtype=torch.uint8, generator=torch.Generator())
    return pixels, pre


def test_oom_while_normalising_halves_the_batch_and_retries(monkeypatch):
    pixels, pre = pixels_and_pre()
    normalize, failed = failing_once(score.normalize, when=lambda batch, pre: len(batch) == 8)
    monkeypatch.setattr(score, "normalize", normalize)
    scorer = Scorer(ModelCache(1 << 20, lambda key: Doubler()), None, CPU)
    logits = scorer.logits("m", pre, pixels)
    assert failed and scorer.micro_batch == 4  # whole batch failed: halves from then on
    torch.testing.assert_close(logits.double(), by_hand(pixels, pre), rtol=0, atol=1e-5)


def test_oom_while_loading_evicts_the_least_recently_used_model_and_retries(monkeypatch):
    pixels, pre = pixels_and_pre()
    place, failed = failing_once(lambda model: model, when=lambda model: model.name == "c")

    def load(key):
        model = Doubler()
        model.register_buffer("weights", torch.zeros(100, dtype=torch.uint8))
        model.name = key
        return model

    cache = ModelCache(1000, load, place)
    scorer = Scorer(cache, None, CPU)
    for key in ("a", "b"):
        scorer.logits(key, pre, pixels)
    logits = scorer.logits("c", pre, pixels)
    assert failed
    assert list(cache.resident) == ["b", "c"]  # a evicted, b kept
    assert cache.budget == 200  # lowered to b and c, so the cache does not grow back
    assert scorer.micro_batch is None  # the batch was not split for a load failure
    torch.testing.assert_close(logits.double(), by_hand(pixels, pre), rtol=0, atol=1e-5)


def test_oom_with_nothing_left_to_evict_at_one_image_is_raised(monkeypatch):
    pixels, pre = pixels_and_pre()

    def always(*args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(score, "normalize", always)
    scorer = Scorer(ModelCache(1 << 20, lambda key: Doubler()), None, CPU)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        scorer.logits("m", pre, pixels)
    assert scorer.micro_batch == 1


def test_model_memory_is_read_from_the_config_and_must_be_positive(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[infer]\nmodel_memory = 3\n")
    assert config.load(InferConfig, path, "infer").model_memory == 3.0
    path.write_text("[infer]\nmodel_memory = 0\n")
    with pytest.raises(PieError, match=r"infer\.model_memory must be > 0"):
        config.load(InferConfig, path, "infer")
