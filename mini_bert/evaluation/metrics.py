"""Metrics: numbers that say how well the model predicts, how training is going, and what its representations look like.

`minibert metrics --test` checks every metric on inputs whose answer is known and prints them
(the notes' Week 4 step).

Three levels, as in the notes' "Metrics-Driven Improvement Strategy":
  1. prediction and training:  masked_accuracy, compute_perplexity, compute_gradient_norm
  2. representations:          compute_token_diversity, compute_layer_similarity (linear CKA, cosine),
                               compute_attention_entropy, compute_effective_dimensionality
  3. geometry and robustness:  compute_effective_rank, compute_representation_geometry,
                               measure_representation_stability

Shapes: B batch, T tokens, D hidden, H heads, L layers, V vocab, N tokens (rows of a flattened (N, D) matrix).
Functions that take hidden states accept (B, T, D) with an optional attention_mask (B, T) of 1 = real token,
0 = padding (padding rows are dropped before measuring), or (N, D) rows directly. Results are Python floats or
float64 arrays: the statistics are computed in float64 so that float32 activations do not lose precision.
"""

from __future__ import annotations

import math

import numpy as np

from ..config import CLS_ID, PAD_ID, SEP_ID, SPECIAL_TOKENS

# ---------------------------------------------------------------------------------------------------------------
# Helpers


def token_rows(hidden_states, attention_mask=None) -> np.ndarray:
    """(B, T, D) + mask (B, T) -> the (N, D) float64 rows of real tokens; (N, D) is returned as float64."""
    h = np.asarray(hidden_states)
    if h.ndim == 2:
        if attention_mask is not None:
            raise ValueError("attention_mask only applies to (batch, seq_len, hidden) inputs; got (N, D) rows")
        return h.astype(np.float64)
    if h.ndim != 3:
        raise ValueError(f"expected hidden states (batch, seq_len, hidden) or rows (N, hidden); got shape {h.shape}")
    if attention_mask is None:
        return h.reshape(-1, h.shape[-1]).astype(np.float64)
    mask = np.asarray(attention_mask).astype(bool)
    if mask.shape != h.shape[:2]:
        raise ValueError(f"attention_mask has shape {mask.shape}, expected {h.shape[:2]} (batch, seq_len)")
    return h[mask].astype(np.float64)


