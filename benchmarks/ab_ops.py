"""Paired A/B timing of the training step's elementwise-heavy operations in two copies of the package.

    python benchmarks/ab_ops.py OTHER_PARENT OTHER_PACKAGE [--repeats 100]

Like ab_step.py (OTHER_PARENT holds a copy of the package named OTHER_PACKAGE, e.g. mini_bert/ of an earlier commit
renamed mini_bert_base), but per operation, on one worker thread's share of the recipe's batch (32 x 64 tokens of
the default model: hidden 192, 4 heads, vocab 8192, 313 masked rows) with BLAS on one thread: LayerNorm forward
and backward, softmax, attention forward + backward, the masked-LM cross-entropy, the token-embedding scatter-add
and an AdamW step over 2.9M parameters. The two versions run alternately; it prints each one's median and the
median and quartiles of the per-pair ratio this / other.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import statistics
import sys
import time

import numpy as np

from mini_bert.training.allocator import keep_freed_memory


def paired(name: str, other, this, repeats: int) -> None:
    """Time other() and this() alternately; print the medians and the per-pair ratio this / other."""
    for _ in range(3):
        other(), this()
    t_other, t_this = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        other()
        t1 = time.perf_counter()
        this()
        t_other.append(t1 - t0)
        t_this.append(time.perf_counter() - t1)
    ratios = [b / a for a, b in zip(t_other, t_this)]
    q = statistics.quantiles(ratios, n=4)
    print(f"  {name:<34} other {statistics.median(t_other) * 1e3:7.3f} ms   this {statistics.median(t_this) * 1e3:7.3f} ms"
          f"   this/other {statistics.median(ratios):.3f} ({q[0]:.3f} - {q[2]:.3f})")


def main() -> None:
    from threadpoolctl import threadpool_limits

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("other_parent")
    ap.add_argument("other_package")
    ap.add_argument("--repeats", type=int, default=100)
    args = ap.parse_args()
    keep_freed_memory()
    sys.path.insert(0, os.path.abspath(args.other_parent))
    mod = {side: {m: importlib.import_module(f"{pkg}.{m}") for m in
                  ("core.layers", "core.math_ops", "core.attention", "core.gradients", "core.embeddings",
                   "training.optimizer")}
           for side, pkg in (("this", "mini_bert"), ("other", args.other_package))}
    rng = np.random.default_rng(0)
    B, T, D, H, V, N, P = 32, 64, 192, 4, 8192, 313, 2_900_000
    r = lambda *shape: rng.standard_normal(shape, dtype=np.float32)  # noqa: E731
    x, dy, gamma, beta = r(B, T, D), r(B, T, D), r(D), np.zeros(D, np.float32)
    S, logits, targets = r(B, H, T, T), r(N, V), rng.integers(0, V, N)
    W_QKV, b_QKV, W_O, b_O = r(D, 3 * D) * 0.05, np.zeros(3 * D, np.float32), r(D, D) * 0.05, np.zeros(D, np.float32)
    bias = mod["this"]["core.attention"].mask_bias(np.ones((B, T)), np.dtype(np.float32))
    ids = rng.integers(5, V, (B, T))
    dE = {side: np.zeros((V, D), np.float32) for side in mod}
    ln_cache = mod["this"]["core.layers"].layer_norm_forward(x, gamma, beta, 1e-12)[1]

    def attention(m):
        out, cache = m["core.attention"].attention_forward(x, W_QKV, b_QKV, W_O, b_O, H, bias)
        backward = m["core.attention"].attention_backward
        if "params" in inspect.signature(backward).parameters:      # (dout, cache, params) since the weights dict
            backward(dy, cache, {"W_QKV": W_QKV, "W_O": W_O})
        else:
            backward(dy, cache, W_QKV, W_O)

    opt = {}
    for side, m in mod.items():
        params, grads = r(P), r(P) * 1e-3
        opt[side] = (m["training.optimizer"].AdamW(params, np.ones(P), lr=1e-4), grads)
    ops = {
        "layer_norm_forward": lambda m, s: m["core.layers"].layer_norm_forward(x, gamma, beta, 1e-12),
        "layer_norm_backward": lambda m, s: m["core.layers"].layer_norm_backward(dy, ln_cache),
        "softmax_forward (B, H, T, T)": lambda m, s: m["core.math_ops"].softmax_forward(S),
        "attention forward + backward": lambda m, s: attention(m),
        "masked-LM cross-entropy (313 rows)": lambda m, s: m["core.gradients"].mlm_cross_entropy(
            logits, targets, np.ones(N, bool)),
        "embedding_backward (token table)": lambda m, s: m["core.embeddings"].embedding_backward(dy, ids, V,
                                                                                              out=dE[s]),
        "AdamW step (2.9M, one thread)": lambda m, s: opt[s][0].step(opt[s][1]),
    }
    print(f"one worker thread's share: {B} x {T} tokens, hidden {D}, {H} heads, vocab {V}; BLAS on one thread")
    with threadpool_limits(1):
        for name, op in ops.items():
            n = args.repeats if "attention" not in name and "AdamW" not in name else max(args.repeats // 3, 4)
            paired(name, lambda: op(mod["other"], "other"), lambda: op(mod["this"], "this"), n)


if __name__ == "__main__":
    main()
