"""Training determinism and checkpoints; inference's class subsets and its transactional sink."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from conftest import TINY_TRAIN as TINY

from infer.predict import part_path, predict
from infer.sink import load_part
from pie import checkpoints, store
from pie.images import Cached, Preprocess
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
    data = Cached(np.array(["k0", "k1"]), np.array([4, 2]), np.zeros((2, 1, 2, 2), np.uint8))
    pre = Preprocess(2, 1, (0.5,), (0.5,))
    full = predict(FixedLogits(), data, pre, None, 8, torch.device("cpu"))
    assert full["pred"].tolist() == [0, 0] and full["top5"][0].tolist() == [0, 1, 2, 3, 4]
    sub = predict(FixedLogits(), data, pre, [2, 4], 8, torch.device("cpu"))
    assert sub["pred"].tolist() == [2, 2]
    assert sub["top5"].tolist() == [[2, 4], [2, 4]]
    z = math.exp(3) + math.exp(1)
    assert sub["p_pred"][0] == pytest.approx(math.exp(3) / z)
    assert sub["p_label"].tolist() == pytest.approx([math.exp(1) / z, math.exp(3) / z])


def write_part(root, model_id="m", dataset="d", n=3):
    table = pa.table(
        {
            "model_id": [model_id] * n,
            "dataset": [dataset] * n,
            "key": [f"k{i}" for i in range(n)],
            "label": pa.array([0] * n, pa.int32()),
            "pred": pa.array([0, 1, 0][:n], pa.int32()),
            "top5": pa.array([[0, 1]] * n, pa.list_(pa.int32())),
            "p_label": pa.array([0.5] * n, pa.float32()),
            "p_pred": pa.array([0.5] * n, pa.float32()),
        }
    )
    path = part_path(root, model_id, dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def test_sink_loads_a_pair_once(root, con):
    assert load_part(con, write_part(root)) == 3
    assert load_part(con, write_part(root)) == 0  # the pair is done: the part is dropped
    assert con.execute("select count(*) from predictions").fetchall() == [(3,)]
    runs = con.execute("select n_images, status, top1 from inference_runs").fetchall()
    assert runs == [(3, "done", pytest.approx(2 / 3))]
    assert not part_path(root, "m", "d").exists()


def test_sink_failure_leaves_no_partial_pair(root, con, monkeypatch):
    path = write_part(root)
    real_rows = store.rows

    def dies_on_the_run_row(c, sql, params=()):
        if sql.startswith("insert into inference_runs"):
            raise KeyboardInterrupt  # after the predictions went in, inside the transaction
        return real_rows(c, sql, params)

    monkeypatch.setattr(store, "rows", dies_on_the_run_row)
    with pytest.raises(KeyboardInterrupt):
        load_part(con, path)
    monkeypatch.undo()
    assert con.execute("select count(*) from predictions").fetchall() == [(0,)]
    assert path.exists()  # kept for the next run, which loads it
    assert load_part(con, path) == 3
