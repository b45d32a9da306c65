"""Training dynamics across checkpoints and tasks: mode collapse, catastrophic forgetting, weight evolution,
gradient magnitudes by layer.

Shapes: B batch, T tokens, D hidden, H heads, d = D / H, F FFN width, L layers, P parameters (flat buffer).

Parameter groups (embeddings, layer_{l}, head) are those of analysis/inspection.py.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..evaluation.metrics import compute_effective_rank, mean_pairwise_cosine, token_rows
from ..training.optimizer import parameter_group
from .inspection import _group_order, _is_weight, _named_arrays

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
