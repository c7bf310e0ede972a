"""Shards on an object store: an index whose URLs are `pipe:` commands (here `pipe:cat`) or
`file:` URLs is read by inference and training as well as local paths are, each remote shard
sequentially, once."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from conftest import TINY_TRAIN
from test_infer import CFG, JOBS, query, world  # noqa: F401  (world: a fixture)
from test_ingest_scale import jpeg

from infer import loader
from infer.run import main as infer
from pie.distributed import World
from pie.images import Preprocess
from pie.shards import Reader, Sample, Shard, read_shards, write_shards
from pie.shards import read as shard_read


def to_urls(directory, moved) -> int:
    """Move a dataset's shards to `moved` and point its index there: even shards by
    `pipe:cat`, odd ones by `file:` URL. Returns the number of pipe shards."""
    index = json.loads((directory / "index.json").read_text())
    moved.mkdir(parents=True)
    for i, shard in enumerate(index["shardlist"]):
        target = moved / shard["url"]
        (directory / shard["url"]).rename(target)
        shard["url"] = f"pipe:cat {target}" if i % 2 == 0 else target.as_uri()
    (directory / "index.json").write_text(json.dumps(index))
    return (len(index["shardlist"]) + 1) // 2


def predictions(root):
    return query(
        root,
        "select model_id, dataset, key, label, pred, p_pred from predictions"
        " order by model_id, dataset, key",
    )


def test_infer_over_pipe_and_file_urls_equals_the_local_run(world, tmp_path, monkeypatch):  # noqa: F811
    root = world
    directory = root.shards("fmnist-test")
    samples = [
        Sample(r["__key__"], r["cls"], r["png"], "png", r["json"]) for r in read_shards(directory)
    ]
    write_shards(samples, directory, "fmnist-test", max_count=7)  # the same images, 3 shards
    assert infer(root, CFG) == 2  # 2 models x the test set, shards local
    local = predictions(root)
    assert len(local) == 2 * 20
    assert to_urls(directory, tmp_path / "bucket") == 2  # shards 0 and 2 by pipe, 1 by file:
    opened: list[str] = []
    real = shard_read.samples

    def counted(url):
        opened.append(url)
        return real(url)

    monkeypatch.setattr(shard_read, "samples", counted)
    assert infer(root, CFG) == 2  # the index changed: the dataset hashes too, evaluated again
    assert predictions(root) == local
    # each pipe shard opened once, though cut into several batches (batch_size 7); file: URLs
    # are local files, read by offset
    assert len(opened) == 2 and all(u.startswith("pipe:cat ") for u in opened)
    assert query(root, "select count(*) from inference_runs")[0][0] == 2


PRE = Preprocess(8, 3, (0.5,) * 3, (0.5,) * 3)


def chunk(url: str, start: int, stop: int, remote: bool, n: int = 9) -> loader.Chunk:
    return loader.Chunk(Shard(url, None if remote else url, n), start, stop, 0, PRE)


def test_layout_sends_each_remote_shard_to_one_worker():
    remote_a = [chunk("pipe:a", s, s + 3, True) for s in (0, 3, 6)]
    remote_b = [chunk("pipe:b", s, s + 3, True) for s in (0, 3, 6)]
    local = [chunk("/x.tar", s, s + 3, False) for s in (0, 3, 6, 9, 12)]
    items = [*remote_a, *local[:2], *remote_b, *local[2:]]
    # ranks deal work items: a remote shard whole, a local chunk alone
    # work items: A, l0, l1, B, l2, l3, l4
    assert loader.mine(items, 0, 2) == [*remote_a, local[1], local[2], local[4]]
    assert loader.mine(items, 1, 2) == [local[0], *remote_b, local[3]]
    assert loader.mine(local, 1, 2) == local[1::2]  # local only: every other chunk, as before
    for offset in (0, 1, 2):
        out = loader.layout(items, 3, offset)
        real = [c for c in out if c.stop > c.start]
        assert sorted(real, key=repr) == sorted(items, key=repr)  # every chunk once
        assert [c for c in out if c.shard.url == "/x.tar"] == local  # local order kept
        for shard in ("pipe:a", "pipe:b"):
            where = [(offset + p) % 3 for p, c in enumerate(out) if c.shard.url == shard and c.stop]
            assert len(set(where)) == 1  # one worker reads the shard, its chunks in order
            assert [c.start for c in out if c.shard.url == shard and c.stop] == [0, 3, 6]
    assert loader.layout(local, 3, 1) == local
    assert loader.layout(items, 1, 0) == items


def test_remote_chunks_in_any_order_equal_local_ones(tmp_path, monkeypatch):
    """In order, a remote shard is opened once; a chunk that does not follow the open stream's
    position (another worker had the one before) reopens it and skips to its start."""
    samples = [Sample(f"k{i}", i % 10, jpeg(i), "jpg", {}) for i in range(9)]
    write_shards(samples, tmp_path / "ds", "ds")
    path = str(tmp_path / "ds" / "ds-000000.tar")
    opened: list[str] = []
    real = shard_read.samples
    monkeypatch.setattr(shard_read, "samples", lambda url: opened.append(url) or real(url))
    reader = Reader()

    def batch(c):
        b = loader.read_chunk(c, reader)
        return b.keys, b.labels.tolist(), b.pixels.numpy().tobytes()

    local = {c.start: batch(c) for c in loader.chunks(tmp_path / "ds", 3, 0, PRE)}
    assert [k for s in (0, 3, 6) for k in local[s][0]] == [f"k{i}" for i in range(9)]
    url = f"pipe:cat {path}"
    for order, opens, left_at in (((0, 3, 6), 1, None), ((3, 6, 0), 2, 3), ((6, 3, 0), 3, 3)):
        opened.clear()
        got = {s: batch(chunk(url, s, s + 3, True)) for s in order}
        assert got == local
        assert len(opened) == opens
        # the stream stays open after a chunk that is not the shard's last, else it is closed
        assert {u: at for u, (_, at) in reader.streams.items()} == (
            {url: left_at} if left_at else {}
        )
        reader.close()
    assert batch(chunk(url, 0, 0, True)) == ([], [], b"")  # layout's padding: nothing read
    assert len(opened) == 3  # the padding opened nothing


def fake_shards(tmp_path, sizes):
    """Shards whose labels are the images' indices in shard order, read by `pipe:cat`."""
    from train.data import ShardSet

    out, i = [], 0
    for s, n in enumerate(sizes):
        samples = [Sample(f"k{i + j}", i + j, jpeg(i + j, (8, 8)), "jpg", {}) for j in range(n)]
        write_shards(samples, tmp_path / f"s{s}", f"s{s}")
        out.append(Shard(f"pipe:cat {tmp_path / f's{s}' / f's{s}-000000.tar'}", None, n))
        i += n
    return ShardSet("fake", tuple(out), tmp_path)


