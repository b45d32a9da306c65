"""Elementwise and row-wise operations, each a forward/backward pair.

Shapes: any leading shape `...`; softmax-like ops act on the last axis.
Convention: `dX` always means dLoss/dX and has X's shape. Each `*_backward` docstring names the section of
docs/MATHEMATICAL_GUIDE.md that derives it.

Only the NumPy API that CuPy also implements is used in core/, and new arrays are made `like=` an input (NEP 35),
so the same functions run on CuPy arrays when the model's buffer lives on a GPU (scripts/cupy_check.py checks it
op by op; on an H100 every op ran and the model's gradients matched NumPy's within 2.2e-7). One exception: float64
GELU calls scipy's `erf`, which is CPU-only; float32 needs no scipy.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

# --------------------------------------------------------------------------------------------------------------
# Row sums


def row_sum(x: np.ndarray) -> np.ndarray:
    """sum of x over its last axis, keeping that axis: (..., n) -> (..., 1).

    Computed as the matrix-vector product x @ 1, which BLAS runs as a gemv: for the model's short rows (the hidden
    size, the T keys of an attention row) NumPy's x.sum(axis=-1) reduces row by row and is 3-7x slower (0.10 ms
    against 0.03 ms for (32, 64, 192) float32, one thread).
    """
    return (x @ np.ones(x.shape[-1], dtype=x.dtype, like=x))[..., None]


def row_max(x: np.ndarray) -> np.ndarray:
    """max of x over its last axis, keeping that axis: (..., n) -> (..., 1), exactly x.max(axis=-1, keepdims=True).

    By halving: the elementwise maximum of the two halves of every row, repeated, so each step is one vectorised
    pass over all rows; NumPy's reduction goes row by row, which for the T = 64 keys of an attention row is 1.5x
    slower (0.61 ms against 0.41 ms for (32, 4, 64, 64) float32, one thread).
    """
    m = x
    while m.shape[-1] > 1:
        n, half = m.shape[-1], m.shape[-1] // 2
        top = np.maximum(m[..., :half], m[..., half:2 * half])
        if n % 2:                                                   # an odd row: its last element joins the first
            np.maximum(top[..., :1], m[..., 2 * half:], out=top[..., :1])
        m = top
    return m if m is not x else x[..., :1].copy()


# --------------------------------------------------------------------------------------------------------------
# Softmax


def softmax_forward(x: np.ndarray) -> np.ndarray:
    """y = exp(x - max x) / sum exp(x - max x) over the last axis. Subtracting the max keeps exp() finite."""
    z = x - row_max(x)
    np.exp(z, out=z)
    z /= row_sum(z)
    return z


def softmax_backward(dy: np.ndarray, y: np.ndarray) -> np.ndarray:
    """dx = y * (dy - sum(dy * y)) (guide, section "Softmax")."""
    dx = dy * y
    s = dx.sum(axis=-1, keepdims=True)
    dx -= y * s
    return dx


# --------------------------------------------------------------------------------------------------------------
# Log-softmax + cross-entropy (mean over rows)


def cross_entropy_forward(logits: np.ndarray, targets: np.ndarray) -> tuple[float, np.ndarray]:
    """loss = mean_n [ logsumexp(z_n) - z_n[t_n] ] for logits z: (N, V), targets t: (N,) int.

    Returns the loss and the probabilities p = softmax(z), which the backward needs.
    """
    if logits.shape[0] == 0:
        raise ValueError("cross-entropy over zero rows: no position was selected (is any token masked?)")
    m = logits.max(axis=-1, keepdims=True)                        # (N, 1)
    z = logits - m
    z_target = z[np.arange(len(targets), like=targets), targets]  # (N,)
    probs = np.exp(z, out=z)                                      # (N, V), in z's memory: exp once
    sumexp = row_sum(probs)                                       # (N, 1)
    loss = float(np.mean(np.log(sumexp[:, 0]) - z_target))       # mean of logsumexp(z) - z[t]
    probs /= sumexp
    return loss, probs


def cross_entropy_backward(probs: np.ndarray, targets: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """dz = (p - onehot(t)) / N (guide, section "Cross-entropy"). With `out` (which may be `probs` itself, when
    the caller no longer needs it), dz is written there instead of into a new array."""
    n = probs.shape[0]
    if out is None:
        dz = probs.copy()
    else:
        dz = out
        if dz is not probs:
            dz[...] = probs
    dz[np.arange(n, like=targets), targets] -= 1.0
    dz /= n
    return dz


# --------------------------------------------------------------------------------------------------------------
# Activations. Each forward returns (y, cache); each backward takes (dy, cache).

_SQRT_2 = math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_GELU_TANH_C = 0.044715


def relu_forward(x):
    """y = max(x, 0)."""
    return np.maximum(x, 0), x


def relu_backward(dy, x):
    """dx = dy * [x > 0] (guide, section "ReLU"). A multiply, not a boolean-mask assignment: it is faster."""
    return dy * (x > 0)


# Phi(x) ~ (1 + tanh(x P(x^2))) / 2: GELU's familiar tanh approximation, whose P(s) = sqrt(2/pi) (1 + 0.044715 s) is
# carried to degree 6 (coefficients from scripts/fit_gelu_cdf.py, which derives them; p_0 and p_1 stay close to the
# familiar sqrt(2/pi) and 0.0357). Max |error| 9.9e-8 in float32 arithmetic over every float32 with 2^-12 <= |x| <= 6
# (float32's spacing near 1 is 6e-8 below, 1.2e-7 above); beyond |x| = 4 sqrt 2, Phi rounds to 0 or 1 in float32,
# so x is clipped there.
_CDF_TANH = (7.978849416e-01, 3.633308393e-02, -3.259414470e-05, -5.530660111e-05, 3.964831210e-06, -1.322713694e-07,
             1.756432137e-09)
_CDF_CLIP = 4.0 * _SQRT_2


def _polyval_inplace(coefs, s):
    """sum_k coefs[k] s^k by Horner's rule, in one new buffer."""
    acc = s * s.dtype.type(coefs[-1])
    acc += s.dtype.type(coefs[-2])
    for c in coefs[-3::-1]:
        acc *= s
        acc += s.dtype.type(c)
    return acc


