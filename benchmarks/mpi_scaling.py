"""Data-parallel scaling on one machine: N MPI ranks of 1 thread against 1 process of N threads, paired in one run.

    python benchmarks/mpi_scaling.py [--ranks 2] [--steps 15] [--rounds 3] [--batch 64] [--seq 64]
                                     [key=value model overrides]

Each side runs the trainer's own step (the rank's rows through GradientWorker, then `Trainer.apply_gradients`'
parts: the world's Allreduce, global-norm clipping, AdamW) on the same synthetic global batch of the default `minibert train`
model (pretraining_model(): vocab 8192, hidden 192, 3 layers, GELU, pre-LN), BLAS on one thread per worker as in
the trainer. The two sides alternate, `--rounds` times each, each a fresh process (or mpirun job) timing `--steps`
steps after 3 untimed ones, so that load from other jobs falls on both alike. It prints the median step time and
tokens/s of each side, and for the ranks the time in the Allreduce call: the whole wait inside a step (transfer plus
waiting for the slower rank) and the transfer alone (the same Allreduce timed right after a barrier).

The machine's load average is printed with the figures: on a shared machine they say what that load allowed.
Needs mpirun and mpi4py (pip install 'mini-bert[mpi]'); as root, OpenMPI also wants OMPI_ALLOW_RUN_AS_ROOT=1 and
OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 (set here for the jobs it starts).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve()


def worker(args) -> None:
    """One side: time the trainer's step in this process (a rank of an mpirun job, or a single process)."""
    from threadpoolctl import threadpool_limits

    from mini_bert.config import ModelConfig, parse_overrides, pretraining_model
    from mini_bert.core.model import MiniBERT
    from mini_bert.data.batches import Batch
    from mini_bert.data.masking import mask_tokens
    from mini_bert.training.allocator import keep_freed_memory
    from mini_bert.training.distributed import detect_world
    from mini_bert.training.optimizer import AdamW, clip_grad_norm, decay_mask
    from mini_bert.training.step import GradientWorker

    keep_freed_memory()
    world = detect_world()
    overrides = parse_overrides([o if o.startswith("model.") else "model." + o for o in args.overrides])
    cfg = ModelConfig(**{**pretraining_model().model_dump(), **overrides.get("model", {})})
    rng = np.random.default_rng(0)
    ids = rng.integers(5, cfg.vocab_size, (args.batch, args.seq)).astype(np.int32)
    ids[:, 0], ids[:, -1] = 2, 3
    inp, tgt, pos = mask_tokens(ids, cfg.vocab_size, 4, 0.15, rng)
    batch = Batch(inp, tgt, pos, np.ones_like(ids), np.zeros_like(ids))
    model = MiniBERT(cfg, seed=0)
    gw = GradientWorker(model, args.threads, seed=0, first_stream=world.rank * args.threads)
    world.attach(gw.grads)
    opt = AdamW(model.store.flat, decay_mask(model.store), lr=1e-4)
    opt.use_threads(gw.pool, gw.threads)
    steps, reduces, transfers = [], [], []
    with threadpool_limits(1):
        for i in range(3 + args.steps):
            t0 = time.perf_counter()
            part, n_total = world.shard(batch)
            loss, _ = gw.loss_and_gradients(part, n_total)
            t1 = time.perf_counter()
            world.reduce(loss)
            t2 = time.perf_counter()
            clip_grad_norm(gw.grads.flat, 1.0)
            opt.step(gw.grads.flat, 1e-4)
            t3 = time.perf_counter()
            if i >= 3:
                steps.append(t3 - t0)
                reduces.append(t2 - t1)
        if world.size > 1:                          # the transfer alone: both ranks enter together
            for _ in range(5):
                world.comm.Barrier()
                t0 = time.perf_counter()
                world.reduce(0.0)
                transfers.append(time.perf_counter() - t0)
    gw.close()
    if world.is_root:
        print(json.dumps({"ranks": world.size, "threads": gw.threads, "step_s": steps, "reduce_s": reduces,
                          "transfer_s": transfers, "tokens": int(batch.attention_mask.sum()),
                          "masked": int(pos.sum()), "parameters": model.num_parameters,
                          "buffer_mb": (model.store.flat.size + 3) * model.store.flat.itemsize / 1e6,
                          "config": cfg.model_dump()}))


def run_side(cmd: list[str], env: dict) -> dict:
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"mpi_scaling: {' '.join(cmd[:6])} ... failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, default=2, help="MPI ranks (and the single process' threads)")
    ap.add_argument("--steps", type=int, default=15, help="timed steps per process, after 3 untimed ones")
    ap.add_argument("--rounds", type=int, default=3, help="alternations of the two sides")
    ap.add_argument("--batch", type=int, default=64, help="the global batch (rows)")
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("overrides", nargs="*", help="model settings, e.g. num_layers=6")
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    if shutil.which("mpirun") is None:
        sys.exit("mpi_scaling: mpirun not found (Debian: apt-get install openmpi-bin libopenmpi-dev)")
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")])}
    if os.geteuid() == 0:
        env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    common = [str(HERE), "--worker", "--steps", str(args.steps), "--batch", str(args.batch), "--seq", str(args.seq),
              *args.overrides]
    sides = {f"{args.ranks} ranks x 1 thread": ["mpirun", "--oversubscribe", "--bind-to", "none", "-n",
                                                str(args.ranks), sys.executable, *common, "--threads", "1"],
             f"1 process x {args.ranks} threads": [sys.executable, *common, "--threads", str(args.ranks)]}
    results = {name: [] for name in sides}
    load_before = os.getloadavg()
    for _ in range(args.rounds):
        for name, cmd in sides.items():
            results[name].append(run_side(cmd, env))
    load_after = os.getloadavg()
    first = next(iter(results.values()))[0]
    cfg = first["config"]
    print(f"data-parallel step, global batch {args.batch} x {args.seq} ({first['masked']} masked tokens), "
          f"{cfg['num_layers']} layers, hidden {cfg['hidden_size']}, vocab {cfg['vocab_size']}, "
          f"{first['parameters']:,} parameters (Allreduce buffer {first['buffer_mb']:.2f} MB); "
          f"{args.rounds} rounds x {args.steps} steps per side, alternating")
    print(f"  {os.cpu_count()} cores; load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    medians = {}
    for name, runs in results.items():
        steps = [s for r in runs for s in r["step_s"]]
        med = medians[name] = statistics.median(steps)
        line = (f"  {name:<24} median step {med * 1000:7.1f} ms  (rounds: "
                + ", ".join(f"{statistics.median(r['step_s']) * 1000:.0f}" for r in runs)
                + f")  {first['tokens'] / med:7.0f} tokens/s")
        reduces = [s for r in runs for s in r["reduce_s"]]
        transfers = [s for r in runs for s in r["transfer_s"]]
        if runs[0]["ranks"] > 1:
            line += (f"\n  {'':<24} Allreduce call {statistics.median(reduces) * 1000:.1f} ms median "
                     f"({statistics.median(reduces) / med * 100:.1f}% of a step, waiting for the slower rank "
                     f"included); the transfer alone {statistics.median(transfers) * 1000:.1f} ms "
                     f"({statistics.median(transfers) / med * 100:.1f}%)")
        print(line)
    a, b = medians.values()
    print(f"  tokens/s, {list(medians)[0]} against {list(medians)[1]}: {b / a:.2f}x")


if __name__ == "__main__":
    main()
