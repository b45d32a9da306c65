"""Check a hand-written backward against float64 central differences: the test every op of this package passes,
and the one to run on an op you write yourself.

    from mini_bert.gradcheck import check
    result = check(layer_norm_forward, layer_norm_backward, (4, 8), (8,), (8,), 1e-5)
    print(result)            # one row per input: relative error, max abs error, the worst entry
    assert result.passed

The contract (docs/MATHEMATICAL_GUIDE.md, section "Gradient checking"):

* `forward(*inputs)` returns the output `y` (an array or a float), or a pair `(y, cache)`.
* `backward(dy, cache)` when forward returned a pair, else `backward(dy, *inputs)`, returns the gradient of every
  input in order: dL/dx with x's shape, or None for an input without one (integer ids, a constant such as eps).
  Trailing constants may be left out, and a single gradient may be returned alone instead of as a 1-tuple.
* The loss is L = sum(y * R), with R a fixed standard-normal array of y's shape, so dL/dy = R is what backward
  receives as dy. A random R (rather than all ones) keeps a backward that only gets the sum right from passing.
* Each input is a float64 array (checked), a tuple of ints (a shape: the checker draws a standard-normal float64
  array of it), or anything else (an int or bool array, a float such as eps), which is passed unchanged and not
  checked. float32 and float16 arrays are refused with GradCheckError: their rounding error swamps a difference
  quotient (the guide says by how much), so a correct backward would look broken.

Every float entry is perturbed by +-eps in turn (2 forward calls per entry), so keep the inputs small: tens to a
few hundred entries. The caller's arrays are copied, never changed. An input passes when its relative error
||a - n|| / max(||a||, ||n||, 1e-12) is at most `tol` (a = analytic, n = numeric): a norm over the whole tensor,
so entries whose true gradient is ~0, where the difference quotient sees only rounding noise, cannot dominate.

`minibert gradcheck my_ops.py:my_forward,my_backward --shape 4,8` runs the same check on a file of your own.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import MiniBertError

# Step size: the truncation error of central differences grows as eps^2 (~1e-10 here), the rounding error as
# 1e-16 * |L| / eps. At eps = 1e-6 rounding dominates for small gradients such as W_K's (measured: 1e-6 relative);
# at 1e-5 both stay below 1e-7.
EPS = 1e-5
TOL = 1e-6      # the largest relative error a backward pass may show against central differences


class GradCheckError(MiniBertError):
    """The check cannot be run as asked (float32 inputs, a backward returning the wrong number of gradients, a
    forward that changes its input); the message says how to fix it."""


# --------------------------------------------------------------------------------------------------------------
# Central differences


def central_difference(f: Callable[[], float], x: np.ndarray, index: tuple, eps: float = EPS) -> float:
    """(f() at x[index] + eps  -  f() at x[index] - eps) / 2 eps, perturbing x in place and restoring it."""
    old = x[index]
    x[index] = old + eps
    fp = f()
    x[index] = old - eps
    fm = f()
    x[index] = old
    return (fp - fm) / (2 * eps)


def numeric_gradient(f: Callable[[], float], x: np.ndarray, eps: float = EPS) -> np.ndarray:
    """d f() / d x by central differences, perturbing x in place one entry at a time (f reads x)."""
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        grad[index] = central_difference(f, x, index, eps)
    return grad


def relative_error(a, b) -> float:
    """||a - b|| / max(||a||, ||b||, 1e-12); for two numbers |a - b| / max(|a|, |b|, 1e-12). The floor only
    prevents 0 / 0."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    denom = max(float(np.linalg.norm(a)), float(np.linalg.norm(b)), 1e-12)
    return float(np.linalg.norm(a - b) / denom)


# --------------------------------------------------------------------------------------------------------------
# The check


@dataclass(frozen=True)
class InputResult:
    """One input's comparison. For a checked input, `worst_index` is the entry with the largest |a - n| and
    `analytic`, `numeric` are a and n there; `note` says why an input was not checked, or what went wrong."""

    name: str
    shape: tuple
    checked: bool
    passed: bool
    relative_error: float = float("nan")
    max_abs_error: float = float("nan")
    worst_index: tuple = ()
    analytic: float = float("nan")
    numeric: float = float("nan")
    note: str = ""


