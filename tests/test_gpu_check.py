"""The GPU check's CPU mode (`bench/gpu_check.py --cpu`): the script that a GPU machine runs,
at tiny sizes, so that it cannot rot between GPU runs: every step runs (images, both ingests,
torchrun training over 2 gloo ranks, more models, two inference runs, the bare passes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_gpu_check_runs_every_step_in_cpu_mode(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OUT"} | {"PYTHONPATH": str(REPO)}
    command = [sys.executable, "bench/gpu_check.py", "--cpu", "--work", str(tmp_path / "w")]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    summary = done.stdout[done.stdout.index("gpu-check summary") :]
    assert done.returncode == 0, summary + done.stderr[-2000:]
    for step in ("images", "ingest train", "ingest val", "train", "train more", "infer fp32",
                 "infer fp32 copy", "bare"):  # fmt: skip
        assert f"\n  {step:<18}ran (" in summary, step
    assert "gpu-check: 9 of 9 steps ran" in summary
    assert "ran (2 ranks, gloo;" in summary  # torchrun, a process group of 2
    assert summary.count("ran (3 models x 32 images in") == 2  # 2 trained under torchrun + 1
    assert "top-1 in fp32 agrees with fp32 on 100.00% of predictions" in summary
    assert "sparsity 0.900" in summary and "data stream" in summary
    logs = sorted(p.name for p in (tmp_path / "w").glob("gpu_check_*.log"))
    assert len(logs) == 6  # one per subprocess step
