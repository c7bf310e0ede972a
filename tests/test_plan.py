"""`pie plan` (and `pie train --dry-run`, `pie infer --dry-run`): every packaged recipe at full
ImageNet size from fake shard indexes, its numbers against a hand computation, and the
refusals of a config that cannot run to its end, in one line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torchvision
from conftest import assert_one_line_error, pie
from test_infer import world  # noqa: F401  (a fixture: a work root with 2 models)
from test_train_scale import tiny_toml

REPO = Path(__file__).resolve().parent.parent
CONFIGS = sorted((REPO / "configs").glob("*.toml"))
TRAIN, EVAL = 1_281_167, 50_000

# per recipe, by hand: (training set, evaluation set, global batch, steps per epoch =
# 1,281,167 // batch, steps per job = round(epochs x steps per epoch), data path for local
# shards, for shards on an object store)
RECIPES = {
    # 1,281,167 // 128 = 10,009; 160 epochs = 1,601,440 steps; data = "memory"
    "cifar-resnet": ("cifar10-train", "cifar10-test", 128, 10_009, 1_601_440, "memory", "memory"),
    # 28 px: 1,281,167 x 784 bytes < 2 GiB, so "auto" holds it in memory; 3 epochs
    "fashion-mnist": ("fmnist-train", "fmnist-test", 128, 10_009, 30_027, "memory", "memory"),
    # 1,281,167 // 1,024 = 1,251; 16 epochs = 20,016 steps
    "imagenet-resnet18-short": (
        "imagenet-train", "imagenet-val", 1024, 1_251, 20_016, "stream", "stream-remote"
    ),
    # 1,281,167 // 4,096 = 312; round(102.564 x 312) = 32,000 steps: 102 epochs and 176 steps
    "imagenet-resnet50": (
        "imagenet-train", "imagenet-val", 4096, 312, 32_000, "stream", "stream-remote"
    ),
}  # fmt: skip


def fake_index(directory: Path, images: int, shard: int, remote: bool) -> None:
    """index.json only: shards of `shard` images and a short last one, by `pipe:` command
    (an object store) or by relative path (local files); no tar is written."""
    sizes = [shard] * (images // shard) + [images % shard]
    directory.mkdir(parents=True, exist_ok=True)
    urls = [
        f"pipe:cat /bucket/x-{i:06d}.tar" if remote else f"x-{i:06d}.tar" for i in range(len(sizes))
    ]
    shardlist = [{"url": u, "nsamples": n} for u, n in zip(urls, sizes, strict=True)]
    (directory / "index.json").write_text(json.dumps({"shardlist": shardlist}))


def epoch_rows(output: str) -> list[list[str]]:
    """The rows of the printed epoch table: epochs, steps, per rank, delivered, held, ..."""
    lines = output.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:2] == ["epochs", "steps"])
    rows = []
    for line in lines[head + 1 :]:
        if not re.match(r"^ {4}\d", line):
            break
        rows.append(line.split())
    return rows


def number(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.mark.parametrize("recipe", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_recipe_plans_at_imagenet_scale(recipe, tmp_path):
    train_set, eval_set, batch, per_epoch, total, local_path, remote_path = RECIPES[recipe.stem]
    full, last = divmod(total, per_epoch)  # whole epochs, steps of a last partial one
    for shard in (1_000, 10_000):
        for remote in (False, True):
            root = tmp_path / f"{shard}-{remote}"
            fake_index(root / "shards" / train_set, TRAIN, shard, remote)
            fake_index(root / "shards" / eval_set, EVAL, shard, remote)
            path = remote_path if remote else local_path
            for ranks in (8, 16):
                per_rank = batch // ranks
                quota = per_epoch * per_rank  # each rank's images in a whole epoch
                # (epochs, steps, per-rank batch, images each rank delivers)
                expect = [(f"0-{full - 1}", per_epoch, per_rank, quota)]
                if last:
                    expect.append((str(full), last, per_rank, last * per_rank))
                for workers in (1, 12):
                    out = pie(
                        "plan", "-c", str(recipe), "--root", str(root),
                        "--world-size", str(ranks), "--loader-workers", str(workers),
                    ).output  # fmt: skip
                    assert f"data path       {path} " in out
                    assert f"steps           {per_epoch:,} per epoch" in out
                    assert f"{total:,} per job" in out
                    rows = epoch_rows(out)
                    assert [(r[0], *map(number, r[1:4])) for r in rows] == expect
                    for r in rows:  # what each rank holds: the steps it runs, or on an object
                        # store the whole epoch's quota (a last short epoch stops early)
                        assert number(r[4]) == (quota if remote_path == path == "stream-remote"
                                                else number(r[3]))  # fmt: skip
                    if path == "stream-remote":  # every loader worker an equal share (these
                        # quotas divide by 12)
                        assert {number(r[6]) for r in rows} == {quota // workers}


def test_the_reference_plan_by_hand(tmp_path):
    """imagenet-resnet50 on 8 ranks, 12 loader workers, 129 shards on an object store."""
    out = pie(
        "plan", "-c", str(REPO / "configs/imagenet-resnet50.toml"),
        "--train-images", "1281167", "--eval-images", "50000", "--shard-images", "10000",
        "--world-size", "8", "--loader-workers", "12", "--remote",
    ).output  # fmt: skip
    assert "1,281,167 images in 129 shards of 10,000, the last 1,167, on an object store" in out
    assert "180 models" in out  # 6 levels x 30 seeds
    assert "global batch    4,096 = 8 ranks x 512 images" in out
    assert "steps           312 per epoch = 1,281,167 // 4,096; 32,000 per job" in out
    assert "103 epochs, the last one of 176 steps" in out  # 32,000 - 102 x 312 = 176
    assert "left out        3,215 images an epoch" in out  # 1,281,167 - 312 x 4,096
    assert "quota           159,744 images per rank" in out  # 312 x 512
    # masks (masked_weights = "reference": an update fires when last_update + 500 <= t within
    # [32 x 312, 80 x 312] = [9,984, 24,960]): 9,984 + k x 500 for k = 0..29, the last 24,484;
    # nothing is forced at the end step under that rule: 30 updates
    assert "30 per pruned job, at steps 9,984, 10,484, 10,984, ..., 24,484" in out
    # a state every 1,000 steps before the last: 1,000 ... 31,000
    assert "31 per job, at steps 1,000 ... 31,000" in out
    rows = epoch_rows(out)
    assert rows[0][:5] == ["0-101", "312", "512", "159,744", "159,744"]
    assert rows[1][:5] == ["102", "176", "512", "90,112", "159,744"]
    assert rows[0][6] == "13,312"  # 159,744 / 12 loader workers
    # ResNet-50's parameters, counted by torchvision's own model
    params = sum(p.numel() for p in torchvision.models.resnet50().parameters())
    assert params == 25_557_032 and f"({params:,} parameters x 4 bytes)" in out
    # /dev/shm: 12 workers x 64 prefetched images x 3 x 224 x 224 bytes = 110.25 MiB a rank
    assert "/dev/shm        110.2 MiB per rank for training" in out
    # predictions: 180 models x 50,000 images x (the validation set + its [corrupt] variants:
    # 15 benchmark corruptions x 5 severities) = 180 x 50,000 x 76
    assert "684,000,000 prediction rows" in out


def test_a_config_that_cannot_run_to_its_end_is_refused_in_one_line(tmp_path):
    sizes = ["--train-images", "64", "--eval-images", "20", "--shard-images", "10"]
    cases = [
        # the last mask update (step 2 x 4 = 8) after the last step (2 epochs x 4 steps: 7)
        (dict(epochs=2, prune_end_epoch=2), [], "puts the last mask update at step 8"),
        # a global batch of 16 over 3 ranks
        ({}, ["--world-size", "3"], "does not divide by the 3 processes"),
        # 64 images, global batch 128: 1 step of 64 per rank on 2 ranks, rank 1 holds none
        (dict(batch_size=128), ["--world-size", "2"], "epoch 0: rank 1 of 2 holds 0 images"),
        (dict(batch_size=128), ["--world-size", "2", "--remote"], "rank 1 of 2 holds 0 images"),
    ]
    for settings, flags, expected in cases:
        toml = tiny_toml(tmp_path, **settings)
        result = pie("plan", "-c", str(toml), *sizes, *flags, ok=False)
        assert_one_line_error(result, expected)
    toml = tiny_toml(tmp_path)
    toml.write_text(toml.read_text() + "[corrupt]\nimage_size = 32\nchannels = 1\n")
    result = pie("plan", "-c", str(toml), *sizes, ok=False)
    assert_one_line_error(result, "corrupt.image_size = 32")
    toml.write_text(toml.read_text().replace("image_size = 32", "image_size = 28"))
    assert "train plan" in pie("plan", "-c", str(toml), *sizes).output
    assert_one_line_error(
        pie("plan", "-c", str(toml), "--train-images", "64", ok=False), "needs --eval-images"
    )


def test_pie_train_refuses_a_rank_short_of_its_quota_as_the_plan_does(packed, tmp_path):
    """64 training images, global batch 128: the one step would hold 64 images (the run used
    to train on a short batch, saying nothing)."""
    toml = tiny_toml(tmp_path, batch_size=128)
    result = pie("train", "-c", str(toml), "--root", str(packed.path), ok=False)
    assert_one_line_error(result, "epoch 0: rank 0 of 1 holds 64 images, its 1 steps of 128")
    result = pie("train", "--dry-run", "-c", str(toml), "--root", str(packed.path), ok=False)
    assert_one_line_error(result, "epoch 0: rank 0 of 1 holds 64 images")


def test_train_dry_run_prints_the_plan_and_trains_nothing(packed, tmp_path):
    toml = tiny_toml(tmp_path)
    out = pie("train", "--dry-run", "-c", str(toml), "--root", str(packed.path)).output
    # 64 images // 16 = 4 steps an epoch, 3 epochs = 12 steps; masks every step from round(0.5
    # x 4) = 2 to 2 x 4 = 8: 7 updates; 10 classes from the database
    assert "4 per epoch = 64 // 16; 12 per job" in out
    assert "7 per pruned job, at steps 2, 3, 4, ..., 8" in out
    assert "10 classes" in out and "data path       memory" in out
    assert not packed.checkpoints.exists() or not any(packed.checkpoints.iterdir())


def test_infer_dry_run_prints_the_plan_and_evaluates_nothing(world):  # noqa: F811
    before = sorted((p.name, p.stat().st_size) for p in world.path.rglob("*") if p.is_file())
    out = pie("infer", "--dry-run", "--root", str(world.path)).output
    assert "2 models x 1 datasets = 2 (model, dataset) pairs, 40 prediction rows" in out
    after = sorted((p.name, p.stat().st_size) for p in world.path.rglob("*") if p.is_file())
    assert after == before


def test_the_infer_plan_holds_the_models_a_budget_allows():
    """infer.model_memory bounds the models resident at once as `pie infer` cuts them into
    waves: 180 ResNet-50 state_dicts (102,441,032 bytes each: 25,557,032 parameters and the
    53,120 batch-norm running statistics at 4 bytes, and 53 int64 batch counters) under 1 GiB:
    1,073,741,824 // 102,441,032 = 10 per wave, 18 waves."""
    from infer.config import InferConfig
    from infer.plan import ModelSpec, plan

    models = [ModelSpec("resnet50", 1000, 3, 224)] * 180
    lines = plan(models, [("imagenet-val", 50_000)], InferConfig(model_memory=1.0), 1)
    memory = next(line for line in lines if "GPU memory" in line)
    assert "10 models resident at once (977.0 MiB; infer.model_memory = 1 GiB: 18 waves" in memory
    unbounded = plan(models, [("imagenet-val", 50_000)], InferConfig(), 1)
    assert "180 models resident at once (17.2 GiB; infer.model_memory unset" in "".join(unbounded)
