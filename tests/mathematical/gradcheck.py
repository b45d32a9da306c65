"""Float64 central-difference gradient checking, shared by the gradient tests.

The error of a tensor is ||analytic - numeric|| / max(||analytic||, ||numeric||, tiny): a relative error that is not
dominated by entries whose true gradient is ~0 (where finite differences only see rounding noise).
"""

from __future__ import annotations

import numpy as np

# Step size: the truncation error of central differences grows as eps^2 (~1e-10 here), the rounding error as
# 1e-16 * |L| / eps. At eps = 1e-6 rounding dominates for small gradients such as W_K's (measured: 1e-6 relative);
# at 1e-5 both stay below 1e-7.
EPS = 1e-5
TOL = 1e-6   # the largest relative error a backward pass may show against central differences


def numeric_gradient(f, x: np.ndarray, eps: float = EPS) -> np.ndarray:
    """d f() / d x by central differences, perturbing x in place one entry at a time."""
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        fp = f()
        x[i] = old - eps
        fm = f()
        x[i] = old
        grad[i] = (fp - fm) / (2 * eps)
    return grad


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    denom = max(np.linalg.norm(a), np.linalg.norm(b), 1e-12)
    return float(np.linalg.norm(a - b) / denom)


def assert_gradients_match(forward, backward, inputs: dict, tol: float = 1e-6, seed: int = 0) -> float:
    """Check backward(dy, cache) against central differences of L = sum(forward(**inputs) * R), R random.

    `forward(**inputs)` returns (y, cache); `backward(dy, cache)` returns the gradients of the inputs named in
    `inputs` order (a tuple, or a single array). Returns the largest relative error; fails with a message naming
    the input.
    """
    rng = np.random.default_rng(seed)
    y, cache = forward(**inputs)
    R = rng.normal(size=y.shape)
    analytic = backward(R, cache)
    if not isinstance(analytic, tuple):
        analytic = (analytic,)
    worst = 0.0
    for (name, x), g in zip(inputs.items(), analytic):
        if g is None or not isinstance(x, np.ndarray) or x.dtype.kind != "f":
            continue
        num = numeric_gradient(lambda: float(np.sum(forward(**inputs)[0] * R)), x)
        err = relative_error(g, num)
        worst = max(worst, err)
        assert err <= tol, f"gradient of {name!r}: relative error {err:.2e} > {tol:.0e}"
    return worst


def report(name: str, err: float, tol: float = TOL) -> None:
    """Print a check's observed maximum relative error (visible with pytest -s) and assert it is within tol."""
    print(f"{name}: max relative error {err:.2e}")
    assert err <= tol, f"{name}: relative error {err:.2e} > {tol:.0e}"