def normal_cdf(x):
    """Phi(x) = (1 + erf(x / sqrt 2)) / 2, the standard normal CDF.

    float64 (and any dtype but float32) uses scipy's erf, exact to rounding: the gradient checks run there.
    float32 evaluates (1 + tanh(x P(x^2))) / 2 with vectorised multiply-adds and one tanh, 6x faster than scipy's
    scalar erf loop and within 9.9e-8 of the exact value (tests/test_math_ops.py checks the bound).
    """
    if x.dtype != np.float32:
        cdf = erf(x * x.dtype.type(1.0 / _SQRT_2))
        cdf += 1.0
        cdf *= 0.5
        return cdf
    xc = np.clip(x, -_CDF_CLIP, _CDF_CLIP)                          # (...,)
    cdf = _polyval_inplace(_CDF_TANH, xc * xc)                      # P(x^2), one buffer updated in place from here
    cdf *= xc
    np.tanh(cdf, out=cdf)                                           # tanh(x P(x^2)), in [-1, 1]
    cdf *= np.float32(0.5)
    cdf += np.float32(0.5)                                          # in [0, 1]
    # At the clip, tanh rounds to -1 + 6e-8, leaving Phi = 3e-8 rather than 0: make Phi exactly 0 past the clip,
    # so that GELU(x) -> 0 for very negative x instead of ~3e-8 x.
    cdf *= x > np.float32(-_CDF_CLIP)
    return cdf


def gelu_forward(x):
    """Exact GELU, y = x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), as in the original BERT checkpoints.

    This runs on the largest activations of the model, (B, T, F); see `normal_cdf` for how Phi is computed.
    """
    cdf = normal_cdf(x)
    return x * cdf, (x, cdf)


def gelu_backward(dy, cache):
    """dx = dy * (Phi(x) + x phi(x)), phi(x) = exp(-x^2/2) / sqrt(2 pi) (guide, section "GELU")."""
    x, cdf = cache
    d = x * x                                                      # one buffer, updated in place:
    d *= -0.5
    np.exp(d, out=d)                                               # exp(-x^2 / 2)
    d *= x.dtype.type(_INV_SQRT_2PI)                               # phi(x)
    d *= x
    d += cdf                                                       # Phi(x) + x phi(x)
    d *= dy
    return d


def gelu_tanh_forward(x):
    """Tanh approximation: y = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3). No x**3: x*x*x is faster."""
    x2 = x * x
    u = x.dtype.type(_SQRT_2_OVER_PI) * (x + x.dtype.type(_GELU_TANH_C) * x2 * x)
    t = np.tanh(u)
    return 0.5 * x * (1.0 + t), (x, x2, t)


def gelu_tanh_backward(dy, cache):
    """dx = dy * [0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 c x^2)] (guide, section "GELU")."""
    x, x2, t = cache
    du_dx = x.dtype.type(_SQRT_2_OVER_PI) * (1.0 + x.dtype.type(3.0 * _GELU_TANH_C) * x2)
    return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du_dx)


ACTIVATION_FORWARD = {"relu": relu_forward, "gelu": gelu_forward, "gelu_tanh": gelu_tanh_forward}
ACTIVATION_BACKWARD = {"relu": relu_backward, "gelu": gelu_backward, "gelu_tanh": gelu_tanh_backward}


def tanh_forward(x):
    """y = tanh(x); the pooler's activation."""
    y = np.tanh(x)
    return y, y


def tanh_backward(dy, y):
    """dx = dy * (1 - y^2) (guide, section "Tanh pooler")."""
    return dy * (1.0 - y * y)


# --------------------------------------------------------------------------------------------------------------
# Dropout (inverted): the scaled keep-mask is the cache, so backward (and a gradient check) can replay it.


def dropout_forward(x, p: float, rng: np.random.Generator | None, training: bool):
    """y = x * m, m = [u >= p] / (1 - p) with u ~ U[0, 1). Identity (mask None) when not training or p == 0."""
    if not training or p == 0.0:
        return x, None
    if rng is None:
        raise ValueError("dropout in training mode needs a numpy.random.Generator (pass rng=...)")
    mask = rng.random(x.shape, dtype=np.float32) >= p
    scaled = mask.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))
    scaled = np.asarray(scaled, like=x)          # drawn by NumPy's generator; moved to x's array module if needed
    return x * scaled, scaled


def dropout_backward(dy, mask):
    """dx = dy * m (guide, section "Dropout")."""
    return dy if mask is None else dy * mask
