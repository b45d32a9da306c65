"""AdamW over the flat parameter buffer, global-norm clipping, and the decay mask.

The whole model is updated with a handful of vectorised NumPy operations on one buffer (no optimizer object per
layer). `minibert demo optimizer` shows AdamW at work on a toy problem (the notes' Week 3).

Update (guide, section "AdamW"), for step t = 1, 2, ... with gradient g:
    m = beta1 m + (1 - beta1) g                 v = beta2 v + (1 - beta2) g^2
    m_hat = m / (1 - beta1^t)                   v_hat = v / (1 - beta2^t)
    theta -= lr * (m_hat / (sqrt(v_hat) + eps) + weight_decay * mask * theta)
Decoupled weight decay (Loshchilov & Hutter): the decay does not pass through m and v, and `mask` is 0 for biases
and LayerNorm parameters.
"""

from __future__ import annotations

import numpy as np

from ..core.parameters import ParameterStore, layer_of

# AdamW's update makes 16 elementwise passes over seven arrays the size of the model. Taken whole (2.9M float32
# parameters: 12 MB an array), every pass streams from memory; taken in blocks of UPDATE_BLOCK elements, the
# seven arrays' slices (7 x 256 KB) stay in a core's L2 cache across the 16 passes. The result is the same, bit
# for bit: every operation is elementwise.
UPDATE_BLOCK = 1 << 16


def decay_mask(store: ParameterStore) -> np.ndarray:
    """1 for weight matrices and embeddings, 0 for biases and LayerNorm gains/biases; aligned with store.flat."""
    return store.per_element(lambda spec: 1.0 if spec.kind in ("matrix", "embedding") else 0.0)


def parameter_group(name: str) -> str:
    """"embeddings", "layer_{l}" or "head" for a parameter (or buffer block) name."""
    layer = layer_of(name)
    if layer is not None:
        return f"layer_{layer}"
    if name.startswith(("E_", "ln_emb")):
        return "embeddings"
    return "head"


def layer_wise_lr_scales(model, decay: float) -> np.ndarray:
    """Per-element learning-rate multipliers over `model.store.flat` for layer-wise LR decay (Howard & Ruder 2018,
    Clark et al. 2020): the head and the top encoder layer get 1, layer l of L gets decay^(L-1-l), and the
    embeddings decay^L. Lower layers, which hold more general features, then move less when fine-tuning.
    The tied token embedding counts as an embedding. Pass the result to AdamW(lr_scale=...).
    """
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"decay must lie in (0, 1] (1 = no decay; 0.8-0.95 is typical); got {decay}")
    L = model.config.num_layers

    def scale(spec):
        group = parameter_group(spec.name)
        if group == "embeddings":
            return decay ** L
        if group == "head":
            return 1.0
        return decay ** (L - 1 - int(group[6:]))

    return model.store.per_element(scale)


def clip_grad_norm(grads_flat: np.ndarray, max_norm: float) -> float:
    """Scale the gradients in place so that their global L2 norm is at most max_norm (guide, section "AdamW",
    clipping). Returns the norm before."""
    norm = float(np.sqrt(np.dot(grads_flat, grads_flat)))
    _scale_to_bound([grads_flat], norm, max_norm)
    return norm


def _scale_to_bound(views: list[np.ndarray], norm: float, max_norm: float) -> None:
    """The clipping rule: if norm > max_norm > 0, scale every view by max_norm / (norm + 1e-6), in place."""
    if max_norm > 0 and norm > max_norm:
        for v in views:
            v *= v.dtype.type(max_norm / (norm + 1e-6))


def clip_grad_norm_groups(groups: dict[str, list[np.ndarray]], max_norm: float) -> dict[str, float]:
    """`clip_grad_norm` for each group on its own: every group (a name -> views into the gradient buffer, which
    together may cover several slices) is scaled in place so that its L2 norm is at most max_norm, whatever the other
    groups' norms. Returns each group's norm before. A model trained beside another (ELECTRA's generator and
    discriminator) keeps its own step size this way, where one global norm lets the larger gradient shrink both."""
    norms = {}
    for name, views in groups.items():
        norms[name] = norm = float(np.sqrt(sum(float(np.dot(v, v)) for v in views)))
        _scale_to_bound(views, norm, max_norm)
    return norms


def check_buffers(name: str, params_flat: np.ndarray, mask: np.ndarray) -> None:
    """An optimizer works on the flat parameter buffer with a decay mask aligned to it; say so clearly if not."""
    if params_flat.ndim != 1:
        raise ValueError(f"{name} works on the flat parameter buffer (model.store.flat); got an array of shape "
                         f"{params_flat.shape}")
    if mask.shape != params_flat.shape:
        raise ValueError(f"decay_mask shape {mask.shape} != params shape {params_flat.shape}; build it with "
                         f"optimizer.decay_mask(model.store)")


