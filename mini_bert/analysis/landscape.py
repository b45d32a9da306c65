"""Learning rates and the loss landscape: the LR range test, LR sensitivity, layer-wise learning rates, and the
loss along filter-normalised random directions (Li et al. 2018).

Shapes: B batch, T tokens, D hidden, H heads, d = D / H, F FFN width, L layers, P parameters (flat buffer).

A "batch" for the loss-based tools is an MLM batch: a dict with input_ids (B, T), target_ids (B, T),
mask_positions (B, T) bool and optionally attention_mask / token_type_ids; or the tuple `mask_tokens` returns;
or a plain (B, T) array of clean ids, which is masked with a fixed seed.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..core.gradients import MiniBERTGradients
from ..core.parameters import ParameterStore
from ..training.optimizer import parameter_group
from .inspection import _group_order, _is_weight, _named_arrays, as_mlm_batch, clone_model, mlm_loss, mlm_loss_and_gradients

# ---------------------------------------------------------------------------------------------------------------
# Learning rates


def lr_range_test(loss_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]], params: np.ndarray,
                  lr_min: float = 1e-7, lr_max: float = 1.0, num_steps: int = 100, optimizer=None,
                  diverge_factor: float = 4.0, smoothing: float = 0.0) -> dict:
    """The LR range test (Smith 2017): train with a learning rate growing exponentially from lr_min to lr_max,
    one step per rate, and watch the loss.

    loss_and_grad(params) -> (loss, gradient); params: a flat array, updated in place (pass a copy).
    optimizer: None for plain SGD (params -= lr g), or an object with `.step(grad, lr)` bound to `params`.
    The sweep stops early once the loss exceeds diverge_factor x the best loss so far (or is not finite).
    smoothing: beta of an exponential moving average of the loss (0 = none; ~0.9 for noisy mini-batches).

    Returns lrs, losses, smoothed (up to where it stopped), lr_min_loss, lr_diverged (None if it never did),
    and suggested_lr: the rate where the smoothed loss falls fastest against log lr, searched only before its
    minimum: large enough to learn quickly, below the rates where training starts to blow up.
    """
    if not 0 < lr_min < lr_max:
        raise ValueError(f"need 0 < lr_min < lr_max; got {lr_min}, {lr_max}")
    if num_steps < 3:
        raise ValueError(f"num_steps must be at least 3; got {num_steps}")
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing must lie in [0, 1); got {smoothing}")
    lrs = lr_min * (lr_max / lr_min) ** (np.arange(num_steps) / (num_steps - 1))
    losses, smoothed = [], []
    avg, best, diverged = 0.0, math.inf, None
    for i, lr in enumerate(lrs):
        loss, grad = loss_and_grad(params)
        loss = float(loss)
        if not math.isfinite(loss):
            diverged = float(lr)
            break
        avg = smoothing * avg + (1 - smoothing) * loss
        s = avg / (1 - smoothing ** (i + 1))                             # bias-corrected EMA
        losses.append(loss)
        smoothed.append(s)
        if s > diverge_factor * best:
            diverged = float(lr)
            break
        best = min(best, s)
        if optimizer is None:
            params -= params.dtype.type(lr) * grad
        else:
            optimizer.step(grad, float(lr))
    n = len(losses)
    lrs_done, sm = lrs[:n], np.asarray(smoothed)
    i_min = int(np.argmin(sm)) if n else 0
    if i_min >= 1:
        slope = np.gradient(sm[:i_min + 1], np.log(lrs_done[:i_min + 1]))  # d loss / d log lr
        suggested = float(lrs_done[int(np.argmin(slope))])
    else:
        suggested = float(lrs_done[0]) if n else float(lr_min)
    return {"lrs": lrs_done, "losses": np.asarray(losses), "smoothed": sm,
            "lr_min_loss": float(lrs_done[i_min]) if n else math.nan, "lr_diverged": diverged,
            "suggested_lr": suggested}


def analyze_learning_rate_sensitivity(model, data_batch, lr_range=(1e-6, 1.0), num_steps: int = 60,
                                      optimizer: str = "adamw", diverge_factor: float = 4.0,
                                      smoothing: float = 0.0) -> dict:
    """LR range test of `model` on one batch (see `lr_range_test`), run on a copy: the model is not changed.

    optimizer: "adamw" (the trainer's AdamW, default settings) or "sgd". Steps are in eval mode on the same batch,
    so the loss curve is deterministic. Returns lr_range_test's dict plus "optimizer".
    """
    lr_min, lr_max = lr_range
    work = clone_model(model)
    batch = as_mlm_batch(data_batch, model.config.vocab_size)
    grads = MiniBERTGradients(work)

    def loss_and_grad(_params):
        loss, g, _ = mlm_loss_and_gradients(work, batch, grads)
        return loss, g.flat

    if optimizer == "adamw":
        from ..training.optimizer import AdamW, decay_mask
        opt = AdamW(work.store.flat, decay_mask(work.store), lr=lr_min)
    elif optimizer == "sgd":
        opt = None
    else:
        raise ValueError(f"optimizer must be 'adamw' or 'sgd'; got {optimizer!r}")
    result = lr_range_test(loss_and_grad, work.store.flat, lr_min, lr_max, num_steps, opt, diverge_factor, smoothing)
    result["optimizer"] = optimizer
    return result


def compute_layer_wise_learning_rates(gradients, learning_rates, params=None) -> dict:
    """How big a step each parameter group takes, and the rates that would equalise it.

    gradients: a MiniBERTGradients or dict name -> gradient. learning_rates: one base rate (float) or a dict
    group -> rate ("embeddings", "layer_0", ..., "head"). params: optional MiniBERT or dict name -> weights.
    Per group (weight matrices and embeddings only): lr, grad_norm, step_norm = lr * grad_norm (the size of an SGD
    step), and with params weight_norm, relative_step = step_norm / weight_norm and suggested_lr, the rate that
    would give this group the median relative step of all groups.
    Returns {"groups": [...], "per_group": {group: {...}}}.
    """
    grads = _named_arrays(gradients)
    weights = _named_arrays(params) if params is not None else None
    sq: dict[str, float] = {}
    wsq: dict[str, float] = {}
    for name, g in grads.items():
        if not _is_weight(name):
            continue
        group = parameter_group(name)
        sq[group] = sq.get(group, 0.0) + float(np.sum(np.square(g, dtype=np.float64)))
        if weights is not None:
            wsq[group] = wsq.get(group, 0.0) + float(np.sum(np.square(weights[name], dtype=np.float64)))
    groups = _group_order(sq)
    if isinstance(learning_rates, dict):
        missing = [g for g in groups if g not in learning_rates]
        if missing:
            raise ValueError(f"learning_rates lacks groups {missing}; give a rate for each of {groups} or one float")
        lr_of = {g: float(learning_rates[g]) for g in groups}
    else:
        lr_of = {g: float(learning_rates) for g in groups}
    per = {}
    for g in groups:
        gn = math.sqrt(sq[g])
        per[g] = {"lr": lr_of[g], "grad_norm": gn, "step_norm": lr_of[g] * gn}
        if weights is not None:
            wn = math.sqrt(wsq[g])
            per[g]["weight_norm"] = wn
            per[g]["relative_step"] = per[g]["step_norm"] / wn if wn > 0 else math.inf
    if weights is not None:
        rel = [per[g]["relative_step"] for g in groups if 0 < per[g]["relative_step"] < math.inf]
        target = float(np.median(rel)) if rel else math.nan
        for g in groups:
            r = per[g]["relative_step"]
            per[g]["suggested_lr"] = per[g]["lr"] * target / r if 0 < r < math.inf else math.nan
    return {"groups": groups, "per_group": per}


# ---------------------------------------------------------------------------------------------------------------
# Loss landscape


def filter_normalized_direction(model, rng: np.random.Generator, param_names=None,
                                include_1d: bool = False) -> np.ndarray:
    """A random direction in parameter space, scaled filter by filter like the weights (Li et al. 2018).

    For a weight (in, out) each output unit's column d[:, j] is rescaled to |W[:, j]|; for an embedding each token
    row; so a step of 1 along d changes every unit by about its own size, whatever the layer's scale. 1-D
    parameters (biases, LayerNorm) get 0 unless include_1d (Li et al. leave them out) or they are named in
    param_names. Returns a flat array aligned with model.store.flat.
    """
    d = ParameterStore(model.store.specs, model.dtype)
    names = list(model.params) if param_names is None else list(param_names)
    for name in names:
        if name not in model.params:
            raise ValueError(f"unknown parameter {name!r}; names look like W_Q_0, W1_1, E_token (see model.params)")
        w = model.params[name].astype(np.float64)
        if w.ndim == 1 and not include_1d and param_names is None:
            continue
        r = rng.normal(size=w.shape)
        if w.ndim == 2:
            axis = 1 if name.startswith("E_") else 0           # embedding rows, else (in, out) columns
            wn = np.linalg.norm(w, axis=axis, keepdims=True)
            rn = np.linalg.norm(r, axis=axis, keepdims=True)
            r *= wn / np.maximum(rn, 1e-12)
        else:
            r *= np.linalg.norm(w) / max(np.linalg.norm(r), 1e-12)
        d.views[name][...] = r
    return d.flat.copy()


def analyze_loss_landscape(model, data_batch, param_name: str | list[str] | None = None, directions: int = 1,
                           span: float = 1.0, resolution: int = 21, rng: np.random.Generator | None = None) -> dict:
    """The MLM loss on a line (directions=1) or plane (2) through the current weights theta:
    L(theta + a d1 [+ b d2]) for a, b in [-span, span], d filter-normalised random directions.

    param_name: perturb only this parameter (or list), e.g. "W_Q_0"; None perturbs every weight matrix and
    embedding. resolution: odd, so the grid holds the origin exactly: losses there equal the model's loss.
    The model's weights are restored afterwards. Returns "alphas" (R,), "betas" (R,) for 2-D, "losses" (R,) or
    (R, R) indexed [alpha, beta], "origin_loss", "param_names", "directions", "sharpness" (mean rise of the loss
    at the edge of the grid over the origin).
    """
    if directions not in (1, 2):
        raise ValueError(f"directions must be 1 (a curve) or 2 (a contour plane); got {directions}")
    if resolution < 3 or resolution % 2 == 0:
        raise ValueError(f"resolution must be an odd number >= 3 so that the grid contains the origin; "
                         f"got {resolution}")
    if span <= 0:
        raise ValueError(f"span must be positive; got {span}")
    rng = np.random.default_rng(0) if rng is None else rng
    names = [param_name] if isinstance(param_name, str) else param_name
    batch = as_mlm_batch(data_batch, model.config.vocab_size)
    dirs = [filter_normalized_direction(model, rng, names) for _ in range(directions)]
    k = resolution // 2
    alphas = span * np.arange(-k, k + 1) / k                       # exactly 0 in the middle
    base = model.store.flat.copy()
    origin = mlm_loss(model, batch)
    flat, dt = model.store.flat, model.dtype.type
    try:
        if directions == 1:
            losses = np.empty(resolution)
            for i, a in enumerate(alphas):
                np.add(base, dt(a) * dirs[0], out=flat)
                losses[i] = mlm_loss(model, batch)
        else:
            losses = np.empty((resolution, resolution))
            for i, a in enumerate(alphas):
                for j, b in enumerate(alphas):
                    np.add(base, dt(a) * dirs[0] + dt(b) * dirs[1], out=flat)
                    losses[i, j] = mlm_loss(model, batch)
    finally:
        flat[...] = base
    if directions == 1:
        edge = np.array([losses[0], losses[-1]])
    else:
        edge = np.concatenate([losses[0], losses[-1], losses[1:-1, 0], losses[1:-1, -1]])
    out = {"alphas": alphas, "losses": losses, "origin_loss": origin, "directions": directions,
           "param_names": names if names is not None else "all weight matrices and embeddings",
           "sharpness": float(np.mean(edge) - origin), "span": span}
    if directions == 2:
        out["betas"] = alphas.copy()
    return out