SIZES = [7, 3, 11, 2, 5, 9, 1]  # 38 images in shards of unequal sizes


def remote_feed(tmp_path, shards, ranks, workers, start=0, total=None):
    """Every rank's batches over remote shards: global batch 6, 6 steps an epoch."""
    from test_train_scale import feed

    cfg = replace(TINY_TRAIN, batch_size=6, augment="none", loader_workers=workers, data="stream")
    cfg = replace(cfg, image_size=8, channels=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    total = 2 * 6 if total is None else total
    return [list(feed(cfg, shards, World(r, ranks), start, total)) for r in range(ranks)]


@pytest.mark.parametrize("ranks, workers", [(3, 0), (3, 2), (2, 3)])
def test_remote_ranks_fill_equal_quotas_from_unequal_shards(tmp_path, ranks, workers):
    """38 images, global batch 6: 6 steps an epoch, 36 images, 2 left out; every rank gives its
    6 steps x 6 / ranks images in each of 2 epochs, none twice in an epoch, with or without
    loader workers, and a run resumed mid-epoch gets the same batches. (Dealing whole shards
    round-robin left a rank short: 11 of its 12 images.)"""
    shards = fake_shards(tmp_path, SIZES)
    per_rank = 6 // ranks
    got = remote_feed(tmp_path, shards, ranks, workers)
    for epoch in (0, 1):
        seen = []
        for rank in range(ranks):
            batches = got[rank][epoch * 6 : (epoch + 1) * 6]
            assert len(got[rank]) == 12 and all(y.shape == (per_rank,) for _, y in batches)
            seen += [int(v) for _, y in batches for v in y]
        assert len(seen) == len(set(seen)) == 36 and set(seen) <= set(range(38))
    # resumed after step 8 (epoch 1, step 2): the batches of the uninterrupted run
    resumed = remote_feed(tmp_path, shards, ranks, workers, start=8)
    for rank in range(ranks):
        assert len(resumed[rank]) == 4
        for (x, y), (x0, y0) in zip(resumed[rank], got[rank][8:], strict=True):
            assert torch.equal(y, y0) and torch.equal(x, x0)


def test_remote_evaluation_reads_every_image_once_over_the_ranks(tmp_path):
    from train.loaders import load

    shards = fake_shards(tmp_path, SIZES)
    for ranks, workers in ((3, 2), (5, 0)):
        seen = []
        cfg = replace(TINY_TRAIN, data="stream", loader_workers=workers)
        for rank in range(ranks):
            got = list(load(cfg, shards, PRE, World(rank, ranks), 0, False).evaluation())
            assert sum(len(y) for _, y in got) in (38 // ranks, 38 // ranks + 1)
            seen += [int(v) for _, y in got for v in y]
        assert sorted(seen) == list(range(38))


def hand_deal(sizes, order, ranks, quota):
    """Rank r's (shard, start, stop) pieces: the sample sequence of `order` cut at r x quota."""
    spans, at = [], 0
    for k in order:
        spans.append((k, at, at + sizes[k]))
        at += sizes[k]
    return [
        [
            (k, max(a, r * quota) - a, min(b, (r + 1) * quota) - a)
            for k, a, b in spans
            if min(b, (r + 1) * quota) > max(a, r * quota)
        ]
        for r in range(ranks)
    ]


@pytest.mark.parametrize("shard", [10_000, 1_000])
def test_dealing_at_full_imagenet_scale_is_exact_and_pure(shard):
    """1,281,167 images, global batch 4096: 312 steps an epoch; 8 ranks x 512 = 159,744 images
    a rank, 16 ranks x 256 = 79,872; 1,281,167 - 312 x 4096 = 1,215 left out an epoch."""
    from train.data import epoch_order
    from train.remote import deal

    sizes = [shard] * (1_281_167 // shard) + [1_281_167 % shard]  # the last one short
    for ranks, quota in ((8, 159_744), (16, 79_872)):
        for workers in (1, 12):
            for epoch in (0, 101):
                dealt = deal(sizes, 5, epoch, ranks, workers, quota)
                assert dealt == deal(sizes, 5, epoch, ranks, workers, quota)  # pure
                order = epoch_order(len(sizes), 5, epoch).tolist()
                expect = hand_deal(sizes, order, ranks, quota)
                for rank, pieces in enumerate(dealt):
                    flat = [(p.shard, p.start, p.stop) for w in pieces for p in w]
                    merged = []  # a shard split between two workers: its pieces joined again
                    for k, a, b in flat:
                        if merged and merged[-1][0] == k and merged[-1][2] == a:
                            merged[-1] = (k, merged[-1][1], b)
                        else:
                            merged.append((k, a, b))
                    assert merged == expect[rank]
                    assert sum(b - a for _, a, b in flat) == quota
                    counts = [sum(p.stop - p.start for p in w) for w in pieces]
                    assert counts == [
                        quota // workers + (w < quota % workers) for w in range(workers)
                    ]
                    partial = [p for p in merged if (p[1], p[2]) != (0, sizes[p[0]])]
                    assert len(partial) <= 2  # whole shards, a partial one at each end at most
    assert deal(sizes, 5, 0, 8, 12, 159_744) != deal(sizes, 5, 1, 8, 12, 159_744)


def test_training_over_pipe_shards(tmp_path, root):
    """A tiny pruning run over `pipe:cat` shards (streaming and in memory) finishes and reaches
    its sparsity; the sidecar says which path read the data."""
    from test_infer import write_fmnist

    from ingest import pack, sources
    from ingest.config import IngestConfig
    from pie import checkpoints
    from train.trainer import make_job, train_one

    write_fmnist(tmp_path / "src", seed=0)
    found = [sources.fashion_mnist(tmp_path / "src", s) for s in ("train", "test")]
    pack.main(root, IngestConfig(shard_max_count=10), found)
    for d in ("fmnist-train", "fmnist-test"):
        to_urls(root.shards(d), tmp_path / "bucket" / d)
    for data, batch in (("stream", "stream-remote"), ("memory", "memory")):
        cfg = replace(TINY_TRAIN, experiment=data, data=data, batch_size=16, loader_workers=0)
        job = make_job(data, "magnitude", 0.5, 0)
        side = train_one(root, cfg, job, 10, "fashion-mnist")
        assert side.data == batch
        assert side.achieved_sparsity == pytest.approx(0.5, abs=0.01)
        model, _ = checkpoints.load(root.checkpoint(job.model_id))
        weights = [p for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1]
        assert sum(int((w == 0).sum()) for w in weights) > 0
