"""Paired A/B timing of the full NumPy training step (forward, backward, clip, AdamW) of two copies of the package.

    python benchmarks/ab_step.py OTHER_PARENT OTHER_PACKAGE [--repeats 30] [--threads 2] [key=value overrides]

OTHER_PARENT is a folder holding a copy of the package under the name OTHER_PACKAGE (e.g. a copy of mini_bert/ from
an earlier commit, renamed mini_bert_base: its imports are relative, so it runs beside this checkout's package). The
two steps run alternately in one process on the same batch (train_step.py's: 64 x 64, 15% masked), so that machine
load affects both alike; it prints each side's median and the median and quartiles of the per-pair ratio
this / other, and how far the two models' parameters have drifted apart (0 when the two compute bit for bit
alike). On a shared machine only such paired figures are comparable.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time

import numpy as np

from mini_bert.training.allocator import keep_freed_memory


def step_fn(pkg: str, cfg_kwargs: dict, batch_arrays, threads: int):
    """A training step of package `pkg` (mini_bert or a renamed copy), built as benchmarks/train_step.py does."""
    config = importlib.import_module(f"{pkg}.config")
    model_mod = importlib.import_module(f"{pkg}.core.model")
    opt_mod = importlib.import_module(f"{pkg}.training.optimizer")
    step_mod = importlib.import_module(f"{pkg}.training.step")
    batches = importlib.import_module(f"{pkg}.data.batches")
    model = model_mod.MiniBERT(config.ModelConfig(**cfg_kwargs), seed=0)
    worker = step_mod.GradientWorker(model, threads, seed=0)
    opt = opt_mod.AdamW(model.store.flat, opt_mod.decay_mask(model.store), lr=1e-4)
    opt.use_threads(worker.pool, worker.threads)
    batch = batches.Batch(*batch_arrays)

    def step():
        worker.loss_and_gradients(batch)
        opt_mod.clip_grad_norm(worker.grads.flat, 1.0)
        opt.step(worker.grads.flat, 1e-4)

    step.params = model.store.flat
    return step


def main() -> None:
    from threadpoolctl import threadpool_limits

    from mini_bert.config import parse_overrides
    from mini_bert.data.masking import mask_tokens

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("other_parent")
    ap.add_argument("other_package")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_intermixed_args()
    keep_freed_memory()
    sys.path.insert(0, os.path.abspath(args.other_parent))
    cfg_kwargs = parse_overrides([o if o.startswith("model.") else "model." + o
                                  for o in args.overrides]).get("model", {})
    from mini_bert.config import ModelConfig
    vocab = ModelConfig(**cfg_kwargs).vocab_size
    rng = np.random.default_rng(0)
    ids = rng.integers(5, vocab, (args.batch, args.seq)).astype(np.int32)
    ids[:, 0], ids[:, -1] = 2, 3
    inp, tgt, pos = mask_tokens(ids, vocab, 4, 0.15, rng)
    arrays = (inp, tgt, pos, np.ones_like(ids), np.zeros_like(ids))
    runners = {"this": step_fn("mini_bert", cfg_kwargs, arrays, args.threads),
               "other": step_fn(args.other_package, cfg_kwargs, arrays, args.threads)}
    times = {k: [] for k in runners}
    with threadpool_limits(1 if args.threads > 1 else os.cpu_count()):
        for _ in range(3):
            for fn in runners.values():
                fn()
        for i in range(args.repeats):
            order = list(runners.items()) if i % 2 == 0 else list(runners.items())[::-1]
            for name, fn in order:
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    ratios = sorted(a / b for a, b in zip(times["this"], times["other"]))
    q = statistics.quantiles(ratios, n=4)
    for name, ts in times.items():
        print(f"  {name:<6} median {statistics.median(ts) * 1000:7.1f} ms   min {min(ts) * 1000:7.1f} ms")
    print(f"  this / other, per pair: median {statistics.median(ratios):.3f}  quartiles {q[0]:.3f} - {q[2]:.3f}  "
          f"({args.repeats} pairs)")
    # both models took the same steps from the same start: how far apart their rounding has taken the parameters
    a, b = runners["this"].params, runners["other"].params
    diff = float(np.abs(a - b).max() / max(float(np.abs(b).max()), 1e-30))
    print(f"  largest parameter difference after {args.repeats + 3} steps, relative to the largest parameter: "
          f"{diff:.1e}")


if __name__ == "__main__":
    main()
