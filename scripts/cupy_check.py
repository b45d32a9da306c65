"""Do the core ops and the whole model run unchanged on CuPy arrays, and do they match NumPy?

    python scripts/cupy_check.py

The core math is written against the NumPy API that CuPy also implements: NumPy functions given CuPy arrays hand the
work to CuPy (`__array_function__`, `__array_ufunc__`), and new arrays are made `like=` an input (NEP 35). This
script runs each forward/backward pair, then a whole MLM forward and backward with the model's flat buffer on the
GPU, and prints, per op, whether it ran and its largest difference from NumPy on the same float32 inputs.
Without CuPy installed it runs the same code on NumPy (a dry run: every difference is 0).

Measured on an NVIDIA H100 with CuPy 14.2 (2026-11-27): every op runs; the model's loss matches NumPy's exactly and
its gradients within 2.2e-7 (the attention pair on unscaled random weights, whose gradients reach the hundreds,
within 7.3e-4; the single ops within 1.9e-6). Not covered: float64 GELU (scipy's erf is CPU-only), dropout masks (drawn by NumPy's generator, then
copied over) and checkpoints (state_dict returns NumPy arrays).
"""

from __future__ import annotations

import traceback

import numpy as np

from mini_bert.config import ModelConfig
from mini_bert.core import attention as A
from mini_bert.core import embeddings as E
from mini_bert.core import layers as L
from mini_bert.core import math_ops as M
from mini_bert.core.gradients import MiniBERTGradients
from mini_bert.core.model import MiniBERT
from mini_bert.core.gradients import mlm_cross_entropy
from mini_bert.data.masking import mask_tokens

try:
    import cupy as xp
except ImportError:                       # no GPU here: run the same code on NumPy
    xp = np
GPU = xp is not np


def to_host(a):
    if isinstance(a, (tuple, list)):
        return [to_host(x) for x in a]
    return xp.asnumpy(a) if GPU and isinstance(a, xp.ndarray) else a


def max_difference(a, b) -> float:
    if isinstance(a, (list, tuple)):
        return max([max_difference(x, y) for x, y in zip(a, b)] or [0.0])
    if isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.size:
        return float(np.abs(a - b).max())
    return 0.0


def op_cases(rng: np.random.Generator) -> dict:
    """name -> f(put): runs one op on arrays passed through `put` (identity for NumPy, a copy to the GPU)."""
    def r(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    x, W, b, dy, logits = r(2, 8, 16), r(16, 12), r(12), r(2, 8, 12), r(5, 12)
    ids, targets = rng.integers(0, 50, (2, 8)), np.array([0, 3, 5, 7, 11])
    gamma, beta = np.ones(16, np.float32), np.zeros(16, np.float32)
    W_QKV, b_QKV, W_O, b_O = r(16, 48), r(48), r(16, 16), r(16)
    bias = A.mask_bias(np.array([[1] * 8, [1] * 6 + [0] * 2]), np.dtype(np.float32))

    def attention(put):
        _, cache = A.attention_forward(put(x), put(W_QKV), put(b_QKV), put(W_O), put(b_O), 4, put(bias))
        dx, grads = A.attention_backward(put(x), cache, {"W_QKV": put(W_QKV), "W_O": put(W_O)})
        return (dx, *grads.values())

    return {
        "softmax_forward": lambda put: M.softmax_forward(put(x)),
        "cross_entropy_forward": lambda put: M.cross_entropy_forward(put(logits), put(targets))[1],
        "normal_cdf (float32)": lambda put: M.normal_cdf(put(x)),
        "gelu_forward": lambda put: M.gelu_forward(put(x))[0],
        "gelu_backward": lambda put: M.gelu_backward(put(x), M.gelu_forward(put(x))[1]),
        "linear_forward": lambda put: L.linear_forward(put(x), put(W), put(b)),
        "linear_backward": lambda put: L.linear_backward(put(dy), put(x), put(W)),
        "layer_norm forward + backward": lambda put: L.layer_norm_backward(
            put(x), L.layer_norm_forward(put(x), put(gamma), put(beta), 1e-12)[1]),
        "embedding_backward (scatter-add)": lambda put: E.embedding_backward(put(x), put(ids), 50),
        "embedding_backward (one-hot, 2 rows)": lambda put: E.embedding_backward(put(x), put(ids % 2), 2),
        "attention forward + backward": attention,
    }


def model_step(module, inputs) -> tuple[float, np.ndarray]:
    """Loss and flat gradient of one MLM forward/backward with the buffers on `module` (NumPy or CuPy)."""
    cfg = ModelConfig(vocab_size=500, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128,
                      max_position_embeddings=32, activation="gelu", norm_position="pre", dropout=0.0,
                      attention_dropout=0.0)
    model = MiniBERT(cfg, seed=0)
    grads = MiniBERTGradients(model)
    if module is not np:                                  # move both flat buffers; the views follow
        model.store.rebind(module.asarray(model.store.flat))
        grads.store.rebind(module.zeros_like(model.store.flat))
    inp, tgt, pos = (module.asarray(a) for a in inputs)
    logits, cache = model.forward(inp, None, None, masked_positions=pos)
    loss, dlogits = mlm_cross_entropy(logits, tgt, pos)
    grads.backward_from_logits(dlogits, cache)
    return float(loss), to_host(grads.flat)


def failure(e: Exception) -> str:
    frames = [f for f in traceback.extract_tb(e.__traceback__) if "mini_bert" in f.filename]
    where = f" at {frames[-1].filename.split('mini_bert/')[-1]}:{frames[-1].lineno}" if frames else ""
    return f"{type(e).__name__}{where}: {str(e).splitlines()[0][:80]}"


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"array module: {xp.__name__} {xp.__version__}" + ("" if GPU else " (CuPy not installed: a dry run)"))
    rows = []
    for name, run in op_cases(rng).items():
        reference = run(lambda a: a)
        try:
            rows.append((name, "runs", f"{max_difference(reference, to_host(run(xp.asarray))):.1e}"))
        except Exception as e:   # report every op, not just the first failure
            rows.append((name, "FAILS", failure(e)))
    ids = rng.integers(5, 500, (4, 32))
    ids[:, 0] = 2
    inputs = mask_tokens(ids, 500, 4, 0.15, np.random.default_rng(1))
    ref_loss, ref_grads = model_step(np, inputs)
    try:
        loss, grads = model_step(xp, inputs)
        rows.append(("MiniBERT forward + backward (MLM)", "runs",
                     f"loss {abs(loss - ref_loss):.1e}, gradients {np.abs(grads - ref_grads).max():.1e}"))
    except Exception as e:
        rows.append(("MiniBERT forward + backward (MLM)", "FAILS", failure(e)))
    print("| op | on the array module | max difference from NumPy (float32), or the error |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
