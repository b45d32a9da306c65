"""Look inside one computation: `MathematicalAnalyzer(model)` takes attention, LayerNorm and the FFN apart
step by step, with statistics; and the helpers every analysis shares (parameter groups, MLM batches and losses,
dead units).

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

import numpy as np

from ..core.attention import mask_bias
from ..core.gradients import MiniBERTGradients, mlm_cross_entropy
from ..core.math_ops import ACTIVATION_FORWARD, softmax_forward
from ..core.parameters import ParameterStore
from ..evaluation.metrics import compute_attention_entropy, token_rows
from ..training.optimizer import parameter_group

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