def _unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; zero rows stay zero (their cosine with anything is 0)."""
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(norms > 0, norms, 1.0)


def mean_pairwise_cosine(X: np.ndarray, n_pairs: int, rng: np.random.Generator | None) -> float:
    """Mean cosine similarity over pairs of distinct rows: exact for up to 2048 rows, else n_pairs random pairs."""
    N = X.shape[0]
    if N < 2:
        raise ValueError(f"need at least 2 token vectors to compare; got {N}")
    U = _unit_rows(X)
    if N <= 2048:
        # sum_{i != j} u_i . u_j = |sum_i u_i|^2 - sum_i |u_i|^2: all N^2 pairs in O(N D).
        s = U.sum(axis=0)
        total = float(s @ s) - float(np.sum(U * U))
        return total / (N * (N - 1))
    rng = np.random.default_rng(0) if rng is None else rng
    i = rng.integers(0, N, size=n_pairs)
    j = (i + rng.integers(1, N, size=n_pairs)) % N          # j != i
    return float(np.mean(np.sum(U[i] * U[j], axis=1)))


# ---------------------------------------------------------------------------------------------------------------
# Level 1: prediction and training


def masked_accuracy(logits, targets, mask=None) -> float:
    """Fraction of masked positions whose arg-max prediction is the original token.

    logits (N, V) with targets (N,): rows already gathered at the masked positions.
    logits (N, V) with targets (B, T) and mask (B, T): the cheap training path (`forward(masked_positions=mask)`).
    logits (B, T, V) with targets (B, T) and mask (B, T) bool (None: every position counts).
    """
    logits = np.asarray(logits)
    targets = np.asarray(targets)
    if logits.ndim == 3:
        if targets.shape != logits.shape[:2]:
            raise ValueError(f"targets has shape {targets.shape}, expected {logits.shape[:2]} to match logits")
        mask = np.ones(targets.shape, bool) if mask is None else np.asarray(mask, dtype=bool)
        if mask.shape != targets.shape:
            raise ValueError(f"mask has shape {mask.shape}, expected {targets.shape}")
        logits, targets = logits[mask], targets[mask]
    elif logits.ndim == 2:
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != targets.shape:
                raise ValueError(f"mask has shape {mask.shape} but targets {targets.shape}; they must agree")
            targets = targets[mask]
        if targets.shape != (logits.shape[0],):
            raise ValueError(f"logits has {logits.shape[0]} rows but there are {targets.size} targets")
    else:
        raise ValueError(f"logits must be (N, V) or (B, T, V); got shape {logits.shape}")
    if targets.size == 0:
        raise ValueError("no masked positions to score: the mask selects nothing")
    return float(np.mean(logits.argmax(axis=-1) == targets))


def compute_perplexity(mean_loss: float) -> float:
    """exp(mean cross-entropy in nats): the effective number of equally likely choices per masked token.

    A uniform guess over V tokens has loss log V and perplexity V. Overflow gives inf.
    """
    loss = float(mean_loss)
    if math.isnan(loss):
        raise ValueError("the loss is NaN (training diverged?); perplexity is undefined")
    if loss < 0:
        raise ValueError(f"a cross-entropy loss cannot be negative; got {loss}")
    return math.exp(loss) if loss < 709.0 else math.inf


def compute_gradient_norm(gradients) -> float:
    """Global L2 norm sqrt(sum_i g_i^2): what gradient clipping bounds.

    gradients: a flat array, a dict name -> array (e.g. `MiniBERTGradients(model).gradients`, whose views do not
    overlap), or a MiniBERTGradients (its `.flat` is used).
    """
    if hasattr(gradients, "flat") and isinstance(getattr(gradients, "flat"), np.ndarray):
        gradients = gradients.flat
    if isinstance(gradients, dict):
        total = sum(float(np.sum(np.square(np.asarray(g, dtype=np.float64)))) for g in gradients.values())
        return math.sqrt(total)
    g = np.asarray(gradients, dtype=np.float64).ravel()
    return float(np.sqrt(g @ g))


# ---------------------------------------------------------------------------------------------------------------
# Level 2: representations


def compute_token_diversity(hidden_states, attention_mask=None, n_pairs: int = 4096,
                            rng: np.random.Generator | None = None) -> dict:
    """How different the token vectors are from one another.

    diversity = 1 - mean cosine similarity between distinct tokens: 1 for orthogonal (or zero-mean random)
    vectors, 0 when every token has the same direction (collapse). `relative_spread` = mean distance to the
    centroid / mean norm: 0 when all vectors are equal.
    Returns {"diversity", "mean_pairwise_cosine", "relative_spread", "n_tokens"}.
    """
    X = token_rows(hidden_states, attention_mask)
    mean_cos = mean_pairwise_cosine(X, n_pairs, rng)
    norms = np.linalg.norm(X, axis=1)
    spread = np.linalg.norm(X - X.mean(axis=0), axis=1).mean()
    return {
        "diversity": 1.0 - mean_cos,
        "mean_pairwise_cosine": mean_cos,
        "relative_spread": float(spread / norms.mean()) if norms.mean() > 0 else 0.0,
        "n_tokens": int(X.shape[0]),
    }


def linear_cka(X, Y) -> float:
    """Linear centered kernel alignment (Kornblith et al. 2019) between two views (N, D1), (N, D2) of N tokens.

    CKA = |Yc^T Xc|_F^2 / (|Xc^T Xc|_F |Yc^T Yc|_F), columns centred. It is 1 for X versus X Q with Q orthogonal
    or X versus a X (invariant to rotations and isotropic scaling), and near 0 for unrelated representations.
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if X.ndim != 2 or Y.ndim != 2 or X.shape[0] != Y.shape[0]:
        raise ValueError(f"linear_cka needs (N, D1) and (N, D2) with the same N; got {X.shape} and {Y.shape}")
    Xc = X - X.mean(axis=0)
    Yc = Y - Y.mean(axis=0)
    cross = np.linalg.norm(Yc.T @ Xc) ** 2
    denom = np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc)
    return float(cross / denom) if denom > 0 else 0.0


