"""Durable writes and what a crash leaves: every file published by a rename is fsynced before
it (and its directory after); an unreadable prediction part or an empty resume state left by a
crash is dropped at the next run; unreadable weights and unwritable screenshots end in one line.
"""

from __future__ import annotations

import os
import pickle
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from conftest import assert_one_line_error, pie
from test_report import analysed  # noqa: F401 (a fixture)
from test_train import sidecar_for
from test_train_scale import tiny_toml

from analytics import export
from infer.config import InferConfig
from infer.parts import SCHEMA, PartWriter
from infer.run import main as infer
from infer.sink import Fingerprint, closing_meta, part_meta, part_path
from pie import catalog, checkpoints, store
from pie.models import create
from pie.shards import Sample, write_shards
from train import resume


class Journal:
    """os.fsync, os.replace, os.rename and the checkpoint swap, as they happen: ('sync', file)
    and ('rename', source, destination, the files under the source at that moment), a file
    being its inode (synced under one name, it stays synced under the next)."""

    def __init__(self, monkeypatch) -> None:
        self.events: list[tuple] = []
        real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename
        real_exchange = checkpoints.exchange

        def fsync(fd: int) -> None:
            stat = os.fstat(fd)
            self.events.append(("sync", (stat.st_dev, stat.st_ino)))
            real_fsync(fd)

        def renaming(real):
            def rename(src, dst, *args, **kwargs):
                self.events.append(("rename", Path(src), Path(dst), tree(Path(src))))
                return real(src, dst, *args, **kwargs)

            return rename

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", renaming(real_replace))
        monkeypatch.setattr(os, "rename", renaming(real_rename))
        monkeypatch.setattr(checkpoints, "exchange", renaming(real_exchange))

    def check(self, renames: int) -> None:
        """At least `renames` renames, each of a source whose every file and directory was
        synced before it, and the destination's directory synced after it."""
        done = [i for i, e in enumerate(self.events) if e[0] == "rename"]
        assert len(done) >= renames, self.events
        for i in done:
            _, src, dst, files = self.events[i]
            before = {e[1] for e in self.events[:i] if e[0] == "sync"}
            after = {e[1] for e in self.events[i + 1 :] if e[0] == "sync"}
            assert files and files <= before, (src, len(files - before))
            assert inode(dst.parent) in after, dst


