"""The benchmark scripts that need hardware this machine may lack run their own code here: benchmarks/gpu_step.py
in its dry run (NumPy and the PyTorch twin on the CPU, tiny shapes). Its GPU figures are measured on a GPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def test_gpu_step_dry_run_times_both_sides_and_agrees_with_the_cpu():
    proc = subprocess.run([sys.executable, "benchmarks/gpu_step.py", "--dry-run", "--repeats", "2",
                           "--agree-steps", "3"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "dry run" in out and out.count("  numpy    median") == 2
    # the numpy side on the CPU is the CPU reference itself: the same losses to the last bit
    assert out.count("largest relative difference numpy 0.0e+00") == 2
    try:
        import torch  # noqa: F401
    except ImportError:
        return
    assert out.count("  eager    median") == 2
    eager = [float(line.rsplit("eager ", 1)[1]) for line in out.splitlines() if "relative difference" in line]
    assert all(d < 1e-4 for d in eager), out