def compute_layer_similarity(layer_outputs, attention_mask=None) -> dict:
    """Similarity between every pair of layers' representations of the same tokens.

    layer_outputs: a list of L (B, T, D) arrays (e.g. `cache["hidden_states"]`, embeddings first) or (N, D) rows.
    Returns {"cka": (L, L), "cosine": (L, L)}: linear CKA (see `linear_cka`), and the mean over tokens of the
    cosine between token t's vector in layer i and in layer j (needs equal widths; NaN where they differ).
    Both matrices are symmetric with ones on the diagonal (for non-zero representations).
    """
    if len(layer_outputs) < 1:
        raise ValueError("layer_outputs is empty; pass a list such as cache['hidden_states']")
    rows = [token_rows(h, attention_mask) for h in layer_outputs]
    n = rows[0].shape[0]
    if any(r.shape[0] != n for r in rows):
        raise ValueError("every layer must hold the same tokens: the token counts differ")
    L = len(rows)
    cka = np.eye(L)
    cos = np.eye(L)
    units = [_unit_rows(r) for r in rows]
    for i in range(L):
        for j in range(i + 1, L):
            cka[i, j] = cka[j, i] = linear_cka(rows[i], rows[j])
            if rows[i].shape[1] == rows[j].shape[1]:
                cos[i, j] = cos[j, i] = float(np.mean(np.sum(units[i] * units[j], axis=1)))
            else:
                cos[i, j] = cos[j, i] = np.nan
    return {"cka": cka, "cosine": cos}


def compute_attention_entropy(attention_weights, attention_mask=None, normalize: bool = False) -> np.ndarray:
    """Mean entropy -sum_j A_ij log A_ij (nats) of the attention rows of each head: low = focused, high = diffuse.

    attention_weights: (B, H, T, T) for one layer, or a list of L of them (`cache["attention_weights"]`).
    attention_mask (B, T): rows of padded queries are left out of the mean (their attention is meaningless);
    padded keys hold ~0 weight and add nothing. A row spread evenly over n real keys has entropy log n; a
    one-hot row has 0. normalize=True divides each row by log n (1 = uniform), for comparing lengths.
    Returns (H,) for one layer, (L, H) for a list.
    """
    if isinstance(attention_weights, (list, tuple)):
        return np.stack([compute_attention_entropy(a, attention_mask, normalize) for a in attention_weights])
    A = np.asarray(attention_weights, dtype=np.float64)
    if A.ndim != 4 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"attention weights must have shape (batch, heads, T, T); got {A.shape}")
    B, H, T, _ = A.shape
    # 0 log 0 = 0: clamp inside the log only, so exact zeros contribute nothing.
    row_entropy = -np.sum(A * np.log(np.maximum(A, 1e-300)), axis=-1)          # (B, H, T)
    if attention_mask is None:
        real = np.ones((B, T), bool)
    else:
        real = np.asarray(attention_mask).astype(bool)
        if real.shape != (B, T):
            raise ValueError(f"attention_mask has shape {real.shape}, expected {(B, T)}")
    if normalize:
        n_keys = real.sum(axis=1)                                               # (B,)
        row_entropy = row_entropy / np.maximum(np.log(np.maximum(n_keys, 2)), 1e-12)[:, None, None]
    weights = np.broadcast_to(real[:, None, :], (B, H, T))
    count = weights.sum(axis=(0, 2))
    if np.any(count == 0):
        raise ValueError("attention_mask marks every token as padding; there are no rows to measure")
    return (row_entropy * weights).sum(axis=(0, 2)) / count


