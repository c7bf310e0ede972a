"""The GPU check: pie's GPU paths run end to end, once, on one GPU machine, in under 10 minutes.

    make gpu-wheels                    # here, once: duckdb and webdataset as Python 3.12 wheels
    make gpu-check                     # there: python3 bench/gpu_check.py
    python3 bench/gpu_check.py --cpu   # tiny sizes on CPU: gloo, 2 ranks, fp32 (a test runs it)

It needs only the GPU machine's own `python3` and the wheels in `.whl/` (installed into a
temporary directory; pie runs from this checkout through PYTHONPATH). The steps (wheels,
images, ingest, train under torchrun, train more, infer fp32 and bf16, bare passes), what each
measures and the sizes planned to fit 10 minutes are in docs/gpu-check.md. Each step prints
one line, `ran (...)` or `failed: <why>`; a failed step does not stop the ones that do not need
it; every subprocess stops at its step's limit or when `--budget` (540 s) is spent. The log goes
to stdout and, when $OUT is set (the device tool), to $OUT/gpu_check.log.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Sizes:
    n_train: int
    n_val: int
    classes: int
    scale: float  # of the 500 x 375 image geometry
    arch: str
    image_size: int
    batch: int
    steps: int  # per model of step 4
    fill_steps: int  # per model of step 5
    fill: tuple[tuple[float, ...], int]  # its sparsities and seeds
    ranks: int
    loader_workers: int
    infer_batch: int
    timeout: int  # seconds, per subprocess


GPU = Sizes(
    n_train=4096, n_val=2048, classes=16, scale=1.0, arch="resnet50", image_size=224, batch=256,
    steps=200, fill_steps=12, fill=((0.0, 0.5, 0.9), 2), ranks=1, loader_workers=12,
    infer_batch=256, timeout=420,
)  # fmt: skip
CPU = Sizes(
    n_train=64, n_val=32, classes=4, scale=0.08, arch="small_cnn", image_size=32, batch=16,
    steps=8, fill_steps=2, fill=((0.5,), 1), ranks=2, loader_workers=1, infer_batch=16,
    timeout=120,
)  # fmt: skip

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("--cpu", action="store_true", help="tiny sizes on CPU (gloo, 2 ranks, fp32)")
parser.add_argument("--work", type=Path, help="work directory (default: a temporary one)")
parser.add_argument(
    "--budget", type=float, default=540, help="seconds for every step (the summary follows)"
)
args = parser.parse_args()
size = CPU if args.cpu else GPU
out = Path(os.environ["OUT"]) if os.environ.get("OUT") else None
work = args.work or Path(tempfile.mkdtemp(prefix="pie-gpu-check-"))
work.mkdir(parents=True, exist_ok=True)
root = work / "root"
log_file = (out / "gpu_check.log") if out else None
results: list[tuple[str, str]] = []  # (step, "ran (...)" or "failed: why")
figures: list[str] = []
started = time.monotonic()


def say(line: str) -> None:
    print(line, flush=True)
    if log_file is not None:
        with log_file.open("a") as f:
            f.write(line + "\n")


def record(step: str, outcome: str) -> None:
    results.append((step, outcome))
    say(f"{step:<18}{outcome}   [{time.monotonic() - started:.0f} s]")


def ran(step: str) -> bool:
    return any(s == step and o.startswith("ran") for s, o in results)


# -- the environment --------------------------------------------------------------------------

env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
paths = [str(REPO)]
if args.cpu:
    hidden = work / "hidden"  # the GPU machine lacks them: so must every path checked here
    for name in ("polars", "plotly"):
        (hidden / name).mkdir(parents=True, exist_ok=True)
        (hidden / name / "__init__.py").write_text(
            f"raise ImportError('{name} is not on the GPU machine (bench/gpu_check.py --cpu)')\n"
        )
    paths.append(str(hidden))
    record("wheels", "ran (CPU mode: this interpreter's packages, polars and plotly hidden)")
else:
    wheels = sorted((REPO / ".whl").glob("*.whl"))
    site = work / "site"
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
    install += ["--no-compile", "--no-cache-dir", "--target", str(site), *map(str, wheels)]
    if not wheels:
        record("wheels", "failed: no wheels in .whl/ (run `make gpu-wheels` before sending)")
    else:
        done = subprocess.run(install, capture_output=True, text=True)
        if done.returncode:
            why = (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
            record("wheels", f"failed: pip install: {why}")
        else:
            record("wheels", f"ran ({', '.join(w.name.split('-')[0] for w in wheels)})")
    paths.append(str(site))
env["PYTHONPATH"] = os.pathsep.join(paths)
sys.path[:0] = paths

import torch  # noqa: E402  (after the paths: pie's imports below need the wheels)

gpus = torch.cuda.device_count()
device = "cpu" if args.cpu else "cuda"
shm = shutil.disk_usage("/dev/shm").total / 2**30 if Path("/dev/shm").exists() else 0.0
say(
    f"python {sys.version.split()[0]}, torch {torch.__version__}, "
    f"{torch.cuda.get_device_name(0) if gpus else 'no GPU'} x {gpus}, {os.cpu_count()} CPUs, "
    f"/dev/shm {shm:.0f} GiB, mode {'cpu' if args.cpu else 'gpu'}, work {work}"
)
if not args.cpu and not gpus:
    say("gpu-check: failed: torch sees no CUDA device here (the CPU mode is --cpu)")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1)


class GpuMemory:
    """The largest memory.used that nvidia-smi reports, twice a second, while the block runs
    (MiB, the whole GPU: every process on it); none on CPU."""

    def __enter__(self) -> GpuMemory:
        self.peak, self.done, self.why = 0, threading.Event(), "no reading"
        self.thread = threading.Thread(target=self.poll, daemon=True)
        if not args.cpu:
            self.thread.start()
        return self

    def poll(self) -> None:
        query = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"]
        while not self.done.wait(0.5):
            try:
                used = subprocess.run(query, capture_output=True, text=True, timeout=5).stdout
                self.peak = max([self.peak, *(int(v) for v in used.split())])
            except (OSError, ValueError, subprocess.TimeoutExpired) as e:
                self.why = f"nvidia-smi: {e}"
                return

    def __exit__(self, *exc: object) -> None:
        self.done.set()

    def text(self) -> str:
        if args.cpu:
            return "n/a on CPU"
        return f"{self.peak / 1024:.1f} GiB" if self.peak else f"unknown ({self.why})"


def run(step: str, command: list[str]) -> tuple[bool, str, float]:
    """Run a subprocess within the step's time limit and what is left of `--budget`: (ok, why
    it failed, seconds). Its output goes to $OUT/gpu_check_<step>.log (or the work directory)."""
    log = (out or work) / f"gpu_check_{step.replace(' ', '_')}.log"
    limit = min(size.timeout, args.budget - (time.monotonic() - started))
    if limit < 10:
        return False, f"out of time (--budget {args.budget:g} s spent)", 0.0
    begin = time.monotonic()
    with log.open("w") as f:
        try:
            done = subprocess.run(
                command, env=env, cwd=REPO, stdout=f, stderr=subprocess.STDOUT,
                timeout=limit, start_new_session=True,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            return False, f"timed out after {limit:.0f} s (see {log.name})", limit
    seconds = time.monotonic() - begin
    if done.returncode:  # why: pie's one-line error, else the last exception's line
        lines = [line.strip() for line in log.read_text().splitlines() if line.strip()]
        why = [line for line in lines if line.startswith("error:")]
        why = why or [line for line in lines if "Error" in line.split(" ")[0]] or lines or [""]
        return (
            False,
            f"exit {done.returncode}: {why[0] if why[0].startswith('error:') else why[-1]}",
            seconds,
        )
    return True, "", seconds


def pie(*words: str) -> list[str]:
    return [sys.executable, "-m", "pie", *words, "--root", str(root)]


# -- 2. images --------------------------------------------------------------------------------


def jpeg(task: tuple[int, int, int]) -> tuple[int, bytes]:
    """One synthetic photo: the class's two colours in stripes at the class's angle, smooth
    noise on top, at a random ImageNet-like geometry."""
    index, label, seed = task
    rng = np.random.default_rng(seed)
    w, h = (int(v * size.scale) for v in (rng.integers(400, 601), rng.integers(300, 451)))
    if rng.random() < 0.25:
        w, h = h, w  # portrait
    colours = np.random.default_rng(label).integers(0, 256, (2, 3))
    angle = np.pi * label / size.classes
    y, x = np.mgrid[0:h, 0:w]
    phase = (x * np.cos(angle) + y * np.sin(angle)) / max(4.0, 40 * size.scale) + rng.random()
    mix = (np.sin(2 * np.pi * phase) + 1) / 2
    pixels = colours[0] * mix[..., None] + colours[1] * (1 - mix[..., None])
    pixels += rng.normal(0, 12, (h // 8 + 1, w // 8 + 1, 3)).repeat(8, 0).repeat(8, 1)[:h, :w]
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    return index, buf.getvalue()


wnids = [
    line.split("\t")[1]
    for line in (REPO / "pie/data/imagenet1k_classes.tsv").read_text().splitlines()[1:]
][: size.classes]
begin = time.monotonic()
try:
    for split, n, offset in (("train", size.n_train, 0), ("val", size.n_val, 10**6)):
        tasks = [(i, i % size.classes, offset + i) for i in range(n)]
        with Pool(min(16, os.cpu_count() or 1)) as pool:
            for i, data in pool.imap_unordered(jpeg, tasks, chunksize=64):
                folder = work / "images" / split / wnids[i % size.classes]
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"{wnids[i % size.classes]}_{i}.JPEG").write_bytes(data)
    seconds = time.monotonic() - begin
    record("images", f"ran ({size.n_train} + {size.n_val} JPEGs, {seconds:.1f} s)")
except Exception as e:  # keep going: the summary says what failed
    record("images", f"failed: {type(e).__name__}: {e}")

# -- 3. ingest --------------------------------------------------------------------------------

config = work / "gpu-check.toml"
prune = size.steps // (size.n_train // size.batch)  # epochs
config.write_text(
    f"""name = "check"