@dataclass(frozen=True)
class GradCheckResult:
    inputs: tuple[InputResult, ...]
    tol: float
    eps: float

    @property
    def passed(self) -> bool:
        """Every checked input is within tol."""
        return all(r.passed for r in self.inputs if r.checked)

    @property
    def max_relative_error(self) -> float:
        return max(r.relative_error for r in self.inputs if r.checked)

    def failures(self) -> list[InputResult]:
        return [r for r in self.inputs if r.checked and not r.passed]

    def table(self) -> str:
        """One row per input: the verdict, relative error, max abs error and the worst entry's two values."""
        head = (f"{'input':<12} {'shape':<14} {'rel. error':>10} {'max |a-n|':>10}  {'worst entry':<14} "
                f"{'analytic':>13} {'numeric':>13}  verdict")
        lines = [head, "-" * len(head)]
        for r in self.inputs:
            shape = str(r.shape)
            if not r.checked:
                lines.append(f"{r.name:<12} {shape:<14} {'':>10} {'':>10}  {'':<14} {'':>13} {'':>13}  "
                             f"skipped ({r.note})")
                continue
            if r.relative_error == float("inf"):
                lines.append(f"{r.name:<12} {shape:<14} {'':>10} {'':>10}  {'':<14} {'':>13} {'':>13}  "
                             f"FAIL ({r.note})")
                continue
            verdict = "ok" if r.passed else "FAIL"
            if r.note:
                verdict += f" ({r.note})"
            lines.append(f"{r.name:<12} {shape:<14} {r.relative_error:10.2e} {r.max_abs_error:10.2e}  "
                         f"{str(list(r.worst_index)):<14} {r.analytic:13.6e} {r.numeric:13.6e}  {verdict}")
        n_bad, n = len(self.failures()), sum(r.checked for r in self.inputs)
        verdict = (f"passed: all {n} checked inputs within" if self.passed else
                   f"FAILED: {n_bad} of {n} checked inputs above")
        lines.append(f"{verdict} tol {self.tol:.0e} (float64 central differences, eps {self.eps:.0e})")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def _input_names(forward, n: int, names) -> list[str]:
    if names is not None:
        names = [str(s) for s in names]
        if len(names) != n:
            raise GradCheckError(f"names has {len(names)} entries for {n} inputs; give one name per input")
        return names
    try:
        params = [p for p in inspect.signature(forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    found = [p.name for p in params[:n]]
    return found + [f"input {i}" for i in range(len(found), n)]


def _prepare(inputs, names, rng) -> list:
    """Copies of the float64 inputs, arrays drawn for shapes, everything else unchanged."""
    out = []
    for name, x in zip(names, inputs):
        if isinstance(x, tuple):
            if not all(isinstance(n, (int, np.integer)) and n >= 0 for n in x):
                raise GradCheckError(f"input {name!r}: the tuple {x} is not a shape; a shape is a tuple of "
                                     f"non-negative ints such as (4, 8)")
            out.append(rng.standard_normal(x))
        elif isinstance(x, np.ndarray) and x.dtype.kind in "fc":
            if x.dtype != np.float64:
                raise GradCheckError(
                    f"input {name!r} is {x.dtype}: in {x.dtype} the difference quotients carry rounding errors of "
                    f"order 1e-2 relative at eps 1e-5 (a correct LayerNorm backward measures 3e-2), far above the "
                    f"1e-6 tolerance, so the check would report bugs that are not there. Pass it as float64 "
                    f"({name}.astype(np.float64)), or build the model with ModelConfig(dtype=\"float64\")")
            out.append(x.copy())
        else:
            out.append(x)
    return out


def _split_forward(ret):
    """(y as a float64 array, cache or None, whether forward returned a pair)."""
    pair = isinstance(ret, tuple)
    if pair and len(ret) != 2:
        raise GradCheckError(f"forward returned a tuple of {len(ret)} values; return the output y alone, or the "
                             f"pair (y, cache)")
    y = ret[0] if pair else ret
    if isinstance(y, np.ndarray) and y.dtype.kind == "f" and y.dtype != np.float64:
        raise GradCheckError(f"forward returned a {y.dtype} output from float64 inputs: a dtype inside it (np.float32 "
                             f"or .astype) lowers the precision, and float32 rounding swamps the difference "
                             f"quotients. Compute in the inputs' dtype (float64) while checking")
    y = np.asarray(y)
    if y.dtype.kind != "f":
        raise GradCheckError(f"forward's output has dtype {y.dtype}; it must be a float array or a float")
    return y, (ret[1] if pair else None), pair


def check(forward: Callable, backward: Callable, *inputs, names=None, seed: int | np.random.Generator = 0,
          eps: float = EPS, tol: float = TOL) -> GradCheckResult:
    """Compare `backward` with float64 central differences of L = sum(forward(*inputs) * R).

    inputs: float64 arrays, shapes (tuples of ints: random float64 inputs) or constants passed unchanged; see the
    module docstring for the contract. names: one label per input for the table (default: forward's parameter
    names). seed: an int or a numpy Generator; the shape inputs are drawn first, then R.
    Returns a GradCheckResult (`.passed`, `.table()`); raises GradCheckError when the check cannot be run.
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    labels = _input_names(forward, len(inputs), names)
    args = _prepare(inputs, labels, rng)
    floats = [i for i, x in enumerate(args) if isinstance(x, np.ndarray) and x.dtype == np.float64]
    before = [args[i].copy() for i in floats]

    y, cache, pair = _split_forward(forward(*args))
    for i, old in zip(floats, before):
        if not np.array_equal(args[i], old, equal_nan=True):
            raise GradCheckError(f"forward changed its input {labels[i]!r} in place; work on a copy (x = x - m, not "
                                 f"x -= m), or the difference quotients read a moved point")
    R = rng.standard_normal(y.shape)
    grads = backward(R, cache) if pair else backward(R, *args)
    if not isinstance(grads, (tuple, list)):
        grads = (grads,)
    missing = [labels[i] for i in floats if i >= len(grads)]
    if len(grads) > len(args) or missing:
        raise GradCheckError(f"backward returned {len(grads)} gradient(s) for {len(args)} input(s) "
                             f"({', '.join(labels)}){'; none for ' + ', '.join(missing) if missing else ''}: "
                             f"return one per input in order, None where an input has none (trailing constants "
                             f"such as eps may be left out)")
    grads = tuple(grads) + (None,) * (len(args) - len(grads))

    def loss() -> float:
        return float(np.sum(_split_forward(forward(*args))[0] * R))

    results = []
    for i, (name, x, g) in enumerate(zip(labels, args, grads)):
        shape = tuple(np.shape(x))
        if i not in floats:
            kind = f"{x.dtype} array" if isinstance(x, np.ndarray) else f"a constant {type(x).__name__}"
            results.append(InputResult(name, shape, checked=False, passed=True, note=kind))
            continue
        if g is None:
            results.append(InputResult(name, shape, checked=False, passed=True, note="backward returned None"))
            continue
        g = np.asarray(g)
        if g.shape != x.shape:
            results.append(InputResult(name, shape, checked=True, passed=False, relative_error=float("inf"),
                                       note=f"gradient has shape {g.shape}, the input {x.shape}"))
            continue
        num = numeric_gradient(loss, x, eps)
        diff = np.abs(g.astype(np.float64) - num)
        err = relative_error(g, num)
        finite = bool(np.isfinite(g).all() and np.isfinite(num).all())
        if diff.size == 0:
            results.append(InputResult(name, shape, checked=True, passed=True, relative_error=0.0, max_abs_error=0.0))
            continue
        flat = np.where(np.isnan(diff), np.inf, diff)                 # a NaN entry counts as the worst
        worst = tuple(int(k) for k in np.unravel_index(int(np.argmax(flat)), x.shape))
        results.append(InputResult(
            name, shape, checked=True, passed=finite and err <= tol, relative_error=err,
            max_abs_error=float(flat.max()), worst_index=worst, analytic=float(g[worst]), numeric=float(num[worst]),
            note="" if finite else "not finite"))
    if not any(r.checked for r in results):
        raise GradCheckError(f"nothing to check: no input of {', '.join(labels)} is a float64 array with a gradient "
                             f"from backward; pass float64 arrays or shapes such as (4, 8)")
    return GradCheckResult(tuple(results), tol, eps)
