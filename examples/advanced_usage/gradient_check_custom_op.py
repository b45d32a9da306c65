"""Add your own operation the way every op in mini_bert/core is written — a forward/backward pair — and check its
backward against central differences in float64.

The op here is SiLU (swish), y = x * sigmoid(x), with dy/dx = s + x s (1 - s), s = sigmoid(x).

What it teaches: the pattern `forward(x) -> (y, cache)`, `backward(dy, cache) -> dx`; the check
L = sum(y * R) with R random (so dL/dy = R, any direction of the output is tested), numeric
dL/dx_i = (L(x + h e_i) - L(x - h e_i)) / 2h; why float64 (in float32 the rounding error ~1e-7 |L| / h swamps the
difference); and that a wrong backward (here, forgetting the x s (1 - s) term) is caught at once.

    python examples/advanced_usage/gradient_check_custom_op.py [--shape 3 5]
"""

import argparse

import numpy as np


def silu_forward(x):
    """y = x * sigmoid(x). Caches x and s = sigmoid(x) for the backward pass."""
    s = 1.0 / (1.0 + np.exp(-x))
    return x * s, (x, s)


def silu_backward(dy, cache):
    """dx = dy * (s + x s (1 - s)): the product rule, with sigmoid' = s (1 - s)."""
    x, s = cache
    return dy * (s + x * s * (1.0 - s))


def wrong_silu_backward(dy, cache):
    """A typical mistake: treating sigmoid(x) as a constant."""
    _, s = cache
    return dy * s


def check(forward, backward, x, h=1e-5, seed=0):
    """Largest relative error between backward's dx and central differences of L = sum(forward(x) * R)."""
    R = np.random.default_rng(seed).normal(size=forward(x)[0].shape)
    analytic = backward(R, forward(x)[1])
    numeric = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        up = np.sum(forward(x)[0] * R)
        x[i] = old - h
        down = np.sum(forward(x)[0] * R)
        x[i] = old
        numeric[i] = (up - down) / (2 * h)
    return float(np.linalg.norm(analytic - numeric) / max(np.linalg.norm(analytic), np.linalg.norm(numeric), 1e-12))


parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--shape", type=int, nargs="+", default=[3, 5])
args = parser.parse_args()

x = np.random.default_rng(1).normal(size=args.shape) * 3              # float64; values where SiLU curves
err = check(silu_forward, silu_backward, x)
bad = check(silu_forward, wrong_silu_backward, x)
print(f"SiLU backward vs central differences: relative error {err:.1e} ({'OK' if err < 1e-7 else 'MISMATCH'})")
print(f"the wrong backward (sigmoid treated as constant): relative error {bad:.1e} (caught: {bad > 1e-3})")
err32 = check(silu_forward, silu_backward, x.astype(np.float32), h=1e-3)
print(f"the same check in float32 (h = 1e-3): {err32:.1e} - rounding noise, which is why checks use float64")