[ingest]
shard_max_count = {max(16, size.n_train // 16)}
workers = {min(16, os.cpu_count() or 1) if not args.cpu else 1}

[train]
workers = 1
dataset = "synth-train"
eval_dataset = "synth-val"
arch = "{size.arch}"
image_size = {size.image_size}
channels = 3
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
augment = "resized_crop_flip"
data = "stream"
methods = ["magnitude"]
sparsities = [0.0, 0.9]
seeds = 1
epochs = {size.steps / (size.n_train // size.batch)}
batch_size = {size.batch}
lr = 0.1
warmup_epochs = {0.1 * prune:g}
prune_start_epoch = {0.2 * prune:g}
prune_end_epoch = {0.6 * prune:g}
prune_frequency = {max(1, size.steps // 20)}
device = "{device}"
precision = "{"fp32" if args.cpu else "bf16"}"
channels_last = {str(not args.cpu).lower()}
compile = {str(not args.cpu).lower()}
loader_workers = {size.loader_workers}

[infer]
batch_size = {size.infer_batch}
workers = {size.loader_workers if not args.cpu else 0}
device = "{device}"
channels_last = {str(not args.cpu).lower()}
"""
)
if ran("images"):
    for split, name, order in (("train", "synth-train", "train"), ("val", "synth-val", "eval")):
        folder = str(work / "images" / split)
        command = pie("ingest", "imagefolder", folder, "--name", name, "--split", order)
        ok, why, seconds = run(f"ingest {split}", [*command, "-c", str(config)])
        offsets = list((root / "shards" / name).glob("*.idx.npy")) if ok else []
        if ok and not offsets:
            ok, why = False, "no offsets files beside the shards"
        shards = f"ran ({len(offsets)} shards with offsets files, {seconds:.1f} s)"
        record(f"ingest {split}", shards if ok else f"failed: {why}")
else:
    record("ingest", "failed: needs images")

# -- 4. train under torchrun ------------------------------------------------------------------


def sidecars(experiment: str) -> list[dict]:
    return [
        json.loads(p.read_text())
        for p in sorted((root / "checkpoints").glob(f"{experiment}-*/model.json"))
    ]


ranks = max(1, gpus) if not args.cpu else size.ranks
train_rates: dict[str, float] = {}  # model id -> img/s, end to end
if ran("ingest train") and ran("ingest val"):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += [f"--nproc_per_node={ranks}", *pie("train", "-c", str(config))[1:]]
    with GpuMemory() as memory:
        ok, why, seconds = run("train", command)
    trained = sidecars("check") if ok else []
    if ok and len(trained) != 2:
        ok, why = False, f"{len(trained)} checkpoints instead of 2"
    if ok:
        group = f"{ranks} rank{'s' * (ranks > 1)}, {'gloo' if args.cpu else 'cpu:gloo,cuda:nccl'}"
        record("train", f"ran ({group}; {seconds:.0f} s; peak GPU memory {memory.text()})")
        for s in trained:
            train_rates[s["model_id"]] = s["steps"] * size.batch / s["seconds"]
            figures.append(
                f"train {s['model_id']}: {s['steps']} steps of {size.batch}, "
                f"{train_rates[s['model_id']]:,.0f} img/s end to end (loader start, compile and "
                f"final evaluation included), test top-1 {s['test_top1']:.3f}, "
                f"sparsity {s['achieved_sparsity']:.3f}, data {s['data']}"
            )
    else:
        record("train", f"failed: {why}")
else:
    record("train", "failed: needs both ingests")

# -- 5. six more models, eagerly --------------------------------------------------------------

fill = work / "fill.toml"
text = config.read_text().replace('name = "check"', 'name = "fill"')
text = text.replace("sparsities = [0.0, 0.9]", f"sparsities = {list(size.fill[0])}")
text = text.replace("seeds = 1", f"seeds = {size.fill[1]}").replace(
    "compile = true", "compile = false"
)
steps_per_epoch = size.n_train // size.batch
text = "\n".join(
    f"epochs = {size.fill_steps / steps_per_epoch}" if line.startswith("epochs =")
    else "prune_start_epoch = 0" if line.startswith("prune_start_epoch")
    else "prune_end_epoch = 0" if line.startswith("prune_end_epoch")
    else "warmup_epochs = 0" if line.startswith("warmup_epochs")
    else line
    for line in text.splitlines()
)  # fmt: skip
fill.write_text(text + "\n")
if ran("ingest train") and ran("ingest val"):
    ok, why, seconds = run("train more", pie("train", "-c", str(fill), "--workers", "1"))
    filled, asked = sidecars("fill") if ok else [], len(size.fill[0]) * size.fill[1]
    if ok and len(filled) != asked:
        ok, why = False, f"{len(filled)} checkpoints instead of {asked}"
    record("train more", f"ran ({asked} models, {seconds:.0f} s)" if ok else f"failed: {why}")
else:
    record("train more", "failed: needs both ingests")

# -- 6. pie infer, fp32 and bf16 --------------------------------------------------------------

models = len(sidecars("check")) + len(sidecars("fill"))
second = "fp32" if args.cpu else "bf16"  # no bf16 autocast on CPU: fp32 again, on the copy
runs = [("infer fp32", "fp32", root), (f"infer {second} copy", second, work / "root-copy")]
predictions: dict[str, dict[tuple[str, str], int]] = {}
rates: dict[str, float] = {}  # infer step -> images x models per second, end to end
if models and ran("ingest val"):
    shutil.copytree(root, runs[1][2])
    for step, precision, where in runs:
        command = [sys.executable, "-m", "pie", "infer", "-c", str(config), "--root", str(where)]
        with GpuMemory() as memory:
            ok, why, seconds = run(step, [*command, "--precision", precision])
        if not ok:
            record(step, f"failed: {why}")
            continue
        from pie import store
        from pie.paths import open_root

        with store.connect(open_root(where), read_only=True) as con:
            rows = store.rows(con, "select model_id, key, pred from predictions")
        if len(rows) != models * size.n_val:
            record(step, f"failed: {len(rows)} predictions stored, {models * size.n_val} expected")
            continue
        predictions[step] = {(m, k): pred for m, k, pred in rows}
        rates[step] = models * size.n_val / seconds
        record(
            step,
            f"ran ({models} models x {size.n_val} images in {seconds:.1f} s: "
            f"{rates[step]:,.0f} img/s end to end; peak GPU memory {memory.text()})",
        )
    if len(predictions) == 2:
        a, b = predictions.values()
        same = sum(a[k] == b.get(k) for k in a) / len(a)
        figures.append(f"infer: top-1 in {second} agrees with fp32 on {same:.2%} of predictions")
else:
    record("infer", "failed: needs trained models and synth-val")

# -- 7. bare forward passes and training steps over the same decoded batches ------------------

try:
    from infer import loader
    from pie import checkpoints
    from pie.images import Preprocess, normalize
    from pie.shards import Reader

    if not models:
        raise RuntimeError("needs trained models")
    directories = sorted(p.parent for p in (root / "checkpoints").glob("*/model.json"))
    first = checkpoints.read_sidecar(directories[0])
    pre = Preprocess.from_dict(first.preprocess)
    chunks = loader.chunks(root / "shards" / "synth-val", size.infer_batch, 0, pre)
    reader = Reader()
    decoded = [loader.read_chunk(c, reader) for c in chunks]  # pie's decoder, as pie infer decodes
    on = torch.device(device)
    batches = [(b.pixels.to(on), b.labels.to(on)) for b in decoded]
    fmt = torch.channels_last if not args.cpu else torch.contiguous_format
    loaded = [checkpoints.load(d, on)[0].to(memory_format=fmt) for d in directories]
    if not args.cpu:
        torch.cuda.reset_peak_memory_stats()

    def sync() -> None:
        if not args.cpu:
            torch.cuda.synchronize()

    for step, precision, _ in runs:
        autocast = torch.autocast("cuda", torch.bfloat16, enabled=precision == "bf16")
        with torch.inference_mode(), autocast:
            for model in loaded:  # warm-up
                model(normalize(batches[0][0], pre).contiguous(memory_format=fmt))
            sync()
            begin = time.perf_counter()
            for x, _ in batches:
                x = normalize(x, pre).contiguous(memory_format=fmt)
                for model in loaded:
                    model(x).float().softmax(1)
            sync()
            bare = len(loaded) * size.n_val / (time.perf_counter() - begin)
        ratio = f"; {step} end to end / bare: {rates[step] / bare:.2f}" if step in rates else ""
        figures.append(f"bare forward {precision}: {bare:,.0f} img/s ({len(loaded)} models){ratio}")

    model = checkpoints.load(directories[0], on)[0].to(memory_format=fmt).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    autocast = torch.autocast("cuda", torch.bfloat16, enabled=not args.cpu)
    train_batches = [(x, y) for x, y in batches if len(y) == size.infer_batch]
    for i in range(len(train_batches) * 2 + 1):
        if i == 1:  # the first step warms up
            sync()
            begin = time.perf_counter()
        x, y = train_batches[i % len(train_batches)]
        with autocast:
            logits = model(normalize(x, pre).contiguous(memory_format=fmt))
            loss = torch.nn.functional.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    sync()
    step_rate = len(train_batches) * 2 * size.infer_batch / (time.perf_counter() - begin)
    peak = "n/a on CPU" if args.cpu else f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
    figures.append(f"bare training step ({first.arch}, eager): {step_rate:,.0f} img/s")
    for model_id, rate in train_rates.items():
        figures.append(f"train {model_id} end to end / bare step: {rate / step_rate:.2f}")
    record("bare", f"ran ({len(batches)} batches decoded once; peak GPU memory {peak})")
except Exception as e:  # keep going: the summary says what failed
    record("bare", f"failed: {type(e).__name__}: {e}")

# -- summary ----------------------------------------------------------------------------------

say("")
say(f"gpu-check summary ({'cpu' if args.cpu else 'gpu'} mode, {time.monotonic() - started:.0f} s)")
for step, outcome in results:
    say(f"  {step:<18}{outcome}")
for line in figures:
    say(f"  {line}")
failed = [step for step, outcome in results if not outcome.startswith("ran")]
summary = f"gpu-check: {len(results) - len(failed)} of {len(results)} steps ran"
say(summary + (f"; failed: {', '.join(failed)}" if failed else ""))
if not args.work:
    shutil.rmtree(work, ignore_errors=True)
sys.exit(1 if failed else 0)
