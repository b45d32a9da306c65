"""Beyond AdamW (the notes' Phase 3.2): Lion, adaptive gradient clipping (AGC) and the Lookahead wrapper.

Each works on the flat parameter buffer `model.store.flat` and the gradient buffer aligned with it, with AdamW's
interface (`step(grads_flat, lr)`, `state_dict()`, `load_state_dict()`), so any of them drops into a training loop
in place of `optimizer.AdamW`. `AdvancedOptimizer` gathers them under the names the notes use.
`minibert demo optimizers` compares them on an ill-conditioned quadratic.

Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), for gradient g:
    c = beta1 m + (1 - beta1) g                       the update direction interpolates momentum and gradient
    theta -= lr * (sign(c) + weight_decay * mask * theta)
    m = beta2 m + (1 - beta2) g                       the momentum is updated *after*, with a longer memory
Every coordinate moves by exactly +-lr (plus decay): the update has a larger norm than Adam's, so Lion wants a
learning rate about 3-10x smaller and a weight decay about 3-10x larger. One state buffer (m) instead of two.

AGC (Brock et al. 2021, "High-Performance Large-Scale Image Recognition Without Normalization"): a unit's gradient
G_i is rescaled when it is large *relative to its weights* W_i:
    if ||G_i|| > clip * max(||W_i||, eps):   G_i *= clip * max(||W_i||, eps) / ||G_i||
so a step can change a unit's weights by at most a fixed fraction of their size, whatever the loss scale.

Lookahead (Zhang et al. 2019, "Lookahead Optimizer: k steps forward, 1 step back"): an inner optimizer moves the
fast weights k steps; then the slow weights move part of the way towards them and the fast weights restart there:
    slow += alpha (fast - slow);  fast = slow

docs/MATHEMATICAL_GUIDE.md derives all three and says why each works: sections "Lion", "Adaptive gradient
clipping" and "Lookahead".
"""

from __future__ import annotations

import numpy as np

from ..core.parameters import ParameterStore
from .optimizer import AdamW, check_buffers, decay_mask


# ================================================================================================================
# Lion
# ================================================================================================================

class Lion:
    """Lion on one flat buffer (the update: the module docstring; derived in the guide, section "Lion"). `lr_scale`
    (optional, aligned with the buffer) gives per-parameter learning-rate multipliers, as for AdamW."""

    kind = "lion"       # the name a checkpoint records (see AdamW.kind)

    def __init__(self, params_flat: np.ndarray, decay_mask: np.ndarray, lr: float = 1e-4,
                 betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.1,
                 lr_scale: np.ndarray | None = None):
        check_buffers("Lion", params_flat, decay_mask)
        if not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ValueError(f"Lion betas must lie in [0, 1); got {betas}")
        self.params = params_flat
        self.lr, self.beta1, self.beta2, self.weight_decay = lr, betas[0], betas[1], weight_decay
        dtype = params_flat.dtype
        self.decay = (decay_mask * weight_decay).astype(dtype)        # weight_decay * mask, precomputed
        self.lr_scale = None if lr_scale is None else np.asarray(lr_scale, dtype=dtype, like=params_flat)
        self.m = np.zeros_like(params_flat)
        self.t = 0
        self._buf = np.empty_like(params_flat)    # reused every step: no large temporaries
        self._buf2 = np.empty_like(params_flat)

    def step(self, grads_flat: np.ndarray, lr: float | None = None) -> None:
        lr = self.lr if lr is None else lr
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        m, buf, buf2, dt = self.m, self._buf, self._buf2, self.params.dtype.type
        np.multiply(m, dt(b1), out=buf)
        np.multiply(grads_flat, dt(1.0 - b1), out=buf2)
        buf += buf2                                                   # c = b1 m + (1 - b1) g
        np.sign(buf, out=buf)                                         # sign(0) = 0: a zero gradient moves nothing
        np.multiply(self.decay, self.params, out=buf2)                # decoupled weight decay
        buf += buf2
        if self.lr_scale is not None:
            buf *= self.lr_scale
        buf *= dt(lr)
        self.params -= buf
        m *= dt(b2)
        np.multiply(grads_flat, dt(1.0 - b2), out=buf2)
        m += buf2                                                     # m = b2 m + (1 - b2) g, after the update

    def state_dict(self) -> dict:
        return {"m": self.m.copy(), "t": self.t}

    def load_state_dict(self, state: dict) -> None:
        if "v" in state:
            raise ValueError("this optimizer state has a second moment 'v': it is AdamW's, not Lion's; resume with "
                             "the optimizer the run was trained with")
        if state["m"].shape != self.m.shape:
            raise ValueError(f"optimizer state 'm' has {state['m'].shape[0]} values, the model {self.m.shape[0]}")
        self.m[...] = state["m"]
        self.t = int(state["t"])