def inode(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_dev, stat.st_ino


def tree(path: Path) -> set[tuple[int, int]]:
    """The path and, for a directory, everything under it."""
    found = {inode(path)} if path.exists() else set()
    if path.is_dir():
        found |= {inode(p) for p in path.rglob("*")}
    return found


def test_checkpoints_are_synced_before_they_are_renamed(root, monkeypatch):
    journal = Journal(monkeypatch)
    model = create("small_cnn", 10, 1, 28)
    checkpoints.save(root, model, sidecar_for("m", 0.1))  # new: a plain rename
    checkpoints.save(root, model, sidecar_for("m", 0.2))  # a replacement: the swap
    monkeypatch.setattr(checkpoints, "exchange", lambda a, b: False)  # no swap: via `.old`
    checkpoints.save(root, model, sidecar_for("m", 0.3))
    journal.check(renames=3)
    assert checkpoints.load(root.checkpoint("m"))[1].test_top1 == 0.3


def test_resume_states_parts_shards_and_manifests_are_synced_before_renamed(root, monkeypatch):
    journal = Journal(monkeypatch)
    model = create("small_cnn", 10, 1, 28)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = resume.state_path(root, "m")
    for step in (1, 2):  # a new state, then one replacing it
        resume.save(
            state, step=step, model=model, optimizer=optimizer, pruner=None,
            generator=torch.Generator(), losses=[1.0], config={},
        )  # fmt: skip
    meta = part_meta("m", "d", "e", Fingerprint("a", "b"), 0, 1, "{}")
    writer = PartWriter(part_path(root, "m", "d"), meta)
    writer.add(pa.table({n: [] for n in SCHEMA.names}, schema=SCHEMA))
    writer.close(closing_meta(0.0, []))
    samples = [Sample(f"k{i}", 0, bytes([i]) * 100, "png") for i in range(5)]
    write_shards(samples, root.shards("d"), "d", max_count=2)  # three shards and the index
    write_shards(samples[:3], root.shards("d"), "d")  # replaced
    export.write_manifest(root.path / "manifest.parquet", [{"key": "k0", "pie": {"x": 1}}])
    journal.check(renames=6)


def test_unreadable_prediction_parts_are_dropped_at_the_next_run(packed, capsys):
    """A crash of a pie that renamed before syncing can leave a zero-length part, or one cut
    short (no Parquet footer): the next `pie infer` drops them and evaluates the pair."""
    root = packed
    sidecar = checkpoints.save(root, create("small_cnn", 10, 1, 28), sidecar_for("m"))
    with store.connect(root) as con:
        catalog.register_model(con, sidecar)
    staging = root.parts("predictions")
    staging.mkdir(parents=True)
    empty = part_path(root, "m", "fmnist-test")
    empty.write_bytes(b"")
    cut = part_path(root, "m", "fmnist-train", 0, 2)
    meta = part_meta("m", "fmnist-train", "t", Fingerprint(sidecar.sha256, None), 0, 2, "{}")
    PartWriter(cut, meta).close(closing_meta(0.0, []))
    cut.write_bytes(cut.read_bytes()[:-20])  # the footer's end lost
    capsys.readouterr()
    infer(root, InferConfig(workers=0, device="cpu", batch_size=8))
    assert "2 stale staged parts dropped" in " ".join(capsys.readouterr().out.split())
    assert not list(staging.iterdir())
    with store.connect(root, read_only=True) as con:
        assert store.rows(con, "select dataset, count(*) from predictions group by all") == [
            ("fmnist-test", 20)
        ]


def test_an_empty_resume_state_is_treated_as_absent(root):
    states = root.path / "resume"
    states.mkdir(parents=True)
    (states / "empty.pt").write_bytes(b"")
    (states / "half.pt.partial").write_bytes(b"x")
    (states / "whole.pt").write_bytes(b"not empty")
    resume.clean(root)
    assert sorted(p.name for p in states.iterdir()) == ["whole.pt"]


def test_init_from_a_file_that_is_not_a_state_dict_is_one_line(packed, tmp_path):
    (tmp_path / "text.pt").write_text("hello\n")
    (tmp_path / "counter.pt").write_bytes(pickle.dumps(Counter(a=1), protocol=4))
    torch.save(create("small_cnn", 10, 1, 28).state_dict(), tmp_path / "whole.pt")
    whole = (tmp_path / "whole.pt").read_bytes()
    (tmp_path / "truncated.pt").write_bytes(whole[: len(whole) // 2])
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "pickled_list.pt").write_bytes(pickle.dumps([1, 2]))
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    toml = tiny_toml(tmp_path)
    for name in ("text", "counter", "pickled_list", "truncated", "empty"):
        result = pie(
            "train", "-c", str(toml), "--root", str(packed.path),
            "--init-from", str(tmp_path / f"{name}.pt"), ok=False,
        )  # fmt: skip
        assert_one_line_error(result, f"--init-from {tmp_path / name}.pt cannot be read by torch")
    result = pie(
        "train", "-c", str(toml), "--root", str(packed.path),
        "--init-from", str(tmp_path / "list.pt"), ok=False,
    )  # fmt: skip
    assert_one_line_error(result, "is not a state_dict (names to tensors)")


def test_a_resume_state_torch_cannot_read_is_one_line(tmp_path):
    path = tmp_path / "m.pt"
    path.write_bytes(pickle.dumps(Counter(a=1), protocol=4))
    model = create("small_cnn", 10, 1, 28)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(Exception) as raised:
        resume.load(path, {}, model, optimizer, None, torch.Generator())
    message = str(raised.value)
    assert type(raised.value).__name__ == "PieError" and "\n" not in message, message
    assert message.startswith(f"resume state {path} cannot be read by torch.load")


@pytest.mark.parametrize("where", ["missing/dir/shot.png", "."])
def test_a_screenshot_path_that_cannot_be_written_is_one_line(analysed, tmp_path, where):  # noqa: F811
    out = tmp_path / where
    result = pie("report", "--root", str(analysed.path), "--screenshot", str(out), ok=False)
    assert_one_line_error(result, f"cannot write the screenshot to {out}")
    assert not np.any([p.name == "shot.png" for p in tmp_path.rglob("*")])