def compute_effective_dimensionality(representations, attention_mask=None, variance_threshold: float = 0.9) -> dict:
    """How many directions the (centred) token vectors really use.

    With eigenvalues lambda_k of their covariance:
      participation_ratio = (sum lambda)^2 / sum lambda^2: D for isotropic data, 1 when one direction dominates;
      n_components = the fewest principal components that explain `variance_threshold` of the variance.
    Returns {"participation_ratio", "n_components", "explained_variance_ratio" (D',), "variance_threshold"}.
    """
    if not 0.0 < variance_threshold <= 1.0:
        raise ValueError(f"variance_threshold must lie in (0, 1]; got {variance_threshold}")
    X = token_rows(representations, attention_mask)
    if X.shape[0] < 2:
        raise ValueError(f"need at least 2 token vectors; got {X.shape[0]}")
    Xc = X - X.mean(axis=0)
    s = np.linalg.svd(Xc, compute_uv=False)
    lam = s ** 2                                       # proportional to the covariance eigenvalues
    total = lam.sum()
    if total == 0:
        return {"participation_ratio": 0.0, "n_components": 0, "explained_variance_ratio": np.zeros_like(lam),
                "variance_threshold": variance_threshold}
    ratio = lam / total
    # Explained variance reaches the threshold at the first index where the cumulative sum does (with a little
    # slack for rounding, so that exactly-90% cases count).
    k = int(np.searchsorted(np.cumsum(ratio), variance_threshold - 1e-12) + 1)
    return {
        "participation_ratio": float(total ** 2 / np.sum(lam ** 2)),
        "n_components": min(k, lam.size),
        "explained_variance_ratio": ratio,
        "variance_threshold": variance_threshold,
    }


# ---------------------------------------------------------------------------------------------------------------
# Level 3: geometry and robustness


def compute_effective_rank(matrix) -> float:
    """Effective rank (Roy & Vetterli 2007): exp(H(p)), p_k = s_k / sum s, s the singular values.

    A continuous rank: n for the n x n identity (all s equal), 1 for a rank-1 matrix, between for everything
    else. For a weight matrix it says how much of its space is in use; 0 for the zero matrix.
    """
    M = np.asarray(matrix, dtype=np.float64)
    if M.ndim != 2:
        raise ValueError(f"effective rank needs a 2-D matrix; got shape {M.shape}")
    s = np.linalg.svd(M, compute_uv=False)
    total = s.sum()
    if total == 0:
        return 0.0
    p = s / total
    p = p[p > 0]
    return float(np.exp(-np.sum(p * np.log(p))))


def compute_representation_geometry(hidden_states, attention_mask=None, n_pairs: int = 4096,
                                    rng: np.random.Generator | None = None) -> dict:
    """The shape of the cloud of token vectors.

    anisotropy: mean cosine between random pairs of tokens (Ethayarajh 2019). ~0 when directions are spread
      evenly; near 1 when every vector points into one narrow cone (common in trained transformers).
    isotropy: Mu & Viswanath (2018), min_c Z(c) / max_c Z(c) over the principal directions c, with
      Z(c) = sum_i exp(c . x_i): 1 for perfectly isotropic vectors, -> 0 when one direction dominates.
    norm_mean / norm_std: vector lengths; mean_vector_norm_ratio = |mean vector| / mean norm (a common offset).
    top_pc_variance_ratio: share of the variance along the first principal direction.
    """
    X = token_rows(hidden_states, attention_mask)
    norms = np.linalg.norm(X, axis=1)
    mean_vec = X.mean(axis=0)
    Xc = X - mean_vec
    _, s, Vt = np.linalg.svd(X, full_matrices=False)                 # principal directions of X itself
    # log Z(c) via log-sum-exp: the projections can be large.
    proj = X @ Vt.T                                                  # (N, D')
    m = proj.max(axis=0)
    log_z = m + np.log(np.sum(np.exp(proj - m), axis=0))
    sc = np.linalg.svd(Xc, compute_uv=False) ** 2
    return {
        "anisotropy": mean_pairwise_cosine(X, n_pairs, rng),
        "isotropy": float(np.exp(log_z.min() - log_z.max())),
        "norm_mean": float(norms.mean()),
        "norm_std": float(norms.std()),
        "mean_vector_norm_ratio": float(np.linalg.norm(mean_vec) / norms.mean()) if norms.mean() > 0 else 0.0,
        "top_pc_variance_ratio": float(sc[0] / sc.sum()) if sc.sum() > 0 else 0.0,
        "n_tokens": int(X.shape[0]),
    }