# ================================================================================================================
# Adaptive gradient clipping
# ================================================================================================================

def _unit_axis(kind: str, ndim: int):
    """The axis that a unit's norm sums over, for a block of this kind (None: the whole block is one unit).

    Weights are (in, out) and y = x @ W, so output unit j of a matrix owns the column W[:, j]: its norm sums over
    axis 0 (the fan-in), the same choice as the paper's reference code for (in, out) kernels. The fused W_QKV
    (D, 3D) is no exception: its columns are the output units of Q, K and V. An embedding (V, D) has one unit per
    token, its row E[v, :] (sum over axis 1): a row is what a token's lookup reads, and for the tied decoder
    (logits = t @ E^T) it is also the fan-in of output unit v. A bias or LayerNorm vector is one unit.
    """
    if ndim < 2:
        return None
    return 1 if kind == "embedding" else 0


def adaptive_gradient_clip(grads_flat: np.ndarray, params_flat: np.ndarray, store: ParameterStore,
                           clip: float = 0.01, eps: float = 1e-3, exclude: tuple[str, ...] = ()) -> float:
    """Unit-wise AGC, in place on `grads_flat` (guide, section "Adaptive gradient clipping"). Returns the fraction
    of units that were clipped.

    For every unit i (a column of a weight matrix, a row of an embedding, a whole bias or LayerNorm vector; see
    `_unit_axis`): if ||G_i|| > clip * max(||W_i||, eps), G_i is scaled down to exactly that norm; other units are
    left untouched. `eps` keeps zero-initialised units (biases) from being frozen: their gradient may still reach
    clip * eps. `exclude` names blocks left unclipped (the paper leaves the final classifier alone, e.g.
    exclude=("W_cls", "b_cls")). grads_flat, params_flat: (P,), laid out as `store.flat`.
    """
    if grads_flat.shape != params_flat.shape or params_flat.shape != store.flat.shape:
        raise ValueError(f"grads {grads_flat.shape}, params {params_flat.shape} and the store's buffer "
                         f"{store.flat.shape} must have one layout; pass model.store.flat and grads.flat")
    if clip <= 0 or eps <= 0:
        raise ValueError(f"clip and eps must be positive; got clip={clip}, eps={eps}")
    unknown = [n for n in exclude if n not in store.slices]
    if unknown:
        raise ValueError(f"exclude names unknown blocks {unknown}; use fused block names such as "
                         f"{list(store.slices)[:4]}")
    clipped = units = 0
    for spec in store.specs:
        if spec.name in exclude:
            continue
        sl = store.slices[spec.name]
        g = grads_flat[sl].reshape(spec.shape)                        # views: scaling g scales grads_flat
        w = params_flat[sl].reshape(spec.shape)
        axis = _unit_axis(spec.kind, len(spec.shape))
        keep = axis is not None
        g_norm = np.sqrt(np.sum(np.square(g, dtype=np.float64), axis=axis, keepdims=keep))
        w_norm = np.sqrt(np.sum(np.square(w, dtype=np.float64), axis=axis, keepdims=keep))
        limit = clip * np.maximum(w_norm, eps)
        over = g_norm > limit
        units += over.size
        n_over = int(np.count_nonzero(over))
        if n_over:
            clipped += n_over
            scale = np.where(over, limit / np.where(over, g_norm, 1.0), 1.0)
            g *= scale.astype(g.dtype)
    return clipped / max(units, 1)


class AdaptiveGradientClipper:
    """`adaptive_gradient_clip` with its settings bound (guide, section "Adaptive gradient clipping"):
    `clipper(grads_flat)` clips in place and returns the fraction of units clipped (also kept in `last_fraction`,
    for logging)."""

    def __init__(self, params_flat: np.ndarray, store: ParameterStore, clip: float = 0.01, eps: float = 1e-3,
                 exclude: tuple[str, ...] = ()):
        self.params, self.store, self.clip, self.eps, self.exclude = params_flat, store, clip, eps, tuple(exclude)
        self.last_fraction = 0.0

    def __call__(self, grads_flat: np.ndarray) -> float:
        self.last_fraction = adaptive_gradient_clip(grads_flat, self.params, self.store, self.clip, self.eps,
                                                    self.exclude)
        return self.last_fraction


# ================================================================================================================
# Lookahead
# ================================================================================================================

