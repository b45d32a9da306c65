"""Data-parallel training under mpirun (training/distributed.py): 2 ranks compute what one process computes, two
runs of one seed are identical, a killed rank stops the job with a clear message and the run resumes exactly, and
bad input stops every rank with exit code 2 before anything is written.

Runs use test_trainer's tiny model (vocab 512, hidden 32, 2 layers) on a 3,000-line slice of PTB, 50 steps of a
global batch of 8 rows. Skipped when mpirun or mpi4py is missing (.ci/run installs both).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from mini_bert import cli
from mini_bert.training.checkpointing import latest_checkpoint, list_step_checkpoints, load_checkpoint

pytestmark = pytest.mark.skipif(shutil.which("mpirun") is None or importlib.util.find_spec("mpi4py") is None,
                                reason="needs mpirun (e.g. Debian's openmpi-bin) and mpi4py (pip install "
                                       "'mini-bert[mpi]')")

REPO = Path(__file__).resolve().parents[2]
STEPS = 50
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
if hasattr(os, "geteuid") and os.geteuid() == 0:       # OpenMPI refuses root unless told (containers, CI)
    ENV.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
MPIRUN = ["mpirun", "--oversubscribe", "--bind-to", "none"]
TRAIN = [sys.executable, "-m", "mini_bert", "train", "--no-progress"]


def tiny(corpus: Path, out: Path, **training) -> list[str]:
    settings = {"max_steps": STEPS, "log_every": 1, "checkpoint_every": 5, "eval_every": 10, "batch_size": 8,
                "keep_last": 2, "threads": 1, "lr": 3e-3, "output_dir": str(out), **training}
    return ["model.vocab_size=512", "model.hidden_size=32", "model.num_layers=2", "model.num_heads=2",
            "model.intermediate_size=64", "model.max_position_embeddings=32",
            f"data.corpus={corpus}", f"data.tokenizer={corpus.parent / 'vocab.txt'}", "data.max_seq_len=32",
            "data.valid_batches=2", *(f"training.{k}={v}" for k, v in settings.items())]


def mpirun(ranks: int, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([*MPIRUN, "-n", str(ranks), *TRAIN, *args], cwd=REPO, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def loss_curve(run: Path) -> list[tuple]:
    return [(r["step"], r["train_loss"], r["lr"], r["grad_norm"]) for r in metrics(run)]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def single(corpus, tmp_path_factory) -> Path:
    """One process, the batch split across 2 threads (in this process: a plain run must not import mpi4py)."""
    run = tmp_path_factory.mktemp("single") / "run"
    with threadpool_limits(1):
        assert cli.main(["train", "--no-progress", *tiny(corpus, run, threads=2)]) == 0
    assert "mpi4py" not in sys.modules
    return run


@pytest.fixture(scope="module")
def two_ranks(corpus, tmp_path_factory) -> Path:
    """2 MPI ranks of 1 thread each: the same row blocks as `single`'s 2 threads."""
    run = tmp_path_factory.mktemp("two_ranks") / "run"
    done = mpirun(2, *tiny(corpus, run))
    assert done.returncode == 0, done.stderr
    return run


def test_two_ranks_compute_what_one_process_computes(single, two_ranks):
    one, two = metrics(single), metrics(two_ranks)
    assert [r["step"] for r in two] == list(range(1, STEPS + 1))
    # the loss travels as float32 in the Allreduce buffer: equal within its rounding
    np.testing.assert_allclose([r["train_loss"] for r in two], [r["train_loss"] for r in one], rtol=1e-6, atol=0)
    # the gradients are the same sums (a + b of the same row blocks), so the trajectories do not drift apart
    a, b = load_checkpoint(latest_checkpoint(single)), load_checkpoint(latest_checkpoint(two_ranks))
    assert np.array_equal(a.model.store.flat, b.model.store.flat)
    assert [r["grad_norm"] for r in two] == [r["grad_norm"] for r in one]
    # rank 0 alone wrote (one metrics row per step, above); its checkpoint also records the ranks' dropout streams
    assert b.trainer_state["ranks"] == 2 and len(b.trainer_state["thread_rngs"]) == 2


def test_two_runs_of_one_seed_are_identical(corpus, two_ranks, tmp_path):
    again = tmp_path / "run"
    done = mpirun(2, *tiny(corpus, again))
    assert done.returncode == 0, done.stderr
    assert loss_curve(again) == loss_curve(two_ranks)
    a, b = load_checkpoint(latest_checkpoint(again)), load_checkpoint(latest_checkpoint(two_ranks))
    assert np.array_equal(a.model.store.flat, b.model.store.flat)
    assert np.array_equal(a.optimizer_state["v"], b.optimizer_state["v"])


def rank_pid(mpirun_pid: int, rank: int) -> int:
    """The process id of MPI rank `rank` among mpirun's children (OpenMPI sets OMPI_COMM_WORLD_RANK)."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            status = (proc / "status").read_text()
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:                              # ended meanwhile, or not ours to read
            continue
        if f"\nPPid:\t{mpirun_pid}\n" in status and f"OMPI_COMM_WORLD_RANK={rank}".encode() in environ:
            return int(proc.name)
    raise AssertionError(f"no child of mpirun {mpirun_pid} is rank {rank}")


def test_a_killed_rank_stops_the_job_clearly_and_the_run_resumes_exactly(corpus, two_ranks, tmp_path):
    run = tmp_path / "run"
    args = tiny(corpus, run)
    proc = subprocess.Popen([*MPIRUN, "-n", "2", *TRAIN, *args], cwd=REPO, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list_step_checkpoints(run):
        assert proc.poll() is None, f"the run ended before its first checkpoint: {proc.communicate()}"
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.002)
    os.kill(rank_pid(proc.pid, 1), signal.SIGKILL)
    out, err = proc.communicate(timeout=60)           # no hang: OpenMPI aborts the job, rank 0 reports and exits
    assert proc.returncode != 0, "the run finished before its rank 1 could be killed"
    assert "rank 0 of 2 received SIGTERM and the other ranks stopped answering" in err, err
    assert "--resume" in err and "Traceback" not in err
    last = latest_checkpoint(run)
    killed_at = load_checkpoint(last).trainer_state["step"]          # complete: it loads
    assert 5 <= killed_at < STEPS

    resumed = mpirun(2, "--resume", *args)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed {last}" in resumed.stdout
    assert loss_curve(run) == loss_curve(two_ranks)


def test_a_batch_that_does_not_split_across_the_ranks_is_refused(corpus, tmp_path):
    run = tmp_path / "run"
    done = mpirun(2, *tiny(corpus, run, batch_size=9))
    assert done.returncode == 2
    assert "training.batch_size=9 (the global batch) does not split evenly across 2 MPI ranks" in done.stderr
    assert done.stderr.count("minibert train: error") == 1          # one message, from rank 0
    assert not run.exists()


def test_ranks_that_disagree_on_the_config_are_refused_and_nothing_is_touched(corpus, two_ranks, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(two_ranks, run)
    before = snapshot(run)
    one = [*TRAIN, "--resume", *tiny(corpus, run)]
    other = [*TRAIN, "--resume", *tiny(corpus, run, lr=1e-3)]
    done = subprocess.run([*MPIRUN, "-n", "1", *one, ":", "-n", "1", *other], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "the 2 MPI ranks disagree on the configuration (training.lr: rank 0 has 0.003, rank 1 0.001)" \
        in done.stderr, done.stderr
    assert snapshot(run) == before