def measure_representation_stability(model, input_ids, attention_mask=None, perturbation: str = "substitution",
                                     rate: float = 0.15, noise_std: float = 0.1, n_trials: int = 3,
                                     rng: np.random.Generator | None = None) -> dict:
    """How far each layer's token vectors move when the input is perturbed a little.

    perturbation="substitution": a fraction `rate` of the ordinary tokens (never [PAD], [CLS], [SEP]) is replaced
      by random ordinary tokens (at least one per sequence); drift is measured at the *unchanged* positions, so
      it shows how far a change spreads through context.
    perturbation="noise": Gaussian noise of standard deviation noise_std * (RMS of the embeddings) is added to
      the embedding output; drift is measured at every real position.
    Per layer (embeddings first, L + 1 values), averaged over n_trials random perturbations:
      relative_drift = mean |h' - h| / |h|,  cosine = mean cos(h', h).
    Returns {"perturbation", "relative_drift" (L+1,), "cosine" (L+1,), "n_trials"}.
    """
    if perturbation not in ("substitution", "noise"):
        raise ValueError(f"perturbation must be 'substitution' or 'noise'; got {perturbation!r}")
    if not 0.0 < rate < 1.0:
        raise ValueError(f"rate must lie in (0, 1); got {rate}")
    rng = np.random.default_rng(0) if rng is None else rng
    input_ids = np.asarray(input_ids)
    _, clean = model.encode(input_ids, attention_mask)
    clean_states = clean["hidden_states"]
    real = np.ones(input_ids.shape, bool) if attention_mask is None else np.asarray(attention_mask).astype(bool)
    n_special = len(SPECIAL_TOKENS)
    vocab = model.config.vocab_size
    drift = np.zeros((n_trials, len(clean_states)))
    cosine = np.zeros_like(drift)
    for trial in range(n_trials):
        if perturbation == "substitution":
            candidates = real & ~np.isin(input_ids, (PAD_ID, CLS_ID, SEP_ID))
            chosen = (rng.random(input_ids.shape) < rate) & candidates
            for b in np.flatnonzero(~chosen.any(axis=1) & candidates.any(axis=1)):
                chosen[b, rng.choice(np.flatnonzero(candidates[b]))] = True
            if not chosen.any():
                raise ValueError("no ordinary tokens to substitute: the input holds only special tokens")
            perturbed = input_ids.copy()
            # Shift by 1..(V - n_special - 1) within the ordinary range, so every chosen token really changes.
            offset = rng.integers(1, vocab - n_special, size=int(chosen.sum()))
            perturbed[chosen] = n_special + (perturbed[chosen] - n_special + offset) % (vocab - n_special)
            _, pc = model.encode(perturbed, attention_mask)
            states, where = pc["hidden_states"], real & ~chosen
        else:
            x = clean_states[0]
            rms = float(np.sqrt(np.mean(np.square(x[real]))))
            noisy = x + rng.normal(0.0, noise_std * rms, size=x.shape).astype(x.dtype)
            states, where = model.encode_from_embeddings(noisy, attention_mask)[1]["hidden_states"], real
        for layer, (h, hp) in enumerate(zip(clean_states, states)):
            a, b = h[where].astype(np.float64), hp[where].astype(np.float64)
            na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
            drift[trial, layer] = np.mean(np.linalg.norm(b - a, axis=1) / np.maximum(na, 1e-12))
            cosine[trial, layer] = np.mean(np.sum(a * b, axis=1) / np.maximum(na * nb, 1e-12))
    return {"perturbation": perturbation, "relative_drift": drift.mean(axis=0), "cosine": cosine.mean(axis=0),
            "n_trials": n_trials}