class AdamW:
    """AdamW on one flat buffer (guide, section "AdamW"). `lr_scale` (optional, aligned with the buffer) gives
    per-parameter learning-rate multipliers, e.g. layer-wise LR decay."""

    kind = "adamw"      # the name a checkpoint records, so that a resume can check it has the same optimizer

    def __init__(self, params_flat: np.ndarray, decay_mask: np.ndarray, lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6, weight_decay: float = 0.01,
                 lr_scale: np.ndarray | None = None):
        check_buffers("AdamW", params_flat, decay_mask)
        self.params = params_flat
        self.lr, self.beta1, self.beta2, self.eps, self.weight_decay = lr, betas[0], betas[1], eps, weight_decay
        dtype = params_flat.dtype
        self.decay = (decay_mask * weight_decay).astype(dtype)        # weight_decay * mask, precomputed
        self.lr_scale = None if lr_scale is None else np.asarray(lr_scale, dtype=dtype, like=params_flat)
        self.m = np.zeros_like(params_flat)
        self.v = np.zeros_like(params_flat)
        self.t = 0
        self._buf = np.empty_like(params_flat)   # reused every step: no large temporaries
        self._buf2 = np.empty_like(params_flat)
        self.pool, self._ranges = None, [slice(0, params_flat.shape[0])]

    def use_threads(self, pool, threads: int) -> None:
        """Run the update on `threads` contiguous ranges of the buffer in `pool` (a concurrent.futures executor).
        Every operation is elementwise, so the result is identical; the trainer passes its gradient workers."""
        bounds = np.linspace(0, self.params.shape[0], max(1, threads) + 1).astype(int)
        self.pool = pool if threads > 1 else None
        self._ranges = ([slice(a, b) for a, b in zip(bounds[:-1], bounds[1:])] if self.pool
                        else [slice(0, self.params.shape[0])])

    def step(self, grads_flat: np.ndarray, lr: float | None = None) -> None:
        lr = self.lr if lr is None else lr
        self.t += 1
        bc1, bc2 = 1.0 - self.beta1 ** self.t, 1.0 - self.beta2 ** self.t       # bias corrections
        if self.pool is None:
            self._update_blocks(self._ranges[0], grads_flat, lr, bc1, bc2)
        else:
            list(self.pool.map(lambda r: self._update_blocks(r, grads_flat, lr, bc1, bc2), self._ranges))

    def _update_blocks(self, r: slice, grads_flat: np.ndarray, lr: float, bc1: float, bc2: float) -> None:
        """`_update` over the range r, one UPDATE_BLOCK at a time."""
        for start in range(r.start, r.stop, UPDATE_BLOCK):
            self._update(slice(start, min(start + UPDATE_BLOCK, r.stop)), grads_flat, lr, bc1, bc2)

    def _update(self, r: slice, grads_flat: np.ndarray, lr: float, bc1: float, bc2: float) -> None:
        """The AdamW update of the range r of the buffer (guide, section "AdamW")."""
        b1, b2, dt = self.beta1, self.beta2, self.params.dtype.type
        g, m, v, buf, buf2, params = grads_flat[r], self.m[r], self.v[r], self._buf[r], self._buf2[r], self.params[r]
        m *= dt(b1)
        m += np.multiply(g, dt(1.0 - b1), out=buf)                    # m = b1 m + (1 - b1) g, no temporary
        np.multiply(g, g, out=buf)
        buf *= dt(1.0 - b2)
        v *= dt(b2)
        v += buf                                                      # v = b2 v + (1 - b2) g^2
        # buf = m_hat / (sqrt(v_hat) + eps) = (m / bc1) / (sqrt(v) / sqrt(bc2) + eps)
        np.sqrt(v, out=buf)
        buf *= dt(1.0 / np.sqrt(bc2))
        buf += dt(self.eps)
        np.divide(m, buf, out=buf)
        buf *= dt(1.0 / bc1)
        np.multiply(self.decay[r], params, out=buf2)                  # decoupled weight decay
        buf += buf2
        if self.lr_scale is not None:
            buf *= self.lr_scale[r]
        buf *= dt(lr)
        params -= buf

    def state_dict(self) -> dict:
        return {"m": self.m.copy(), "v": self.v.copy(), "t": self.t}

    def load_state_dict(self, state: dict) -> None:
        for k in ("m", "v"):
            if state[k].shape != self.m.shape:
                raise ValueError(f"optimizer state {k!r} has {state[k].shape[0]} values, the model {self.m.shape[0]}")
        self.m[...] = state["m"]
        self.v[...] = state["v"]
        self.t = int(state["t"])
