"""The benchmark scripts that need hardware this machine may lack run their own code here: benchmarks/gpu_step.py
in its dry run (NumPy and the PyTorch twin on the CPU, tiny shapes). Its GPU figures are measured on a GPU. And
benchmarks/ab_step.py, the paired A/B of two copies of the package, on tiny shapes; heldout_at_steps.py on a tiny
run; finetune_step.py on a few SST-2 batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import shutil
from pathlib import Path

import pytest

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


def test_ab_step_pairs_two_copies_and_finds_a_copy_computes_alike(tmp_path):
    shutil.copytree(REPO / "mini_bert", tmp_path / "mini_bert_copy", ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "benchmarks/ab_step.py", str(tmp_path), "mini_bert_copy", "--repeats", "4",
                           "--batch", "4", "--seq", "16", "num_layers=1", "hidden_size=32", "num_heads=2",
                           "intermediate_size=64", "vocab_size=128"],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "  this   median" in out and "  other  median" in out and "(4 pairs)" in out, out
    assert "largest parameter difference after 7 steps, relative to the largest parameter: 0.0e+00" in out, out


def test_heldout_at_steps_rescores_a_checkpoint_as_the_trainer_scored_it(tiny_run, tmp_path):
    out = tmp_path / "rows.json"
    proc = subprocess.run([sys.executable, "benchmarks/heldout_at_steps.py", str(tiny_run), "--output", str(out)],
                          cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["step"]: r for r in json.loads(out.read_text())}
    logged = {r["step"]: r for r in map(json.loads, (tiny_run / "metrics.jsonl").read_text().splitlines())
              if "valid_masked_acc" in r}
    assert set(rows) == {30, 60}
    assert rows[60]["valid_masked_acc"] == logged[60]["valid_masked_acc"]
    assert abs(rows[60]["valid_perplexity"] - logged[60]["valid_perplexity"]) < 1e-9 * logged[60]["valid_perplexity"]


def test_finetune_step_times_plain_and_length_grouped_batches():
    from mini_bert.data.sources import data_root

    if not (data_root() / "sst2").is_dir():
        pytest.skip("SST-2 not under data_root()")
    proc = subprocess.run([sys.executable, "benchmarks/finetune_step.py", "--train-set", "sentences", "--steps", "3",
                           "--rounds", "2"], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {line.split()[0]: line.split() for line in proc.stdout.splitlines() if "ms/step" in line}
    plain, grouped = (float(rows[arm][rows[arm].index("positions/step") - 1]) for arm in ("plain", "grouped"))
    assert grouped < plain, proc.stdout            # the grouped batches carry less padding
    assert "grouped / plain per round:" in proc.stdout