# ---------------------------------------------------------------------------------------------------------------
# `--test`: every metric on inputs with a known answer


def self_test() -> int:
    rng = np.random.default_rng(0)
    failures = 0

    def check(name, got, expected, tol=1e-6):
        nonlocal failures
        ok = abs(got - expected) <= tol * max(1.0, abs(expected))
        failures += not ok
        print(f"  [{'ok' if ok else 'FAIL'}] {name:<58} {got:12.6f}   expected {expected:.6f}")

    print("Level 1: prediction and training")
    logits = np.eye(5)[[0, 1, 2, 3]] * 3.0                         # predicts 0, 1, 2, 3
    check("masked_accuracy, 3 of 4 right", masked_accuracy(logits, np.array([0, 1, 2, 0])), 0.75)
    check("perplexity of uniform loss log(100)", compute_perplexity(math.log(100)), 100.0)
    check("gradient norm of {a: [3], b: [4]}", compute_gradient_norm({"a": np.array([3.0]), "b": np.array([4.0])}), 5.0)

    print("Level 2: representations")
    T = 8
    uniform = np.full((1, 1, T, T), 1.0 / T)
    one_hot = np.broadcast_to(np.eye(T), (1, 1, T, T))
    check(f"attention entropy of uniform rows = log {T}", compute_attention_entropy(uniform)[0], math.log(T))
    check("attention entropy of one-hot rows = 0", compute_attention_entropy(one_hot)[0], 0.0)
    X = rng.normal(size=(200, 16))
    Q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    check("CKA(X, X)", linear_cka(X, X), 1.0)
    check("CKA(X, XQ), Q orthogonal", linear_cka(X, X @ Q), 1.0)
    check("CKA(X, independent Y) ~ 0 (tol 0.15)", linear_cka(X, rng.normal(size=(200, 16))), 0.0, tol=0.15)
    iso = rng.normal(size=(20000, 8))
    check("participation ratio of isotropic 8-D data ~ 8 (tol 2%)",
          compute_effective_dimensionality(iso)["participation_ratio"], 8.0, tol=0.02)
    line = np.outer(rng.normal(size=500), rng.normal(size=8))
    check("90%-variance components of data on a line", compute_effective_dimensionality(line)["n_components"], 1)
    check("token diversity of identical vectors", compute_token_diversity(np.ones((10, 4)))["diversity"], 0.0)

    print("Level 3: geometry")
    check("effective rank of I_16", compute_effective_rank(np.eye(16)), 16.0)
    check("effective rank of a rank-1 matrix", compute_effective_rank(np.outer(np.arange(1, 6), np.ones(7))), 1.0)
    check("anisotropy of vectors in one direction", compute_representation_geometry(
        np.outer(rng.uniform(1, 2, 50), np.ones(6)))["anisotropy"], 1.0)
    check("anisotropy of isotropic Gaussian vectors ~ 0 (tol 0.02)",
          compute_representation_geometry(iso)["anisotropy"], 0.0, tol=0.02)

    from ..core.model import MiniBERT
    model = MiniBERT({"vocab_size": 50, "hidden_size": 16, "num_layers": 2, "num_heads": 2,
                      "intermediate_size": 32, "max_position_embeddings": 16}, seed=0)
    ids = rng.integers(5, 50, size=(2, 10))
    stab = measure_representation_stability(model, ids, perturbation="noise", noise_std=0.0, n_trials=1)
    check("drift of the last layer under zero noise", float(stab["relative_drift"][-1]), 0.0, tol=1e-5)
    stab = measure_representation_stability(model, ids, perturbation="substitution")
    print(f"  drift per layer under 15% token substitution (a random tiny model): "
          f"{np.array2string(stab['relative_drift'], precision=3)}")
    print("all checks passed" if failures == 0 else f"{failures} check(s) FAILED")
    return 1 if failures else 0
