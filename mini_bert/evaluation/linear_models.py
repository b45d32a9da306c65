"""Multinomial logistic regression in NumPy: the linear probe of `probing.py` and the bag-of-words baseline of
`downstream.py`.

Shapes: N examples, F features, C classes. X (N, F) dense or scipy.sparse; y (N,) integer labels.

The model is z = x W + b, p = softmax(z), trained by minimising the mean cross-entropy plus an L2 penalty on W
(the bias is not penalised: shifting every logit of a class is free in a softmax model):

    L(W, b) = (1/N) sum_n [ logsumexp(z_n) - z_n[y_n] ] + (l2 / 2) ||W||^2
    dL/dZ = (P - Y) / N        dL/dW = X^T dL/dZ + l2 W        dL/db = sum_n dL/dZ_n

The objective is strictly convex when l2 > 0, so full-batch L-BFGS (scipy) reaches its unique minimum; nothing
depends on a learning rate or a number of epochs. The two matrix products run in the features' dtype (float32
features stay float32, twice as fast, which is what makes a probe per layer affordable on two cores); the
softmax, the loss and the parameters L-BFGS sees are float64. Float64 features give a float64 objective throughout
(the gradient check uses that).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.optimize
import scipy.sparse
from threadpoolctl import threadpool_limits

# On the full EWT train split (204k words) every layer's probe chose 1e-4 when that was the weakest penalty on offer;
# offered 1e-5 and 1e-6 too, three of four chose 1e-5 and none 1e-6 (docs/RESULTS.md, the default recipe's POS probe)
DEFAULT_L2_GRID = (1e-2, 1e-3, 1e-4, 1e-5)


@dataclass
class LinearClassifier:
    """A fitted softmax classifier. Column k of W scores the label `classes[k]`.

    Dense inputs are standardised with the training mean and scale before the linear map (`mean`, `scale` are None
    for sparse inputs, whose zeros must stay zeros).
    """

    W: np.ndarray                       # (F, C) float64
    b: np.ndarray                       # (C,) float64
    classes: np.ndarray                 # (C,) the original label of each column
    l2: float
    mean: np.ndarray | None = None      # (F,)
    scale: np.ndarray | None = None     # (F,)
    converged: bool = True
    n_iter: int = 0
    held_out_accuracy: dict = field(default_factory=dict)   # l2 -> accuracy, when chosen on held-out data

    def decision_function(self, X) -> np.ndarray:
        """Logits (N, C)."""
        return _prepare(X, self.mean, self.scale) @ self.W + self.b

    def predict(self, X) -> np.ndarray:
        """Predicted labels (N,), in the label space of the training data."""
        return self.classes[np.argmax(self.decision_function(X), axis=1)]

    def accuracy(self, X, y) -> float:
        y = np.asarray(y)
        if y.shape[0] == 0:
            raise ValueError("accuracy over zero examples")
        return float(np.mean(self.predict(X) == y))


def _prepare(X, mean=None, scale=None):
    """Features as float32 or float64 (other dtypes -> float64), standardised when mean/scale are given.
    Sparse matrices become CSR."""
    if scipy.sparse.issparse(X):
        dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.float64
        return scipy.sparse.csr_matrix(X, dtype=dtype)
    X = np.asarray(X)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if mean is not None:
        X = (X - mean.astype(X.dtype)) / scale.astype(X.dtype)
    return X


def softmax_regression_objective(theta: np.ndarray, X, y: np.ndarray, num_classes: int,
                                 l2: float) -> tuple[float, np.ndarray]:
    """Loss and gradient of L(W, b) above. theta = concat(W.ravel(), b): ((F + 1) * C,); y in [0, C).

    Returns (loss, dL/dtheta) in the layout of theta: the signature `scipy.optimize.minimize(jac=True)` expects.
    """
    F, C = X.shape[1], num_classes
    W = theta[:F * C].reshape(F, C)
    b = theta[F * C:]
    N = X.shape[0]
    Z = np.asarray(X @ W.astype(X.dtype), dtype=np.float64) + b    # (N, C); product in X's dtype
    Z -= Z.max(axis=1, keepdims=True)                          # logsumexp stays finite
    logsumexp = np.log(np.exp(Z).sum(axis=1))                  # (N,)
    rows = np.arange(N)
    loss = float(np.mean(logsumexp - Z[rows, y])) + 0.5 * l2 * float(np.sum(W * W))
    dZ = np.exp(Z - logsumexp[:, None])                        # P (N, C)
    dZ[rows, y] -= 1.0                                         # P - Y
    dZ /= N
    dW = np.asarray(X.T @ dZ.astype(X.dtype), dtype=np.float64) + l2 * W   # (F, C)
    db = dZ.sum(axis=0)                                        # (C,)
    return loss, np.concatenate([np.asarray(dW).ravel(), db])


def fit_logistic_regression(X, y, l2: float = 1e-3, max_iter: int = 1000, tol: float = 1e-4,
                            standardize: bool | None = None,
                            init: LinearClassifier | None = None) -> LinearClassifier:
    """Fit the softmax classifier by full-batch L-BFGS to convergence.

    X: (N, F) dense or sparse; y: (N,) labels of any integer values (mapped to columns via np.unique).
    standardize: None -> True for dense X, False for sparse X. tol: L-BFGS stops when the largest gradient entry
    is below tol (or the relative loss change below ~1e-12). init: a classifier with the same features and classes
    to warm-start from (the regularisation path).
    """
    y = np.asarray(y)
    if X.shape[0] != y.shape[0]:
        raise ValueError(f"X has {X.shape[0]} rows but y has {y.shape[0]} labels; they must match")
    if y.shape[0] == 0:
        raise ValueError("cannot fit a classifier on zero examples")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be integers; got dtype {y.dtype}")
    if l2 < 0:
        raise ValueError(f"l2 must be >= 0; got {l2}")
    classes, y_idx = np.unique(y, return_inverse=True)
    C = len(classes)
    sparse = scipy.sparse.issparse(X)
    if standardize is None:
        standardize = not sparse
    if standardize and sparse:
        raise ValueError("standardize=True would densify a sparse matrix; pass standardize=False")
    mean = scale = None
    if standardize:
        mean = np.asarray(X).mean(axis=0, dtype=np.float64)
        scale = np.asarray(X).std(axis=0, dtype=np.float64)
        scale[scale < 1e-12] = 1.0                             # constant features: leave them at 0
    Xp = _prepare(X, mean, scale)
    F = Xp.shape[1]
    if init is not None and init.W.shape == (F, C) and np.array_equal(init.classes, classes):
        theta0 = np.concatenate([init.W.ravel(), init.b])
    else:
        theta0 = np.zeros((F + 1) * C)
    if C == 1:                                                 # one label only: predict it, nothing to fit
        return LinearClassifier(np.zeros((F, 1)), np.zeros(1), classes, l2, mean, scale, True, 0)
    # One BLAS thread: the products are skinny (C columns), so threads gain little, and on a shared machine
    # spin-waiting BLAS threads made these fits ~10x slower in CPU time.
    with threadpool_limits(limits=1, user_api="blas"):
        res = scipy.optimize.minimize(
            softmax_regression_objective, theta0, args=(Xp, y_idx, C, l2), jac=True, method="L-BFGS-B",
            options={"maxiter": max_iter, "gtol": tol, "ftol": 1e-12, "maxcor": 20})
    W = res.x[:F * C].reshape(F, C).copy()
    b = res.x[F * C:].copy()
    # "ABNORMAL" line-search ends happen when the loss no longer changes in float64: that is convergence too.
    converged = bool(res.success) or res.nit < max_iter
    return LinearClassifier(W, b, classes, l2, mean, scale, converged, int(res.nit))


def fit_with_held_out_l2(X, y, grid=DEFAULT_L2_GRID, held_out_fraction: float = 0.1,
                         rng: np.random.Generator | None = None, max_fit_examples: int | None = None,
                         max_iter: int = 1000, tol: float = 1e-4) -> LinearClassifier:
    """Choose l2 from `grid` by accuracy on a random held-out slice of (X, y), then refit on all of it.

    The grid is walked from the strongest penalty to the weakest, each fit warm-started from the previous one;
    ties go to the stronger penalty. max_fit_examples caps the examples used while choosing (the final refit
    always sees every example), so the search stays cheap on large probing sets.
    Returns the refitted classifier; `held_out_accuracy` records the search.
    """
    y = np.asarray(y)
    N = y.shape[0]
    if not 0.0 < held_out_fraction < 1.0:
        raise ValueError(f"held_out_fraction must lie in (0, 1); got {held_out_fraction}")
    if N < 2:
        raise ValueError(f"need at least 2 examples to hold some out; got {N}")
    if not grid:
        raise ValueError("the l2 grid is empty")
    rng = np.random.default_rng(0) if rng is None else rng
    order = rng.permutation(N)
    n_held = max(1, int(round(held_out_fraction * N)))
    held, fit = order[:n_held], order[n_held:]
    if max_fit_examples is not None and len(fit) > max_fit_examples:
        fit = fit[:max_fit_examples]
        held = held[:max(1, int(round(max_fit_examples * held_out_fraction)))]
    X_fit, X_held = _rows(X, fit), _rows(X, held)
    scores: dict[float, float] = {}
    best_l2, best_acc, prev = None, -1.0, None
    for l2 in sorted(grid, reverse=True):
        prev = fit_logistic_regression(X_fit, y[fit], l2, max_iter, tol, init=prev)
        acc = prev.accuracy(X_held, y[held])
        scores[float(l2)] = acc
        if acc > best_acc:
            best_l2, best_acc = float(l2), acc
    final = fit_logistic_regression(X, y, best_l2, max_iter, tol)
    final.held_out_accuracy = scores
    return final


def _rows(X, idx):
    return X[idx] if not scipy.sparse.issparse(X) else scipy.sparse.csr_matrix(X)[idx]
