"""Shards on an object store: an index whose URLs are `pipe:` commands (here `pipe:cat`) or
`file:` URLs is read by inference and training as well as local paths are, each remote shard
sequentially, once."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from test_infer import CFG, JOBS, query, world  # noqa: F401  (world: a fixture)
from test_ingest_scale import jpeg

from infer import stream
from infer.run import main as infer
from pie.images import Preprocess
from pie.shards import Sample, read_shards, write_shards


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
    real = stream.read_url

    def counted(url):
        opened.append(url)
        return real(url)

    monkeypatch.setattr(stream, "read_url", counted)
    assert infer(root, CFG) == 2  # the index changed: the dataset hashes too, evaluated again
    assert predictions(root) == local
    # each pipe shard opened once, though cut into several batches (batch_size 7); file: URLs
    # are local files, read by offset
    assert len(opened) == 2 and all(u.startswith("pipe:cat ") for u in opened)
    assert query(root, "select count(*) from inference_runs")[0][0] == 2


PRE = Preprocess(8, 3, (0.5,) * 3, (0.5,) * 3)


def chunk(shard: str, start: int, stop: int, remote: bool, n: int = 9) -> stream.Chunk:
    return stream.Chunk(shard, start, stop, 0, PRE, False, remote, n)


def test_layout_sends_each_remote_shard_to_one_worker():
    remote_a = [chunk("pipe:a", s, s + 3, True) for s in (0, 3, 6)]
    remote_b = [chunk("pipe:b", s, s + 3, True) for s in (0, 3, 6)]
    local = [chunk("/x.tar", s, s + 3, False) for s in (0, 3, 6, 9, 12)]
    items = [*remote_a, *local[:2], *remote_b, *local[2:]]
    # ranks deal work items: a remote shard whole, a local chunk alone
    # work items: A, l0, l1, B, l2, l3, l4
    assert stream.mine(items, 0, 2) == [*remote_a, local[1], local[2], local[4]]
    assert stream.mine(items, 1, 2) == [local[0], *remote_b, local[3]]
    assert stream.mine(local, 1, 2) == local[1::2]  # local only: every other chunk, as before
    for offset in (0, 1, 2):
        out = stream.layout(items, 3, offset)
        real = [c for c in out if c.stop > c.start]
        assert sorted(real, key=repr) == sorted(items, key=repr)  # every chunk once
        assert [c for c in out if c.shard == "/x.tar"] == local  # local order kept
        for shard in ("pipe:a", "pipe:b"):
            where = [(offset + p) % 3 for p, c in enumerate(out) if c.shard == shard and c.stop]
            assert len(set(where)) == 1  # one worker reads the shard, its chunks in order
            assert [c.start for c in out if c.shard == shard and c.stop] == [0, 3, 6]
    assert stream.layout(local, 3, 1) == local
    assert stream.layout(items, 1, 0) == items


def test_remote_chunks_in_any_order_equal_local_ones(tmp_path, monkeypatch):
    """In order, a remote shard is opened once; a chunk that does not follow the open stream's
    position (another worker had the one before) reopens it and skips to its start."""
    samples = [Sample(f"k{i}", i % 10, jpeg(i), "jpg", {}) for i in range(9)]
    write_shards(samples, tmp_path / "ds", "ds")
    path = str(tmp_path / "ds" / "ds-000000.tar")
    opened: list[str] = []
    real = stream.read_url
    monkeypatch.setattr(stream, "read_url", lambda url: opened.append(url) or real(url))

    def batch(c):
        b = stream.read_chunk(c)
        return b.keys, b.labels.tolist(), b.pixels.numpy().tobytes()

    local = {c.start: batch(c) for c in stream.chunks(tmp_path / "ds", 3, 0, PRE, False)}
    assert [k for s in (0, 3, 6) for k in local[s][0]] == [f"k{i}" for i in range(9)]
    url = f"pipe:cat {path}"
    for order, opens, left_at in (((0, 3, 6), 1, None), ((3, 6, 0), 2, 3), ((6, 3, 0), 3, 3)):
        opened.clear()
        got = {s: batch(chunk(url, s, s + 3, True)) for s in order}
        assert got == local
        assert len(opened) == opens
        # the stream stays open after a chunk that is not the shard's last, else it is closed
        assert {u: at for u, (_, at) in stream.OPEN.items()} == ({url: left_at} if left_at else {})
        for it, _ in stream.OPEN.values():
            it.close()
        stream.OPEN.clear()
    assert batch(chunk(url, 0, 0, True)) == ([], [], b"")  # layout's padding: nothing read
    assert len(opened) == 3  # the padding opened nothing


def fake_shards(tmp_path, sizes):
    """Shards whose labels are the images' indices in shard order, read by `pipe:cat`."""
    from train.data import ShardSet

    out, i = [], 0
    for s, n in enumerate(sizes):
        samples = [Sample(f"k{i + j}", i + j, jpeg(i + j, (8, 8)), "jpg", {}) for j in range(n)]
        write_shards(samples, tmp_path / f"s{s}", f"s{s}")
        out.append((f"pipe:cat {tmp_path / f's{s}' / f's{s}-000000.tar'}", n))
        i += n
    return ShardSet("fake", tuple(out), True)


def test_remote_epoch_reads_every_image_at_most_once(tmp_path):
    from train.remote import RemoteEpoch, remote_batches, remote_loader

    shards = fake_shards(tmp_path, [5] * 6)  # 30 images, labels = indices
    pre = Preprocess(8, 3, (0.5,) * 3, (0.5,) * 3)
    batch, ranks = 4, 2
    steps = 30 // batch  # 7 steps of batch // ranks = 2 images on each rank
    for epoch in (0, 1):
        seen: list[int] = []
        for rank in range(ranks):
            ds = RemoteEpoch(shards, pre, "crop_flip", 7, epoch, rank, ranks, buffer=3)
            got = list(remote_batches(remote_loader(ds, 0, False), 2, steps, rank))
            assert len(got) == steps and all(x.shape == (2, 3, 8, 8) for x, _ in got)
            seen.extend(int(y) for _, ys in got for y in ys)
        assert len(seen) == len(set(seen)) == steps * batch  # none twice, 28 of the 30
        assert set(seen) <= set(range(30))
        # shards dealt to (rank, worker) round-robin from a permutation: each exactly once
        dealt = [
            RemoteEpoch(shards, pre, None, 7, epoch, r, ranks).mine(w, 2)
            for r in (0, 1)
            for w in (0, 1)
        ]
        assert sorted(s for d in dealt for s in d) == list(range(6))
    one = [RemoteEpoch(shards, pre, None, 7, e, 0, 1).mine(0, 1) for e in range(4)]
    assert len({tuple(o) for o in one}) > 1  # the order changes with the epoch
    assert one[0] == RemoteEpoch(shards, pre, None, 7, 0, 0, 1).mine(0, 1)  # (seed, epoch) only


def test_training_over_pipe_shards(tmp_path, root):
    """A tiny pruning run over `pipe:cat` shards (streaming and in memory) finishes and reaches
    its sparsity; the sidecar says which path read the data."""
    from conftest import TINY_TRAIN
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