class Lookahead:
    """Wrap any flat-buffer optimizer (AdamW, Lion): every k inner steps, slow += alpha (fast - slow), fast = slow
    (guide, section "Lookahead").

    The fast weights are `params_flat` itself (the model's buffer), so the model always holds the fast weights;
    the slow weights start as a copy of it. The inner optimizer's moments are kept across synchronisations (the
    paper's default). Between synchronisations one may evaluate `slow` (`swap_in_slow`) for a smoother estimate.
    """

    def __init__(self, inner, params_flat: np.ndarray, k: int = 5, alpha: float = 0.5):
        if params_flat.ndim != 1:
            raise ValueError("Lookahead works on the flat parameter buffer (model.store.flat)")
        if getattr(inner, "params", params_flat) is not params_flat:
            raise ValueError("the inner optimizer updates a different buffer than params_flat; build both on "
                             "model.store.flat")
        if int(k) != k or k < 1:
            raise ValueError(f"k (inner steps per synchronisation) must be a positive integer; got {k}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha (slow step size) must lie in (0, 1]; got {alpha}")
        self.inner, self.params, self.k, self.alpha = inner, params_flat, int(k), float(alpha)
        self.slow = params_flat.copy()
        self.t = 0                      # inner steps taken

    @property
    def lr(self):
        return self.inner.lr

    @property
    def kind(self) -> str:
        """"lookahead(adamw)", "lookahead(lion)", ...: the wrapper and what it wraps, as a checkpoint records it."""
        return f"lookahead({getattr(self.inner, 'kind', type(self.inner).__name__.lower())})"

    def step(self, grads_flat: np.ndarray, lr: float | None = None) -> None:
        self.inner.step(grads_flat, lr)
        self.t += 1
        if self.t % self.k == 0:
            fast, slow = self.params, self.slow
            np.subtract(fast, slow, out=fast)                          # fast - slow (reusing the fast buffer)
            fast *= fast.dtype.type(self.alpha)
            slow += fast                                               # slow += alpha (fast - slow)
            fast[...] = slow                                           # the fast weights restart from slow

    def swap_in_slow(self) -> np.ndarray:
        """Put the slow weights into the model's buffer; returns the fast weights so they can be put back."""
        fast = self.params.copy()
        self.params[...] = self.slow
        return fast

    def state_dict(self) -> dict:
        """Flat: the slow weights, the step count, and the inner optimizer's entries prefixed with 'inner.'."""
        return {"slow": self.slow.copy(), "t": self.t, "k": self.k,
                **{f"inner.{key}": value for key, value in self.inner.state_dict().items()}}

    def load_state_dict(self, state: dict) -> None:
        if "slow" not in state:
            raise ValueError("this optimizer state has no slow weights: it was not saved by Lookahead")
        if state["slow"].shape != self.slow.shape:
            raise ValueError(f"Lookahead slow weights have {state['slow'].shape[0]} values, the model "
                             f"{self.slow.shape[0]}")
        if int(state.get("k", self.k)) != self.k:
            raise ValueError(f"the state was saved with k={state['k']}, this Lookahead has k={self.k}; use the "
                             f"same k to resume exactly")
        self.inner.load_state_dict({key[len("inner."):]: value for key, value in state.items()
                                    if key.startswith("inner.")})
        self.slow[...] = state["slow"]
        self.t = int(state["t"])


# ================================================================================================================
# The notes' facade
# ================================================================================================================

class AdvancedOptimizer:
    """The notes' `AdvancedOptimizer`: builds Lion, an AGC clipper and a Lookahead wrapper for one model.

        adv = AdvancedOptimizer(model, weight_decay=0.1)
        opt = adv.implement_lookahead_wrapper(adv.implement_lion_optimizer(lr=3e-4))
        agc = adv.add_adaptive_gradient_clipping(clip=0.02)
        ... agc(grads.flat); opt.step(grads.flat, lr)
    """

    def __init__(self, model, weight_decay: float = 0.01):
        self.store = model.store
        self.params = model.store.flat
        self.weight_decay = weight_decay
        self.decay_mask = decay_mask(self.store)

    def implement_lion_optimizer(self, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                                 weight_decay: float | None = None) -> Lion:
        """Lion (sign-based; one state buffer, so a third less optimizer memory than AdamW)."""
        wd = self.weight_decay if weight_decay is None else weight_decay
        return Lion(self.params, self.decay_mask, lr=lr, betas=betas, weight_decay=wd)

    def add_adaptive_gradient_clipping(self, clip: float = 0.01, eps: float = 1e-3,
                                       exclude: tuple[str, ...] = ()) -> AdaptiveGradientClipper:
        """Unit-wise clipping relative to the parameters' norms; call the result on the gradient buffer."""
        return AdaptiveGradientClipper(self.params, self.store, clip, eps, exclude)

    def implement_lookahead_wrapper(self, inner=None, k: int = 5, alpha: float = 0.5) -> Lookahead:
        """Lookahead around `inner` (default: AdamW with lr 1e-3 and this facade's weight decay)."""
        if inner is None:
            inner = AdamW(self.params, self.decay_mask, lr=1e-3, weight_decay=self.weight_decay)
        return Lookahead(inner, self.params, k=k, alpha=alpha)
