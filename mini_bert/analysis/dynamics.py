"""Analysis: look inside one computation, and watch training for trouble.

Three parts:
  * `MathematicalAnalyzer(model)`: attention, LayerNorm and the FFN taken apart step by step, with statistics.
  * training dynamics (functions of a model and a batch): the LR range test, layer-wise learning rates, the loss
    landscape along filter-normalised random directions, mode collapse, catastrophic forgetting, weight evolution
    across checkpoints, gradient magnitudes by layer.
  * `detect_training_issues(history)` turns a log of metrics into plain-language `Issue`s with suggested fixes;
    `TrainingMonitor(every)` is what the trainer calls each step to produce that log cheaply.

Shapes: B batch, T tokens, D hidden, H heads, d = D / H, F FFN width, L layers, P parameters (flat buffer).

Parameter groups: every parameter belongs to "embeddings" (E_token, E_pos, E_type, the embedding LayerNorm),
"layer_{l}" (encoder layer l) or "head" (everything above the encoder: the final LayerNorm of a pre-LN model,
the MLM head, the pooler and the classifier). Per-group *gradient norms* and *update ratios* are measured over the
weight matrices and embeddings only: a layer whose matrices receive no gradient is not learning even when its
biases and LayerNorm gains still move.

A "batch" for the loss-based tools is an MLM batch: a dict with input_ids (B, T), target_ids (B, T),
mask_positions (B, T) bool and optionally attention_mask / token_type_ids; or the tuple `mask_tokens` returns;
or a plain (B, T) array of clean ids, which is masked with a fixed seed.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from ..core.attention import mask_bias
from ..core.gradients import MiniBERTGradients, mlm_cross_entropy
from ..core.math_ops import ACTIVATION_FORWARD, softmax_forward
from ..core.parameters import ParameterStore
from ..training.optimizer import parameter_group
from ..evaluation.metrics import (compute_attention_entropy, compute_effective_rank, compute_gradient_norm,
                      mean_pairwise_cosine, token_rows)

# ---------------------------------------------------------------------------------------------------------------
# Shared helpers


def _stats(a) -> dict:
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0:
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan}
    return {"mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()), "max": float(a.max())}


def _group_order(groups) -> list[str]:
    """embeddings, layer_0, layer_1, ..., head (others last, alphabetically)."""
    def key(g):
        if g == "embeddings":
            return (0, 0, g)
        if g.startswith("layer_") and g[6:].isdigit():
            return (1, int(g[6:]), g)
        return (2 if g == "head" else 3, 0, g)
    return sorted(set(groups), key=key)


def _is_weight(name: str) -> bool:
    """Weight matrices (W_*) and embeddings (E_*): the parameters that carry what a layer computes."""
    return name.startswith(("W", "E_"))


def _named_arrays(x) -> dict[str, np.ndarray]:
    """A MiniBERTGradients, a MiniBERT or a dict -> dict name -> array (public names)."""
    if isinstance(x, MiniBERTGradients):
        return x.gradients
    if hasattr(x, "params") and isinstance(x.params, dict):
        return x.params
    if isinstance(x, dict):
        return x
    raise ValueError(f"expected a dict of named arrays, a MiniBERTGradients or a MiniBERT; got {type(x).__name__}")


def _group_block_slices(store: ParameterStore) -> dict[str, list[slice]]:
    """group -> slices of `store.flat` holding its weight matrices and embeddings."""
    out: dict[str, list[slice]] = {}
    for spec in store.specs:
        if spec.kind in ("matrix", "embedding"):
            out.setdefault(parameter_group(spec.name), []).append(store.slices[spec.name])
    return {g: out[g] for g in _group_order(out)}


def _group_norms(flat: np.ndarray, group_slices: dict[str, list[slice]]) -> dict[str, float]:
    return {g: math.sqrt(sum(float(np.dot(flat[s], flat[s])) for s in slices)) for g, slices in group_slices.items()}


def clone_model(model):
    """An independent copy of a MiniBERT (same config and weights, its own buffer and dropout generator)."""
    from ..core.model import MiniBERT

    copy = MiniBERT(model.config, seed=0)
    copy.store.flat[...] = model.store.flat
    return copy


def as_mlm_batch(data_batch, vocab_size: int | None = None, rng: np.random.Generator | None = None) -> dict:
    """Normalise a batch (dict, `mask_tokens` tuple, or clean ids (B, T)) to a dict with input_ids, target_ids,
    mask_positions, attention_mask (or None) and token_type_ids (or None)."""
    if isinstance(data_batch, dict):
        missing = {"input_ids", "target_ids", "mask_positions"} - set(data_batch)
        if missing:
            raise ValueError(f"the batch dict lacks {sorted(missing)}; it needs input_ids, target_ids and "
                             "mask_positions (see mini_bert.data.masking.mask_tokens)")
        batch = dict(data_batch)
    elif isinstance(data_batch, tuple):
        if len(data_batch) not in (3, 4):
            raise ValueError("a batch tuple is (input_ids, target_ids, mask_positions[, attention_mask])")
        batch = dict(zip(("input_ids", "target_ids", "mask_positions", "attention_mask"), data_batch))
    else:
        ids = np.asarray(data_batch)
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise ValueError(f"a batch is a dict, a (input_ids, target_ids, mask_positions) tuple or clean ids of "
                             f"shape (batch, seq_len); got {type(data_batch).__name__} {getattr(ids, 'shape', '')}")
        if vocab_size is None:
            raise ValueError("masking clean ids needs the vocabulary size")
        from ..data.masking import mask_tokens
        inp, tgt, pos = mask_tokens(ids, vocab_size, rng=np.random.default_rng(0) if rng is None else rng)
        batch = {"input_ids": inp, "target_ids": tgt, "mask_positions": pos}
    batch.setdefault("attention_mask", None)
    batch.setdefault("token_type_ids", None)
    batch["mask_positions"] = np.asarray(batch["mask_positions"], dtype=bool)
    if not batch["mask_positions"].any():
        raise ValueError("the batch has no masked positions, so there is no MLM loss to measure")
    return batch


def mlm_loss(model, batch: dict) -> float:
    """The deterministic (eval-mode, no dropout) MLM loss of `model` on a normalised batch."""
    logits, _ = model.forward(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                              training=False, masked_positions=batch["mask_positions"])
    loss, _ = mlm_cross_entropy(logits, batch["target_ids"], batch["mask_positions"])
    return float(loss)


def mlm_loss_and_gradients(model, batch: dict, grads: MiniBERTGradients | None = None):
    """Eval-mode MLM loss and its gradients. Returns (loss, grads, cache); grads is zeroed and refilled."""
    grads = MiniBERTGradients(model) if grads is None else grads
    logits, cache = model.forward(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                                  training=False, masked_positions=batch["mask_positions"])
    loss, dlogits = mlm_cross_entropy(logits, batch["target_ids"], batch["mask_positions"])
    grads.zero_gradients()
    grads.backward_from_logits(dlogits, cache)
    return float(loss), grads, cache


def dead_unit_fraction(h, attention_mask=None) -> float:
    """Fraction of FFN units whose pre-activation h (B, T, F) is <= 0 at every real token.

    Such a ReLU unit outputs 0 and passes no gradient (ReLU'(h) = 0) for the whole batch: if it stays so for all
    data it can never recover ("dead ReLU"). For GELU the same units pass only a small gradient.
    """
    rows = token_rows(h, attention_mask) if np.ndim(h) == 3 else np.asarray(h, dtype=np.float64)
    return float(np.mean(~(rows > 0).any(axis=0)))


# ---------------------------------------------------------------------------------------------------------------
# Component analysis


class MathematicalAnalyzer:
    """Step-by-step views of the computations inside `model` (a MiniBERT)."""

    def __init__(self, model):
        self.model = model

    def analyze_attention_computation(self, Q, K, V, attention_mask=None) -> dict:
        """Scaled dot-product attention taken apart: A = softmax(Q K^T / sqrt d + mask), context = A V.

        Q, K, V: (B, H, T, d) (as in `cache["layers"][l]["attn"]`); attention_mask (B, T) of 1 = real token.
        Returns the arrays of every step ("scores" = Q K^T, "scaled_scores", "masked_scores", "weights",
        "context" (B, H, T, d)), "stats" (mean/std/min/max of each), "entropy" per head (H,), "scale",
        and "explanation": lines that read the numbers.
        """
        Q, K, V = (np.asarray(a) for a in (Q, K, V))
        if Q.ndim != 4 or Q.shape != K.shape or K.shape != V.shape:
            raise ValueError(f"Q, K, V must share a (batch, heads, T, head_dim) shape; got {Q.shape}, {K.shape}, "
                             f"{V.shape}")
        B, H, T, d = Q.shape
        scale = 1.0 / math.sqrt(d)
        scores = Q @ K.transpose(0, 1, 3, 2)                               # (B, H, T, T)
        scaled = scores * Q.dtype.type(scale)
        if attention_mask is not None:
            attention_mask = np.asarray(attention_mask)
            if attention_mask.shape != (B, T):
                raise ValueError(f"attention_mask has shape {attention_mask.shape}, expected {(B, T)}")
            masked = scaled + mask_bias(attention_mask, Q.dtype)
        else:
            masked = scaled
        weights = softmax_forward(masked)                                  # rows sum to 1
        context = weights @ V                                              # (B, H, T, d)
        real = np.ones((B, T), bool) if attention_mask is None else attention_mask.astype(bool)
        key_mask = real[:, None, None, :]
        stats = {
            "scores": _stats(scores),
            "scaled_scores": _stats(scaled),
            # Padded keys hold a huge negative bias: describe the real keys only.
            "masked_scores": _stats(masked[np.broadcast_to(key_mask, masked.shape)]),
            "weights": _stats(weights),
            "row_max_weight": _stats(weights.max(axis=-1)[np.broadcast_to(real[:, None, :], (B, H, T))]),
            "context": _stats(context),
        }
        entropy = compute_attention_entropy(weights, attention_mask)
        n_keys = real.sum(axis=1).mean()
        explanation = [
            f"Q K^T has std {stats['scores']['std']:.4g}; dividing by sqrt(d) = {math.sqrt(d):.3g} brings it to "
            f"{stats['scaled_scores']['std']:.4g}. Without the scaling, dot products of d-dim vectors grow like "
            "sqrt(d) and the softmax saturates (near one-hot rows, vanishing gradients).",
            f"Mean entropy per head {np.array2string(entropy, precision=3)} nats; a uniform row over "
            f"{n_keys:.0f} keys would have log {n_keys:.0f} = {math.log(max(n_keys, 1)):.3f}, a one-hot row 0.",
            f"The largest weight in a row averages {stats['row_max_weight']['mean']:.3f} "
            f"(1/T = {1 / max(n_keys, 1):.3f} would be uniform).",
        ]
        if attention_mask is not None:
            explanation.append("Padded keys get a large negative bias, so their weights are ~0: "
                               f"max weight on padding = {float((weights * ~key_mask).max()):.2e}.")
        return {"scores": scores, "scaled_scores": scaled, "masked_scores": masked, "weights": weights,
                "context": context, "stats": stats, "entropy": entropy, "scale": scale, "explanation": explanation}

    def analyze_layer_norm_statistics(self, x, gamma, beta, eps: float | None = None, attention_mask=None) -> dict:
        """What LayerNorm does to the distribution of x (..., D): y = gamma * (x - mean) / sqrt(var + eps) + beta.

        For each stage ("input", "normalized" = xhat, "output" = y) gives the overall mean/std/min/max and the
        average over tokens of the per-token mean and std across features (token_mean_avg, token_std_avg):
        after normalisation every token has mean 0 and std 1; gamma and beta then set a learned scale and shift
        per feature. Also "gamma" and "beta" statistics and "std_ratio" = output / input token std.
        """
        eps = self.model.config.layer_norm_eps if eps is None else eps
        x = np.asarray(x, dtype=np.float64)
        gamma, beta = np.asarray(gamma, np.float64), np.asarray(beta, np.float64)
        if gamma.shape != (x.shape[-1],) or beta.shape != (x.shape[-1],):
            raise ValueError(f"gamma and beta must have shape ({x.shape[-1]},) to match x's last axis; got "
                             f"{gamma.shape} and {beta.shape}")
        mu = x.mean(axis=-1, keepdims=True)
        xhat = (x - mu) / np.sqrt(x.var(axis=-1, keepdims=True) + eps)
        y = xhat * gamma + beta
        out = {}
        for name, a in (("input", x), ("normalized", xhat), ("output", y)):
            rows = token_rows(a, attention_mask) if a.ndim == 3 else a.reshape(-1, a.shape[-1])
            out[name] = {**_stats(rows), "token_mean_avg": float(rows.mean(axis=1).mean()),
                         "token_std_avg": float(rows.std(axis=1).mean())}
        out["gamma"], out["beta"] = _stats(gamma), _stats(beta)
        out["std_ratio"] = out["output"]["token_std_avg"] / max(out["input"]["token_std_avg"], 1e-300)
        return out

    def analyze_ffn_activation_patterns(self, x, layer: int, attention_mask=None) -> dict:
        """Which FFN units of `layer` fire on input x (B, T, D): h = x W1 + b1 (B, T, F), a = act(h).

        A unit is active on a token when h > 0. Returns "active_fraction_per_neuron" (F,), "sparsity_per_neuron"
        (F,) = 1 - active fraction, "mean_sparsity", "dead_fraction" and "dead_units" (never active on any real
        token: a dead ReLU gets no gradient), "pre_activation" and "post_activation" statistics.
        """
        cfg = self.model.config
        if not 0 <= layer < cfg.num_layers:
            raise ValueError(f"layer must lie in [0, {cfg.num_layers - 1}]; got {layer}")
        x = np.asarray(x)
        if x.shape[-1] != cfg.hidden_size:
            raise ValueError(f"x's last axis must be hidden_size={cfg.hidden_size}; got shape {x.shape}")
        P = self.model.params
        h = x @ P[f"W1_{layer}"] + P[f"b1_{layer}"]                       # (B, T, F)
        a, _ = ACTIVATION_FORWARD[cfg.activation](h)
        h_rows = token_rows(h, attention_mask) if h.ndim == 3 else h.reshape(-1, h.shape[-1]).astype(np.float64)
        a_rows = token_rows(a, attention_mask) if a.ndim == 3 else a.reshape(-1, a.shape[-1]).astype(np.float64)
        active = (h_rows > 0).mean(axis=0)                                # (F,)
        dead = np.flatnonzero(active == 0)
        return {
            "activation": cfg.activation,
            "active_fraction_per_neuron": active,
            "sparsity_per_neuron": 1.0 - active,
            "mean_sparsity": float(1.0 - active.mean()),
            "dead_fraction": float(dead.size / active.size),
            "dead_units": dead,
            "pre_activation": _stats(h_rows),
            "post_activation": _stats(a_rows),
        }


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


# ---------------------------------------------------------------------------------------------------------------
# Representations over time, forgetting, weights and gradients


def detect_mode_collapse(hidden_states_history, attention_mask=None, cosine_threshold: float = 0.9,
                         rank_drop: float = 0.25) -> dict:
    """Are the representations becoming too similar? hidden_states_history: a list of (B, T, D) (or (N, D))
    snapshots of the same tokens, e.g. the last hidden state at successive checkpoints.

    For each snapshot: mean_cosine between distinct tokens (1 = all tokens point the same way) and
    effective_rank of the centred token matrix (how many directions they spread over). Collapse: the last mean
    cosine exceeds cosine_threshold, or the effective rank fell below rank_drop x its first value.
    Returns {"mean_cosine": [...], "effective_rank": [...], "collapsed": bool, "explanation": str}.
    """
    if len(hidden_states_history) == 0:
        raise ValueError("hidden_states_history is empty; pass a list of hidden-state snapshots")
    cos, rank = [], []
    for h in hidden_states_history:
        X = token_rows(h, attention_mask)
        cos.append(mean_pairwise_cosine(X, 4096, np.random.default_rng(0)))
        rank.append(compute_effective_rank(X - X.mean(axis=0)))
    reasons = []
    if cos[-1] > cosine_threshold:
        reasons.append(f"the mean cosine between different tokens is {cos[-1]:.3f} (> {cosine_threshold}): "
                       "the tokens' vectors nearly all point the same way")
    if rank[0] > 0 and rank[-1] < rank_drop * rank[0]:
        reasons.append(f"the effective rank fell from {rank[0]:.2f} to {rank[-1]:.2f}: the tokens now spread over "
                       "far fewer directions")
    collapsed = bool(reasons)
    explanation = ("Mode collapse: " + "; ".join(reasons) + ". The model is losing the ability to tell tokens "
                   "apart; check the learning rate, the loss (is it stuck at the unigram entropy?) and the masking."
                   if collapsed else "No collapse: token representations stay distinct.")
    return {"mean_cosine": cos, "effective_rank": rank, "collapsed": collapsed, "explanation": explanation}


def measure_catastrophic_forgetting(model, old_tasks: dict, new_tasks: dict, train: Callable | None = None) -> dict:
    """How much old skill is lost while learning new tasks.

    old_tasks, new_tasks: dicts name -> metric(model) -> float, higher is better (e.g. MLM accuracy on the
    pre-training data; SST-2 accuracy). Either model is a MiniBERT and train(model) fine-tunes it in place
    between the two evaluations, or model is a pair (model_before, model_after) already trained.
    Returns {"old": {name: {before, after, change}}, "new": {...}, "forgetting": mean drop on the old tasks,
    "relative_forgetting": the same relative to before, "gain": mean rise on the new tasks}.
    """
    if isinstance(model, tuple):
        if len(model) != 2 or train is not None:
            raise ValueError("pass either (model_before, model_after) or a model and train=callable, not both")
        before_model, after_model = model
    else:
        if train is None:
            raise ValueError("give train=callable(model) that fine-tunes the model on the new tasks, or pass "
                             "(model_before, model_after)")
        before_model = after_model = model
    before = {n: float(f(before_model)) for n, f in {**old_tasks, **new_tasks}.items()}
    if train is not None:
        train(model)
    after = {n: float(f(after_model)) for n, f in {**old_tasks, **new_tasks}.items()}

    def table(tasks):
        return {n: {"before": before[n], "after": after[n], "change": after[n] - before[n]} for n in tasks}

    old, new = table(old_tasks), table(new_tasks)
    drops = [-v["change"] for v in old.values()]
    rel = [-v["change"] / abs(v["before"]) for v in old.values() if v["before"] != 0]
    return {"old": old, "new": new,
            "forgetting": float(np.mean(drops)) if drops else 0.0,
            "relative_forgetting": float(np.mean(rel)) if rel else 0.0,
            "gain": float(np.mean([v["change"] for v in new.values()])) if new else 0.0}


def analyze_weight_evolution(checkpoint_states: list[dict], steps: list[int] | None = None) -> dict:
    """How the weights moved across checkpoints (a list of state dicts name -> array, oldest first; the first
    serves as the reference "init").

    Per parameter and per group (weight matrices and embeddings): "norm" at each checkpoint,
    "distance_from_init" |theta_t - theta_0|, "relative_distance" = distance / |theta_0|, and
    "relative_update" |theta_t - theta_{t-1}| / |theta_{t-1}| for t >= 1 (one value fewer, aligned with steps[1:]).
    Returns {"steps", "parameters": {name: {...}}, "groups": {group: {...}}}.
    """
    if len(checkpoint_states) < 1:
        raise ValueError("checkpoint_states is empty; pass at least one state dict")
    steps = list(range(len(checkpoint_states))) if steps is None else [int(s) for s in steps]
    if len(steps) != len(checkpoint_states):
        raise ValueError(f"{len(steps)} steps for {len(checkpoint_states)} checkpoints")
    names = [n for n in checkpoint_states[0]]
    for i, state in enumerate(checkpoint_states[1:], 1):
        if set(state) != set(names):
            raise ValueError(f"checkpoint {i} holds different tensors from the first: the configs differ")
    first = {n: np.asarray(checkpoint_states[0][n], dtype=np.float64) for n in names}
    params: dict[str, dict] = {}
    gsq: dict[str, dict[str, np.ndarray]] = {}
    n_ckpt = len(checkpoint_states)
    prev = first
    norm_sq = {n: np.zeros(n_ckpt) for n in names}
    dist_sq = {n: np.zeros(n_ckpt) for n in names}
    upd_sq = {n: np.zeros(n_ckpt - 1) for n in names}
    prev_sq = {n: np.zeros(n_ckpt - 1) for n in names}
    for t, state in enumerate(checkpoint_states):
        cur = {n: np.asarray(state[n], dtype=np.float64) for n in names}
        for n in names:
            norm_sq[n][t] = np.sum(cur[n] ** 2)
            dist_sq[n][t] = np.sum((cur[n] - first[n]) ** 2)
            if t > 0:
                upd_sq[n][t - 1] = np.sum((cur[n] - prev[n]) ** 2)
                prev_sq[n][t - 1] = np.sum(prev[n] ** 2)
        prev = cur

    def summarise(nsq, dsq, usq, psq):
        norm0 = math.sqrt(nsq[0])
        return {"norm": np.sqrt(nsq), "distance_from_init": np.sqrt(dsq),
                "relative_distance": np.sqrt(dsq) / norm0 if norm0 > 0 else np.full(len(dsq), math.nan),
                "relative_update": np.sqrt(usq) / np.where(psq > 0, np.sqrt(psq), math.nan)}

    for n in names:
        params[n] = summarise(norm_sq[n], dist_sq[n], upd_sq[n], prev_sq[n])
        if _is_weight(n):
            acc = gsq.setdefault(parameter_group(n), {"n": 0, "d": 0, "u": 0, "p": 0})
            acc["n"] = acc["n"] + norm_sq[n]
            acc["d"] = acc["d"] + dist_sq[n]
            acc["u"] = acc["u"] + upd_sq[n]
            acc["p"] = acc["p"] + prev_sq[n]
    groups = {g: summarise(gsq[g]["n"], gsq[g]["d"], gsq[g]["u"], gsq[g]["p"]) for g in _group_order(gsq)}
    return {"steps": steps, "parameters": params, "groups": groups}


def analyze_gradient_magnitudes_by_layer(gradients, params=None, vanishing_ratio: float = 1e-3,
                                         exploding_ratio: float = 1e3) -> dict:
    """Gradient norms from the embeddings up to the head, to spot vanishing or exploding gradients.

    gradients: a MiniBERTGradients or dict name -> gradient; params (optional): a MiniBERT or dict of weights.
    Returns "groups" (embeddings, layer_0, ..., head), "grad_norm" per group (weight matrices and embeddings),
    "grad_norm_all" per group (every parameter), "parameters" name -> norm, with params "weight_norm" and
    "grad_to_weight" per group, and "vanishing" / "exploding": groups whose norm is below vanishing_ratio or above
    exploding_ratio x the median over groups.
    """
    grads = _named_arrays(gradients)
    weights = _named_arrays(params) if params is not None else None
    per_param = {n: float(np.linalg.norm(np.asarray(g, dtype=np.float64))) for n, g in grads.items()}
    sq_w: dict[str, float] = {}
    sq_all: dict[str, float] = {}
    wsq: dict[str, float] = {}
    for n, v in per_param.items():
        g = parameter_group(n)
        sq_all[g] = sq_all.get(g, 0.0) + v * v
        if _is_weight(n):
            sq_w[g] = sq_w.get(g, 0.0) + v * v
            if weights is not None:
                wsq[g] = wsq.get(g, 0.0) + float(np.sum(np.square(weights[n], dtype=np.float64)))
    groups = _group_order(sq_all)
    grad_norm = {g: math.sqrt(sq_w.get(g, 0.0)) for g in groups}
    med = float(np.median(list(grad_norm.values())))
    out = {
        "groups": groups,
        "grad_norm": grad_norm,
        "grad_norm_all": {g: math.sqrt(sq_all[g]) for g in groups},
        "parameters": per_param,
        "median": med,
        "vanishing": [g for g in groups if med > 0 and grad_norm[g] < vanishing_ratio * med],
        "exploding": [g for g in groups if med > 0 and grad_norm[g] > exploding_ratio * med],
    }
    if weights is not None:
        out["weight_norm"] = {g: math.sqrt(wsq.get(g, 0.0)) for g in groups}
        out["grad_to_weight"] = {g: grad_norm[g] / out["weight_norm"][g] if out["weight_norm"][g] > 0 else math.inf
                                 for g in groups}
    return out


# ---------------------------------------------------------------------------------------------------------------
# Training issues


@dataclass(frozen=True)
class Issue:
    """One problem found in a training log: what (kind), how bad, where, why it matters, and what to try."""

    kind: str            # exploding_gradients, vanishing_gradients, dead_relu, loss_spike, divergence, loss_plateau,
    #                      lr_too_high, lr_too_low, attention_collapse
    severity: str        # "warning" or "error"
    step: int | None     # first logged step where it shows
    explanation: str     # plain language: what is happening and why it matters
    suggestion: str      # what to try
    evidence: dict = field(default_factory=dict)

    def __str__(self) -> str:
        where = f" (from step {self.step})" if self.step is not None else ""
        return f"[{self.severity}] {self.kind}{where}: {self.explanation} Try: {self.suggestion}"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class IssueThresholds:
    """The limits `detect_training_issues` applies. Defaults are loose: a healthy run should raise nothing."""

    spike_ratio: float = 1.5           # loss > spike_ratio x median of the previous `window` losses ...
    spike_min_rise: float = 0.5        # ... and at least this much above it (nats)
    window: int = 10
    divergence_ratio: float = 1.1      # mean loss over the last tenth > this x mean over the first tenth
    rebound_ratio: float = 1.15        # moving-average loss at the end > this x its minimum ...
    rebound_min_rise: float = 0.2      # ... and at least this much above it (nats)
    explode_ratio: float = 10.0        # grad norm > this x median of the earlier grad norms
    vanish_ratio: float = 1e-3         # a group's grad norm < this x the median over groups
    dead_fraction: float = 0.5         # more than this fraction of a layer's FFN units never fire
    update_ratio_high: float = 0.2     # |delta W| / |W| per step, median over the run's second half
    update_ratio_low: float = 1e-5
    plateau_window: int = 20           # compare the mean loss of the last two windows of this many logged losses
    plateau_tol: float = 0.005         # relative improvement below this = plateau
    collapse_entropy: float = 0.05     # a layer's mean attention entropy (nats) below this = collapse


def _series(history, key):
    """(steps, values) of the entries that log `key`."""
    pts = [(e.get("step", i), e[key]) for i, e in enumerate(history) if key in e and e[key] is not None]
    if not pts:
        return np.array([], dtype=np.int64), np.array([])
    s, v = zip(*pts)
    return np.asarray(s), np.asarray(v, dtype=np.float64)


def _prefixed_keys(history, prefix):
    keys = {k for e in history for k in e if k.startswith(prefix)}
    return _group_order(k[len(prefix):] for k in keys)


@dataclass
class _Log:
    """What the rules read: the logged series, the thresholds, and what earlier rules found."""

    history: list[dict]
    th: IssueThresholds
    steps: np.ndarray          # steps with a loss
    loss: np.ndarray
    fsteps: np.ndarray         # ... with a finite loss
    floss: np.ndarray
    gsteps: np.ndarray         # steps with a global gradient norm
    gnorm: np.ndarray
    lr: np.ndarray
    issues: list = field(default_factory=list)
    diverged: bool = False
    spikes: list = field(default_factory=list)
    explode: list = field(default_factory=list)
    died: dict = field(default_factory=dict)

    def found(self, *kinds) -> bool:
        return any(i.kind in kinds for i in self.issues)


def _rule_non_finite(log: _Log) -> None:
    """The loss or the gradient norm became NaN/inf: the run has blown up."""
    bad = [int(s) for s, v in zip(log.steps, log.loss) if not math.isfinite(v)]
    bad += [int(s) for s, v in zip(log.gsteps, log.gnorm) if not math.isfinite(v)]
    if bad:
        log.diverged = True
        log.issues.append(Issue(
            "divergence", "error", min(bad),
            "The loss or the gradient norm became NaN/inf: updates grew so large that the numbers overflowed, and "
            "nothing after this point is meaningful.",
            "Lower the learning rate 3-10x, use warmup, and clip gradients (training.grad_clip=1.0).",
            {"steps": sorted(set(bad))[:20]}))


def _rule_loss_spikes(log: _Log) -> None:
    """A jump well above the recent typical loss."""
    th, floss, fsteps = log.th, log.floss, log.fsteps
    for i in range(5, len(floss)):
        ref = float(np.median(floss[max(0, i - th.window):i]))
        if floss[i] > th.spike_ratio * ref and floss[i] - ref > th.spike_min_rise:
            log.spikes.append((int(fsteps[i]), float(floss[i]), ref))
    if log.spikes:
        first = log.spikes[0]
        log.issues.append(Issue(
            "loss_spike", "warning", first[0],
            f"The loss jumped {len(log.spikes)} time(s) to well above its recent level (e.g. {first[1]:.3f} against "
            f"{first[2]:.3f} just before). Each spike undoes part of what was learned; it usually means steps "
            "that are too large for the local curvature.",
            "Lower training.lr, raise training.warmup_ratio, or set training.grad_clip=1.0; if spikes follow "
            "particular batches, inspect those batches.",
            {"spikes": [{"step": s, "loss": v, "median_before": r} for s, v, r in log.spikes[:20]]}))


def _rule_rising_loss(log: _Log) -> None:
    """Divergence without NaN: the loss ends higher than it began."""
    floss, fsteps = log.floss, log.fsteps
    if len(floss) < 10 or log.diverged:
        return
    k = max(3, len(floss) // 10)
    start, end = float(floss[:k].mean()), float(floss[-k:].mean())
    if end > log.th.divergence_ratio * start:
        log.diverged = True
        log.issues.append(Issue(
            "divergence", "error", int(fsteps[-k]),
            f"The loss went up over the run (mean {start:.3f} at the start, {end:.3f} at the end): training is "
            "moving away from a solution.",
            "Lower training.lr (3-10x) and check the gradients with a gradient check.",
            {"start_loss": start, "end_loss": end}))


def _rule_rebound(log: _Log) -> None:
    """The loss came down, then climbed back well above its best level (on a moving average, to see through
    batch-to-batch noise): the steps have become too large."""
    th, floss, fsteps = log.th, log.floss, log.fsteps
    k = max(5, len(floss) // 10)
    if len(floss) < 4 * k or log.diverged:
        return
    ma = np.convolve(floss, np.ones(k) / k, mode="valid")
    i_min = int(np.argmin(ma))
    best, end = float(ma[i_min]), float(ma[-1])
    if i_min < len(ma) - k and end > th.rebound_ratio * best and end - best > th.rebound_min_rise:
        log.diverged = True
        log.issues.append(Issue(
            "divergence", "error", int(fsteps[i_min + k - 1]),
            f"The loss came down to {best:.3f} (moving average over {k} logged steps) and then climbed back to "
            f"{end:.3f}: training has become unstable and is undoing what it learned.",
            "Lower training.lr (3-10x), or decay it sooner; set training.grad_clip=1.0.",
            {"best_moving_average": best, "end_moving_average": end, "window": k}))


def _rule_exploding_gradients(log: _Log) -> None:
    """A global gradient norm far above its own history."""
    gnorm, fin = log.gnorm, np.isfinite(log.gnorm)
    for i in range(3, len(gnorm)):
        if fin[i] and fin[:i].any():
            ref = float(np.median(gnorm[:i][fin[:i]]))
            if ref > 0 and gnorm[i] > log.th.explode_ratio * ref:
                log.explode.append((int(log.gsteps[i]), float(gnorm[i]), ref))
    if log.explode:
        step, g, ref = log.explode[0]
        log.issues.append(Issue(
            "exploding_gradients", "error", step,
            f"The gradient norm jumped to {g:.3g}, over {log.th.explode_ratio:g}x its usual {ref:.3g}. Such a step "
            "moves the weights far in one go and can wreck the model.",
            "Clip the global gradient norm (training.grad_clip=1.0), lower training.lr, and check for bad inputs.",
            {"events": [{"step": s, "grad_norm": g, "median_before": r} for s, g, r in log.explode[:20]]}))


def _rule_vanishing_gradients(log: _Log) -> None:
    """A parameter group whose gradient is tiny against the other groups at the same step, most of the time."""
    groups = _prefixed_keys(log.history, "grad_norm/")
    if not groups:
        return
    low: dict[str, list[int]] = {g: [] for g in groups}
    n_obs = 0
    for e in log.history:
        vals = {g: e.get(f"grad_norm/{g}") for g in groups}
        if any(v is None for v in vals.values()):
            continue
        n_obs += 1
        med = float(np.median(list(vals.values())))
        for g, v in vals.items():
            if med > 0 and v < log.th.vanish_ratio * med:
                low[g].append(int(e.get("step", 0)))
    stuck = {g: s for g, s in low.items() if n_obs and len(s) >= max(1, n_obs / 2)}
    if stuck:
        log.issues.append(Issue(
            "vanishing_gradients", "error", min(s[0] for s in stuck.values()),
            f"The weight matrices of {', '.join(stuck)} get almost no gradient (below {log.th.vanish_ratio:g}x the "
            "median of the other groups) in most logged steps, so they are not learning. A layer whose weights "
            "are all zero sits at a saddle: every product through it is 0, and so is its gradient.",
            "Check the initialisation of that layer (nothing zeroed or tiny; model.initializer_range), the residual "
            "connections, and for a post-LN model raise training.warmup_ratio or set model.norm_position=pre.",
            {"groups": {g: s[:20] for g, s in stuck.items()}, "observations": n_obs}))


def _rule_dead_units(log: _Log) -> None:
    """FFN units that never fire."""
    dead_layers = {}
    for layer in _prefixed_keys(log.history, "dead_units/"):
        _, v = _series(log.history, f"dead_units/{layer}")
        recent = float(np.median(v[-3:])) if v.size else 0.0
        if recent > log.th.dead_fraction:
            dead_layers[layer] = recent
            if v[0] < 0.5 * log.th.dead_fraction:      # alive at the start: killed by the updates themselves
                log.died[layer] = (float(v[0]), recent)
    if dead_layers:
        first = min(int(_series(log.history, f"dead_units/{g}")[0][-1]) for g in dead_layers)
        log.issues.append(Issue(
            "dead_relu", "warning", first,
            "In " + ", ".join(f"{g} {f:.0%}" for g, f in dead_layers.items()) + " of the FFN units never fire "
            "(pre-activation <= 0 on every token). A dead ReLU outputs 0 and its gradient is 0, so it cannot "
            "recover: that capacity is wasted.",
            "Lower training.lr or raise training.warmup_ratio (a large step can push a unit's bias far negative), "
            "or set model.activation=gelu.",
            {"dead_fraction": dead_layers}))


def _rule_learning_rate(log: _Log) -> None:
    """The update-to-weight ratio |delta W| / |W| per step, with the other symptoms of too large a step."""
    th, history = log.th, log.history
    ratio_keys = ["update_ratio"] + [f"update_ratio/{g}" for g in _prefixed_keys(history, "update_ratio/")]
    med_ratio = {}
    for key in ratio_keys:
        _, v = _series(history, key)
        v = v[np.isfinite(v)]
        if v.size:
            med_ratio[key] = float(np.median(v[len(v) // 2:]))
    high = {k: r for k, r in med_ratio.items() if r > th.update_ratio_high}
    first = int(log.steps[0]) if log.steps.size else None
    if high or log.spikes or log.diverged or log.explode or log.died:
        reasons = []
        if high:
            reasons.append("each step changes the weights by " + ", ".join(
                f"{r:.2g} of their size ({k})" for k, r in list(high.items())[:4]) + f", above ~{th.update_ratio_high:g}")
        reasons += [why for flag, why in ((log.spikes, "the loss spikes"), (log.diverged, "the loss diverges"),
                                          (log.explode, "the gradients explode")) if flag]
        if log.died:
            reasons.append("FFN units that were alive at the start died during training (" + ", ".join(
                f"{g}: {a:.0%} -> {b:.0%}" for g, (a, b) in log.died.items()) + "): large steps pushed them where "
                "ReLU gives no gradient")
        log.issues.append(Issue(
            "lr_too_high", "error" if log.diverged else "warning", first,
            "The learning rate looks too high: " + "; ".join(reasons) + ". Too large a step overshoots the "
            "minimum along the directions of high curvature (for plain gradient descent on a quadratic, any "
            "lr > 2 / largest curvature diverges).",
            "Divide training.lr by 3-10 (run `minibert analyze --what lr-finder` to pick one) and keep "
            "training.warmup_ratio > 0.",
            {"lr": float(log.lr[-1]) if log.lr.size else None, "update_ratio_median": high,
             "units_died": log.died}))
    elif med_ratio and max(med_ratio.values()) < th.update_ratio_low:
        log.issues.append(Issue(
            "lr_too_low", "warning", first,
            f"Each step changes the weights by less than {th.update_ratio_low:g} of their size (median update ratio "
            f"{max(med_ratio.values()):.2g}): training will crawl.",
            "Raise training.lr 3-10x (the LR finder suggests one), or check that training.warmup_ratio does not "
            "keep the rate near 0.",
            {"update_ratio_median": med_ratio}))


def _rule_plateau(log: _Log) -> None:
    """No progress over the last window, while the learning rate has not been annealed away."""
    w, floss, fsteps, lr = log.th.plateau_window, log.floss, log.fsteps, log.lr
    if len(floss) < 2 * w or log.diverged:
        return
    prev_m, last_m = float(floss[-2 * w:-w].mean()), float(floss[-w:].mean())
    improvement = (prev_m - last_m) / max(abs(prev_m), 1e-12)
    annealed = lr.size > 0 and float(lr[-w:].mean()) < 0.1 * float(lr.max())
    if improvement >= log.th.plateau_tol or annealed:
        return
    start_m = float(floss[:w].mean())
    never_learned = last_m > 0.95 * start_m
    log.issues.append(Issue(
        "loss_plateau", "warning", int(fsteps[-2 * w]),
        f"The loss has stopped improving (mean {prev_m:.3f} then {last_m:.3f} over the last two windows of "
        f"{w} logged steps)" + (", and is still close to where it started: the model is not learning."
                                if never_learned else "."),
        ("Raise training.lr or check the data and masking (is there anything to learn?)" if never_learned else
         "Decay the learning rate (training.schedule), add capacity or data, or stop here if the validation loss "
         "has stopped too."),
        {"previous_window_mean": prev_m, "last_window_mean": last_m, "start_mean": start_m}))
    # Blame the learning rate only when nothing else explains the stall (dead units, vanishing gradients).
    if never_learned and not log.found("lr_too_low", "dead_relu", "vanishing_gradients"):
        log.issues.append(Issue(
            "lr_too_low", "warning", int(fsteps[-2 * w]),
            "The loss has barely moved since the start of training: the steps may be too small to learn.",
            "Raise training.lr 3-10x, or run the LR finder (`minibert analyze --what lr-finder`).",
            {"start_mean": start_m, "last_window_mean": last_m}))


def _rule_attention_collapse(log: _Log) -> None:
    """Every head of a layer puts all its weight on one token."""
    collapsed = {}
    for layer in _prefixed_keys(log.history, "attention_entropy/"):
        _, v = _series(log.history, f"attention_entropy/{layer}")
        if v.size and float(np.median(v[-3:])) < log.th.collapse_entropy:
            collapsed[layer] = float(np.median(v[-3:]))
    if collapsed:
        log.issues.append(Issue(
            "attention_collapse", "warning", None,
            "The attention of " + ", ".join(f"{g} (mean entropy {e:.3f} nats)" for g, e in collapsed.items())
            + " has collapsed: every head puts nearly all its weight on a single token, so the layer mixes in "
            "almost no context and its softmax gradients vanish.",
            "Lower training.lr, check that the scores are scaled by 1/sqrt(d), and that padding is masked.",
            {"entropy": collapsed}))


# In order: later rules read what earlier ones found (the learning-rate rule weighs spikes, divergence,
# explosions and dead units; the plateau rule skips a diverged run).
RULES = (_rule_non_finite, _rule_loss_spikes, _rule_rising_loss, _rule_rebound, _rule_exploding_gradients,
         _rule_vanishing_gradients, _rule_dead_units, _rule_learning_rate, _rule_plateau, _rule_attention_collapse)


def detect_training_issues(history: list[dict], thresholds: IssueThresholds | None = None) -> list[Issue]:
    """Read a training log and name what is going wrong, in plain language, with a setting to change.

    history: a list of metric dicts, one per logged step: "step", "train_loss" (or "loss"), "lr", "grad_norm",
    and the `TrainingMonitor` keys "grad_norm/<group>", "update_ratio" / "update_ratio/<group>",
    "dead_units/layer_<l>", "attention_entropy/layer_<l>". Missing keys are skipped. Each of `RULES` looks for
    one problem. Returns a list of Issue, errors first; empty for a healthy run.
    """
    history = sorted(history, key=lambda e: e.get("step", 0))
    loss_key = "train_loss" if any("train_loss" in e for e in history) else "loss"
    steps, loss = _series(history, loss_key)
    gsteps, gnorm = _series(history, "grad_norm")
    ok = np.isfinite(loss)
    log = _Log(history, IssueThresholds() if thresholds is None else thresholds, steps, loss, steps[ok], loss[ok],
               gsteps, gnorm, _series(history, "lr")[1])
    for rule in RULES:
        rule(log)
    order = {"error": 0, "warning": 1}
    return sorted(log.issues, key=lambda i: order.get(i.severity, 2))


class TrainingMonitor:
    """What the trainer calls each step to log the "look inside" metrics every `every` steps.

    `observe(step, model, grads, cache, lr, loss, update_ratio=None, grad_norm=None)`: call once per step after
    the backward pass, consistently before or after the optimizer step (grads hold this step's gradients, cache is
    the forward cache). On steps with step % every == 0 it returns a dict to log: grad_norm/<group>,
    update_ratio and update_ratio/<group> (|delta W| / |W| of one step), attention_entropy/layer_<l> (mean over
    heads, nats), attention_entropy_min/layer_<l>, dead_units/layer_<l>. On other steps it records the loss, lr
    and grad_norm (a few bytes) and returns {}. grad_norm: the global norm *before clipping* (pass it: clipping
    scales the gradients in place, and an explosion is only visible before it); None computes it from grads.
    update_ratio: None (the monitor keeps a copy of the weights from the step before each observed step and
    measures the update itself), a float (logged as "update_ratio"), a dict group -> ratio, or the flat update
    delta theta aligned with model.store.flat.
    `issues()` runs `detect_training_issues` on everything recorded; `history` is that record.
    """

    def __init__(self, every: int = 100, thresholds: IssueThresholds | None = None):
        if every < 1:
            raise ValueError(f"every must be a positive number of steps; got {every}")
        self.every = int(every)
        self.thresholds = thresholds
        self.history: list[dict] = []
        self._slices = None
        self._prev: np.ndarray | None = None
        self._prev_step: int | None = None

    def observe(self, step: int, model, grads, cache, lr: float, loss: float, update_ratio=None,
                grad_norm: float | None = None) -> dict:
        step = int(step)
        entry = {"step": step, "lr": float(lr), "train_loss": float(loss)}
        if grad_norm is not None:
            entry["grad_norm"] = float(grad_norm)
        if step % self.every != 0:
            if update_ratio is None and (step + 1) % self.every == 0:
                # Keep theta before the next observed step's update comparison.
                if self._prev is None or self._prev.shape != model.store.flat.shape:
                    self._prev = np.empty_like(model.store.flat)
                np.copyto(self._prev, model.store.flat)
                self._prev_step = step
            self.history.append(entry)
            return {}
        if self._slices is None:
            self._slices = _group_block_slices(model.store)
        flat_g = grads.flat if isinstance(grads, MiniBERTGradients) else None
        if flat_g is not None:
            entry.setdefault("grad_norm", compute_gradient_norm(flat_g))
            for g, v in _group_norms(flat_g, self._slices).items():
                entry[f"grad_norm/{g}"] = v
        else:
            stats = analyze_gradient_magnitudes_by_layer(grads)
            entry.setdefault("grad_norm", compute_gradient_norm(grads))
            entry.update({f"grad_norm/{g}": v for g, v in stats["grad_norm"].items()})
        entry.update(self._update_ratios(step, model, update_ratio))
        mask = cache.get("attention_mask")
        if cache.get("attention_weights"):
            ent = compute_attention_entropy(cache["attention_weights"], mask)       # (L, H)
            for layer, row in enumerate(ent):
                entry[f"attention_entropy/layer_{layer}"] = float(row.mean())
                entry[f"attention_entropy_min/layer_{layer}"] = float(row.min())
        for layer, c in enumerate(cache.get("layers", [])):
            entry[f"dead_units/layer_{layer}"] = dead_unit_fraction(c["ffn"]["h"], mask)
        self.history.append(entry)
        # The caller logs step, lr, loss and the global norm itself: return only what the monitor adds.
        return {k: v for k, v in entry.items() if k not in ("step", "lr", "train_loss", "grad_norm")}

    def _update_ratios(self, step, model, update_ratio) -> dict:
        if update_ratio is None:
            if self._prev is None or self._prev_step != step - 1:
                return {}
            delta = model.store.flat - self._prev
        elif isinstance(update_ratio, dict):
            return {f"update_ratio/{g}": float(v) for g, v in update_ratio.items()}
        elif np.ndim(update_ratio) == 0:
            return {"update_ratio": float(update_ratio)}
        else:
            delta = np.asarray(update_ratio)
            if delta.shape != model.store.flat.shape:
                raise ValueError(f"update_ratio as an array must be the flat update delta theta of shape "
                                 f"{model.store.flat.shape}; got {delta.shape}")
        dn = _group_norms(delta, self._slices)
        wn = _group_norms(model.store.flat, self._slices)
        # A group whose weights are all zero has no scale: report 0 if it did not move, inf if it did.
        out = {f"update_ratio/{g}": dn[g] / wn[g] if wn[g] > 0 else (0.0 if dn[g] == 0 else math.inf) for g in dn}
        total_w = math.sqrt(sum(v * v for v in wn.values()))
        out["update_ratio"] = math.sqrt(sum(v * v for v in dn.values())) / total_w if total_w > 0 else math.inf
        return out

    def issues(self) -> list[Issue]:
        return detect_training_issues(self.history, self.thresholds)
