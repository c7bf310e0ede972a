"""Training determinism and checkpoints; inference's class subsets and its transactional sink."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import TINY_TRAIN as TINY

from infer.parts import PartWriter, rows
from infer.score import ModelCache, Scorer
from infer.sink import Fingerprint, closing_meta, load_pair, part_meta, part_path, read_part_info
from pie import checkpoints, provenance
from pie.images import Preprocess
from pie.models import create
from train.trainer import make_job, train_one


def test_same_seed_same_bytes_and_sparsity_on_target(packed, tmp_path):
    job = make_job("t", "magnitude", 0.7, seed=3)
    first = train_one(packed, TINY, job, 10, "fashion-mnist")
    weights = (packed.checkpoint(job.model_id) / checkpoints.WEIGHTS).read_bytes()
    again = train_one(packed, TINY, job, 10, "fashion-mnist")
    assert again.sha256 == first.sha256
    assert (packed.checkpoint(job.model_id) / checkpoints.WEIGHTS).read_bytes() == weights
    assert abs(first.achieved_sparsity - 0.7) <= 0.005
    other = train_one(packed, TINY, make_job("t", "magnitude", 0.7, seed=4), 10, "fashion-mnist")
    assert other.sha256 != first.sha256


def test_checkpoint_is_a_plain_state_dict_with_zeros_written_in(packed):
    job = make_job("t", "magnitude", 0.5, seed=0)
    sidecar = train_one(packed, TINY, job, 10, "fashion-mnist")
    state = torch.load(packed.checkpoint(job.model_id) / "model.pt", weights_only=True)
    stock = create("small_cnn", 10, 1, 28)
    stock.load_state_dict(state)  # strict: nothing extra, nothing missing
    fc1 = state["fc1.weight"]
    assert (fc1 == 0).float().mean().item() == pytest.approx(0.5, abs=0.005)
    assert state["fc.weight"].count_nonzero() == state["fc.weight"].numel()  # classifier dense
    for key in (
        "config",
        "seed",
        "layer_sparsity",
        "achieved_sparsity",
        "sha256",
        "test_top1",
        "preprocess",
    ):
        assert key in json.loads((packed.checkpoint(job.model_id) / "model.json").read_text())
    model, loaded = checkpoints.load(packed.checkpoint(job.model_id))
    assert loaded == sidecar and not model.training


def test_tampered_checkpoint_is_refused(packed):
    job = make_job("t", "dense", 0.0, seed=0)
    train_one(packed, TINY, job, 10, "fashion-mnist")
    weights = packed.checkpoint(job.model_id) / "model.pt"
    weights.write_bytes(weights.read_bytes()[:-10] + b"0" * 10)
    with pytest.raises(Exception, match="sha256"):
        checkpoints.load(packed.checkpoint(job.model_id))


class FixedLogits(torch.nn.Module):
    def forward(self, x):
        return torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]]).repeat(len(x), 1)


def test_class_subset_restricts_argmax_and_softmax():
    pixels = torch.zeros((2, 1, 2, 2), dtype=torch.uint8)
    labels = torch.tensor([4, 2])
    pre = Preprocess(2, 1, (0.5,), (0.5,))
    cpu = torch.device("cpu")
    models = ModelCache(1, lambda key: FixedLogits())
    full = Scorer(models, None, cpu)("m", pre, pixels, labels)
    assert full["pred"].tolist() == [0, 0] and full["top5"][0].tolist() == [0, 1, 2, 3, 4]
    sub = Scorer(models, [2, 4], cpu)("m", pre, pixels, labels)
    assert sub["pred"].tolist() == [2, 2]
    assert sub["top5"].tolist() == [[2, 4], [2, 4]]
    z = math.exp(3) + math.exp(1)
    assert sub["p_pred"][0].item() == pytest.approx(math.exp(3) / z)
    assert sub["p_label"].tolist() == pytest.approx([math.exp(1) / z, math.exp(3) / z])


def write_parts(root, world=1, n=3, model_id="m", dataset="d"):
    """A pair's parts, rank by rank: key k<i> of n goes to rank i % world; pred 1 on k1."""
    infos = []
    for rank in range(world):
        meta = part_meta(model_id, dataset, "e", Fingerprint("sha", "hash"), rank, world, "{}")
        writer = PartWriter(part_path(root, model_id, dataset, rank, world), meta)
        mine = [i for i in range(n) if i % world == rank]
        out = {
            "pred": np.array([int(i == 1) for i in mine]),
            "top5": np.array([[int(i == 1), 1 - int(i == 1)] for i in mine]).reshape(-1, 2),
            "p_label": np.full(len(mine), 0.5),
            "p_pred": np.full(len(mine), 0.5),
        }
        writer.add(rows([f"k{i}" for i in mine], np.zeros(len(mine)), out))
        infos.append(read_part_info(writer.close(closing_meta(1.0, [(f"bad{rank}", "why")]))))
    return infos


def test_sink_loads_a_pair_once_from_every_ranks_part(root, con):
    assert load_pair(con, write_parts(root, world=2)) == 3
    assert load_pair(con, write_parts(root, world=2)) == 0  # the pair is done: parts dropped
    got = con.execute("select key, pred, top5 from predictions order by key").fetchall()
    assert got == [("k0", 0, [0, 1]), ("k1", 1, [1, 0]), ("k2", 0, [0, 1])]
    runs = con.execute("select n_images, status, top1 from inference_runs").fetchall()
    assert runs == [(3, "done", pytest.approx(2 / 3))]
    errors = con.execute("select dataset, key from decode_errors order by key").fetchall()
    assert errors == [("d", "bad0"), ("d", "bad1")]
    assert not list(root.parts("predictions").iterdir())


def test_sink_failure_leaves_no_partial_pair(root, con, monkeypatch):
    parts = write_parts(root)

    def dies_on_the_run_row():  # the run row is made after the predictions went in
        raise KeyboardInterrupt  # inside the transaction

    monkeypatch.setattr(provenance, "commit", dies_on_the_run_row)
    with pytest.raises(KeyboardInterrupt):
        load_pair(con, parts)
    monkeypatch.undo()
    assert con.execute("select count(*) from predictions").fetchall() == [(0,)]
    assert parts[0].path.exists()  # kept for the next run, which loads it
    assert load_pair(con, parts) == 3
