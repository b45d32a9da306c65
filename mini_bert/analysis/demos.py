"""The learning path's demos (the notes' Weeks 1-3 and Phase 3), each printing what it shows.

    minibert demo model          -> model_demo()          shapes, parameter count, the forward cache
    minibert demo attention      -> attention_demo()      Q/K/V and attention weights, by hand vs the model
    minibert demo gradients      -> gradients_demo()      per-layer gradient norms, a finite-difference check
    minibert demo mlm            -> mlm_demo()            BERT's masking rule and the loss of uniform predictions
    minibert demo optimizer      -> optimizer_demo()      AdamW against SGD on an ill-conditioned quadratic
    minibert demo optimizers     -> optimizers_demo()     AdamW, Lion and Lookahead on a noisy quadratic
    minibert demo checkpointing  -> checkpointing_demo()  activation checkpointing: memory against time
    minibert demo variants       -> variants_demo()       RoPE, relative position bias, gated attention

The first three also return a dict of the numbers they printed, so tests (and notebooks) can check them.
Shapes: B batch, T tokens, D hidden, H heads, d = D/H, V vocab, N masked positions.
The derivations behind every number are in docs/MATHEMATICAL_GUIDE.md.
"""

from __future__ import annotations

import os
import time

import numpy as np

from ..config import CLS_ID, MASK_ID, PAD_ID, SEP_ID, ModelConfig
from ..core.attention import merge_heads, split_heads
from ..core.gradients import MiniBERTGradients, mlm_cross_entropy
from ..core.math_ops import softmax_forward
from ..core.model import MiniBERT, describe_cache
from ..core.variants import AdvancedMiniBERT, relative_position_buckets
from .. import gradcheck
from ..training.advanced_optimizers import Lion, Lookahead
from ..training.checkpoint_utils import (cache_nbytes, checkpointed_loss_and_gradients, loss_and_gradients,
                                         memory_report, parameter_buffers, synthetic_batch)
from ..training.optimizer import AdamW
from ..core.parameters import layer_of
from ..data.masking import mask_tokens


def _heading(text: str) -> None:
    print(f"\n== {text} " + "=" * max(0, 72 - len(text)))


# --------------------------------------------------------------------------------------------------------------
# Week 1: one forward pass


def model_demo(seed: int = 0) -> dict:
    """The default model: its size, one forward pass of the notes' Week 1 input, and the cache it leaves."""
    model = MiniBERT(seed=seed)
    cfg = model.config
    _heading("Configuration")
    print(f"V={cfg.vocab_size} vocab, D={cfg.hidden_size} hidden, L={cfg.num_layers} layers, H={cfg.num_heads} heads "
          f"(d={cfg.head_dim}), F={cfg.intermediate_size} FFN, P={cfg.max_position_embeddings} positions, "
          f"{cfg.activation}, {cfg.norm_position}-LN, {cfg.dtype}")

    _heading("Parameters (one flat buffer, named views; docs/MODEL.md lists them)")
    groups: dict[str, int] = {}
    for name, view in model.params.items():
        l = layer_of(name)
        if l is not None:
            group = f"encoder layer {l}"
        elif name.startswith(("E_", "ln_emb")):
            group = "embeddings"
        elif name in ("W_pool", "b_pool", "W_cls", "b_cls"):
            group = "pooler + classifier"
        else:
            group = "MLM head (decoder tied to E_token)" if cfg.tie_word_embeddings else "MLM head"
        groups[group] = groups.get(group, 0) + view.size
    for group, n in groups.items():
        print(f"  {group:<38} {n:>10,}  ({100 * n / model.num_parameters:4.1f}%)")
    print(f"  {'total':<38} {model.num_parameters:>10,}  in {len(model.params)} named tensors")

    _heading("Week 1: one forward pass")
    input_ids = np.array([[CLS_ID, 5, 6, 7, SEP_ID]])            # (B=1, T=5): [CLS] tokens [SEP]
    logits, cache = model.forward(input_ids)
    print("Input shape:", input_ids.shape)
    print("Output shape:", logits.shape, " = (B, T, V): one score per vocabulary entry at every position")
    print("Cache keys:", list(cache.keys()))

    flat = describe_cache(cache)
    print(f"\nThe cache flattened by describe_cache: {len(flat)} arrays. Layer 0 and the MLM head:")
    for name, shape in flat.items():
        if name.startswith(("layers.0.", "mlm_head.")):
            print(f"  {name:<36} {shape}")
    print("  (ln*.0 = xhat, ln*.1 = rstd, ln*.2 = gamma: what the LayerNorm backward needs)")

    masked = np.zeros_like(input_ids, dtype=bool)
    masked[0, 2] = True
    small, _ = model.forward(input_ids, masked_positions=masked)
    print(f"\nWith masked_positions (the training path) the logits are only computed where the loss looks: "
          f"{small.shape} = (N, V)")
    return {"input_shape": input_ids.shape, "logits_shape": logits.shape, "cache_keys": list(cache.keys()),
            "num_parameters": model.num_parameters, "groups": groups, "masked_logits_shape": small.shape}


# --------------------------------------------------------------------------------------------------------------
# Week 2: attention


def attention_demo(seed: int = 0) -> dict:
    """Layer 0's attention on random input: shapes, rows summing to 1, a by-hand recomputation, padding."""
    model = MiniBERT(seed=seed)
    cfg = model.config
    D, H, d = cfg.hidden_size, cfg.num_heads, cfg.head_dim
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, 8, D)).astype(model.dtype)        # (B=1, T=8, D)

    _heading("Week 2: attention of layer 0")
    out, c = model._multi_head_attention(x, layer=0)
    A = c["attention_weights"]
    print("Attention input:", x.shape)
    print("Q, K, V shapes:", c["Q"].shape, c["K"].shape, c["V"].shape, " = (B, H, T, d)")
    print("Attention weights shape:", A.shape, " = (B, H, T queries, T keys)")
    print("Context shape:", c["context"].shape, " = heads merged back to (B, T, D)")
    row_err = float(np.abs(A.sum(axis=-1) - 1.0).max())
    print(f"Every row of A is a probability distribution over keys: max |row sum - 1| = {row_err:.1e}")

    _heading("The same computation by hand, from the named weights")
    P = model.params
    Q = split_heads(x @ P["W_Q_0"] + P["b_Q_0"], H)               # (B, H, T, d); W_Q_0 is a column view of W_QKV_0
    K = split_heads(x @ P["W_K_0"] + P["b_K_0"], H)
    V = split_heads(x @ P["W_V_0"] + P["b_V_0"], H)
    S = Q @ K.transpose(0, 1, 3, 2) / np.sqrt(d)                  # (B, H, T, T)
    A_hand = softmax_forward(S)
    out_hand = merge_heads(A_hand @ V) @ P["W_O_0"] + P["b_O_0"]  # (B, T, D)
    hand_err = float(np.abs(out_hand - out).max())
    print("S = Q K^T / sqrt(d);  A = softmax(S);  out = merge(A V) W_O + b_O")
    print(f"max |out_by_hand - model| = {hand_err:.1e}   (float32 rounding: the same computation)")
    entropy = -(A * np.log(A)).sum(-1).mean()
    print(f"mean attention entropy {entropy:.3f} nats vs log T = {np.log(A.shape[-1]):.3f}: at initialisation the "
          "scores are tiny, so attention is nearly uniform")

    _heading("Padding: a large negative bias on padded keys")
    mask = np.array([[1, 1, 1, 1, 1, 0, 0, 0],                    # 5 real tokens, 3 padding
                     [0, 0, 0, 0, 0, 0, 0, 0]])                   # a row that is all padding
    x2 = np.concatenate([x, x], axis=0)                           # (B=2, T=8, D)
    _, c2 = model._multi_head_attention(x2, layer=0, attention_mask=mask)
    A2 = c2["attention_weights"]
    padded_max = float(A2[0][..., 5:].max())
    uniform_err = float(np.abs(A2[1] - 1.0 / mask.shape[1]).max())
    print(f"sequence 0: largest weight on a padded key = {padded_max}  (exp(-huge) underflows to exactly 0)")
    print(f"sequence 1 (all padding): max |A - 1/T| = {uniform_err:.1e}, all finite: {bool(np.isfinite(A2).all())}"
          "  (with -inf it would be 0/0 = NaN)")
    return {"Q_shape": c["Q"].shape, "K_shape": c["K"].shape, "V_shape": c["V"].shape,
            "weights_shape": A.shape, "context_shape": c["context"].shape, "row_sum_error": row_err,
            "by_hand_error": hand_err, "padded_weight_max": padded_max, "all_padding_uniform_error": uniform_err,
            "all_finite": bool(np.isfinite(A2).all())}


# --------------------------------------------------------------------------------------------------------------
# Week 3: gradients


relative_error = gradcheck.relative_error   # |a - n| / max(|a|, |n|, 1e-12) (guide, section "Gradient checking")


def _small_float64_model(seed: int) -> MiniBERT:
    # initializer_range 0.2 instead of 0.02: at BERT's init the attention scores are so small that dL/dW_Q is
    # ~1e-8, below the noise floor eps * |L| / h of the difference quotient (guide, section "Gradient checking").
    cfg = ModelConfig(vocab_size=40, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                      max_position_embeddings=16, dtype="float64", dropout=0.1, attention_dropout=0.1,
                      initializer_range=0.2)
    return MiniBERT(cfg, seed=seed)


def finite_difference_check(seed: int = 0, h: float = gradcheck.EPS) -> list[dict]:
    """Central differences vs the hand-written backward on a few entries of a small float64 model.

    The whole-model version of `mini_bert.gradcheck`: the same central difference (`gradcheck.central_difference`)
    and relative error, applied to single entries of named parameters, since checking all of them takes minutes.
    To check one op of your own, use `gradcheck.check` or `minibert gradcheck` instead.
    Dropout stays on: each loss evaluation passes a fresh Generator with the same seed, so every forward pass
    draws the same masks and the loss is a smooth function of the parameters again.
    Returns one dict per entry: loss, name, index, analytic, numeric, relative_error.
    """
    model = _small_float64_model(seed)
    grads = MiniBERTGradients(model)
    rng = np.random.default_rng(seed)
    batch = rng.integers(5, model.config.vocab_size, size=(2, 10))
    batch[:, 0], batch[:, -1] = CLS_ID, SEP_ID
    batch[1, -3:] = [SEP_ID, PAD_ID, PAD_ID]                     # padding exercises the attention mask
    attention_mask = (batch != PAD_ID).astype(np.int64)
    inp, tgt, pos = mask_tokens(batch, model.config.vocab_size, MASK_ID, 0.3, rng)
    labels = np.array([0, 1])

    def mlm_loss(backward: bool = False) -> float:
        logits, cache = model.forward(inp, attention_mask, training=True, masked_positions=pos,
                                      rng=np.random.default_rng(123))
        loss, dlogits = mlm_cross_entropy(logits, tgt, pos)
        if backward:
            grads.backward_from_logits(dlogits, cache)
        return loss

    def cls_loss(backward: bool = False) -> float:
        logits, cache = model.forward_classifier(inp, attention_mask, training=True, rng=np.random.default_rng(123))
        loss, dlogits = grads.compute_classification_loss_and_gradients(logits, labels)
        if backward:
            grads.backward_from_class_logits(dlogits, cache)
        return loss

    # (loss, parameter, index): one entry from every kind of operation the backward passes through.
    entries = [
        (mlm_loss, "b_decoder", (int(tgt[pos][0]),)),
        (mlm_loss, "E_token", (int(tgt[pos][0]), 3)),             # tied: input lookup + decoder, both added
        (mlm_loss, "ln_mlm_gamma", (5,)),
        (mlm_loss, "W1_1", (2, 7)),
        (mlm_loss, "W_Q_1", (4, 1)),
        (mlm_loss, "W_V_0", (0, 9)),
        (mlm_loss, "ln1_gamma_0", (3,)),
        (mlm_loss, "E_pos", (2, 11)),
        (cls_loss, "W_pool", (1, 2)),
        (cls_loss, "W_K_0", (6, 3)),
    ]
    results = []
    for loss_fn in (mlm_loss, cls_loss):
        grads.zero_gradients()
        loss_fn(backward=True)
        for fn, name, idx in entries:
            if fn is not loss_fn:
                continue
            analytic = float(grads.gradients[name][idx])
            # perturb through the view: model.params[name] shares memory with the flat buffer the model reads
            numeric = gradcheck.central_difference(loss_fn, model.params[name], idx, h)
            results.append({"loss": fn.__name__, "name": name, "index": idx, "analytic": analytic,
                            "numeric": numeric, "relative_error": relative_error(analytic, numeric)})
    return results


def gradients_demo(seed: int = 0) -> dict:
    """The notes' Week 3: per-layer gradient norms for a masked batch, then a finite-difference check."""
    model = MiniBERT(seed=seed)
    cfg = model.config
    grads = MiniBERTGradients(model)
    rng = np.random.default_rng(seed)

    _heading("Week 3: gradients of the MLM loss on a masked batch")
    batch = rng.integers(5, 100, size=(4, 16))                    # (B=4, T=16) ordinary token ids
    input_ids, target_ids, mask_pos = mask_tokens(batch, 1000, MASK_ID, 0.15, rng)
    logits, cache = model.forward(input_ids)
    loss, grad_logits = grads.compute_mlm_loss_and_gradients(logits, target_ids, mask_pos)
    grads.zero_gradients()
    grads.backward_from_logits(grad_logits, cache)
    print(f"{int(mask_pos.sum())} masked positions; loss {loss:.4f} (uniform guessing: log V = "
          f"{np.log(cfg.vocab_size):.4f})")
    G = grads.gradients
    layer_norms = []
    print("Gradient analysis (Frobenius norms):")
    for l in range(cfg.num_layers):
        row = {k: float(np.linalg.norm(G[f"{k}_{l}"])) for k in ("W_Q", "W_K", "W_V", "W1")}
        layer_norms.append(row)
        print(f"Layer {l}: Q_grad_norm={row['W_Q']:.4f}, K_grad_norm={row['W_K']:.4f}, "
              f"V_grad_norm={row['W_V']:.4f}, FFN_grad_norm={row['W1']:.4f}")
    bk = max(float(np.abs(G[f"b_K_{l}"]).max()) for l in range(cfg.num_layers))
    print(f"largest |dL/db_K| = {bk:.1e}: adding b_K shifts a whole row of scores by one constant, which softmax "
          "ignores (guide, section \"Attention\")")
    untouched = [n for n in ("W_pool", "b_pool", "W_cls", "b_cls") if not np.any(G[n])]
    print(f"zero gradient (not on the MLM path): {', '.join(untouched)}")
    print(f"global gradient norm {grads.global_norm():.4f} (what clipping bounds)")

    _heading("Finite-difference check (float64, small model, dropout replayed)")
    print("numeric = (L(theta + h) - L(theta - h)) / 2h, h = 1e-5;  rel = |a - n| / max(|a|, |n|)")
    checks = finite_difference_check(seed)
    for c in checks:
        label = f"{c['name']}{list(c['index'])} ({c['loss'].replace('_loss', '')})"
        print(f"  {label:<26} analytic {c['analytic']: .8e}  numeric {c['numeric']: .8e}  rel {c['relative_error']:.1e}")
    worst = max(c["relative_error"] for c in checks)
    print(f"worst relative error {worst:.1e} ({'agree' if worst < 1e-5 else 'MISMATCH'})")
    return {"loss": loss, "layer_norms": layer_norms, "b_K_max": bk, "zero_gradient": untouched, "checks": checks}


# --------------------------------------------------------------------------------------------------------------
# Week 3: masking and optimisation; Phase 3: memory and variants


def mlm_demo() -> None:
    """BERT's masking on a small batch, its rates on a large one, and the loss of uniform predictions."""
    rng = np.random.default_rng(0)
    batch = rng.integers(5, 100, size=(2, 12))
    batch[:, 0], batch[:, -1] = CLS_ID, SEP_ID
    batch[1, -3:] = [SEP_ID, PAD_ID, PAD_ID]
    inp, tgt, pos = mask_tokens(batch, vocab_size=100, mask_id=MASK_ID, mask_prob=0.3, rng=rng)
    print("BERT masking: select 15% of ordinary tokens; of those 80% -> [MASK], 10% -> random, 10% kept.")
    print("original :", batch.tolist())
    print("corrupted:", inp.tolist())
    print("selected :", pos.astype(int).tolist())
    big = rng.integers(5, 8192, size=(64, 128))
    inp, tgt, pos = mask_tokens(big, 8192, MASK_ID, 0.15, rng)
    sel = pos.sum()
    print(f"\nOn 64x128 random ids: selected {sel / pos.size:.3f} of tokens; of those "
          f"{(inp[pos] == MASK_ID).mean():.3f} [MASK], {((inp[pos] != MASK_ID) & (inp[pos] != tgt[pos])).mean():.3f} "
          f"random, {(inp[pos] == tgt[pos]).mean():.3f} unchanged")
    V = 8192
    logits = np.zeros((int(sel), V), dtype=np.float32)
    loss, _ = mlm_cross_entropy(logits, tgt, pos)
    print(f"Loss of uniform predictions = log V = {np.log(V):.4f}; computed {loss:.4f}")


def optimizer_demo() -> None:
    """AdamW on an ill-conditioned quadratic, with and without weight decay, beside plain SGD."""
    rng = np.random.default_rng(0)
    target = rng.normal(size=8)
    scales = np.logspace(0, 3, 8)                      # curvatures from 1 to 1000: hard for plain SGD
    loss = lambda x: 0.5 * float(np.sum(scales * (x - target) ** 2))  # noqa: E731
    print("Minimise 0.5 * sum_i s_i (x_i - c_i)^2 with curvatures s from 1 to 1000 (condition number 1000).")
    x_sgd = np.zeros(8)
    for _ in range(200):
        x_sgd -= 1.9e-3 * scales * (x_sgd - target)    # largest stable SGD rate is 2 / 1000
    for wd in (0.0, 0.1):
        x = np.zeros(8)
        opt = AdamW(x, np.ones(8), lr=0.05, betas=(0.9, 0.999), eps=1e-8, weight_decay=wd)
        for t in range(1, 201):
            opt.step(scales * (x - target))
            if t in (1, 10, 50, 200):
                print(f"  AdamW wd={wd:<4} step {t:>3}: loss {loss(x):10.4f}   |x| {np.linalg.norm(x):.3f}")
    print(f"  SGD (best stable lr) step 200: loss {loss(x_sgd):10.4f}")
    print("Adam divides each coordinate's step by its own gradient scale, so every coordinate moves at a similar")
    print("rate regardless of curvature; decoupled weight decay pulls |x| towards 0 without touching m and v.")


def optimizers_demo() -> None:
    """AdamW, Lion and Lookahead(AdamW) on a noisy ill-conditioned quadratic."""
    target = np.random.default_rng(0).normal(size=16)
    scales = np.logspace(0, 2, 16)                                   # curvatures 1 ... 100
    loss = lambda x: 0.5 * float(np.sum(scales * (x - target) ** 2))  # noqa: E731
    print("Minimise 0.5 * sum_i s_i (x_i - c_i)^2 (curvatures 1 to 100) from noisy gradients (noise sd 1).")
    makers = {
        "AdamW lr 0.05": lambda x: AdamW(x, np.zeros(16), lr=0.05),
        "Lion lr 0.02": lambda x: Lion(x, np.zeros(16), lr=0.02),
        "Lookahead(AdamW lr 0.05) k=5": lambda x: Lookahead(AdamW(x, np.zeros(16), lr=0.05), x, k=5, alpha=0.5),
    }
    for name, make in makers.items():
        x = np.zeros(16)
        opt, noise = make(x), np.random.default_rng(1)
        for t in range(1, 301):
            opt.step(scales * (x - target) + noise.normal(size=16))
            if t in (10, 100, 300):
                print(f"  {name:<30} step {t:>3}: loss {loss(x):9.4f}")
    print("Lion moves every coordinate by exactly lr a step: it needs |c_i| / lr steps to arrive, then hovers within")
    print("about lr of the optimum. Lookahead's averaging of the fast weights damps the gradient noise that AdamW")
    print("alone keeps bouncing on.")


def checkpointing_demo(repeats: int = 3) -> None:
    """Activation checkpointing on the default model: peak cache memory against the time of a training step."""
    model = MiniBERT()
    grads = MiniBERTGradients(model)
    batch = synthetic_batch(model.config.vocab_size)
    L = model.config.num_layers
    mib = 2.0 ** 20
    print(f"default model ({model.num_parameters:,} parameters, {L} layers, {model.dtype}), batch "
          f"{batch['input_ids'].shape[0]} x {batch['input_ids'].shape[1]}; best of {repeats} steps")

    def best_time(step):
        """Best wall time and best user CPU time of `repeats` steps. User CPU time counts the arithmetic alone:
        it is steadier than wall time on a shared machine, and leaves out the kernel's page-fault time, which
        varies with how the allocator happens to reuse freed memory."""
        walls, cpus = [], []
        for _ in range(repeats):
            grads.zero_gradients()
            w0, c0 = time.perf_counter(), os.times().user
            out = step()
            walls.append(time.perf_counter() - w0)
            cpus.append(os.times().user - c0)
        return min(walls), min(cpus), out

    w_full, c_full, (_, cache) = best_time(lambda: loss_and_gradients(model, grads, batch))
    full_bytes = cache_nbytes(cache, exclude=parameter_buffers(model))
    del cache
    print(f"{'path':28} {'peak cache':>12} {'wall time':>10} {'user CPU':>9}")
    print(f"{'normal (full cache)':28} {full_bytes / mib:8.1f} MiB {w_full:9.3f}s {c_full:8.3f}s")
    for k in sorted({L, max(1, round(L ** 0.5)), 1}, reverse=True):
        w, c, (_, report) = best_time(lambda: checkpointed_loss_and_gradients(model, grads, batch, segments=k))
        est = memory_report(model, batch, segments=k)["checkpointed_peak_bytes"]
        peak = report["peak_cache_bytes"]
        print(f"{f'checkpointed, {k} segment(s)':28} {peak / mib:8.1f} MiB {w:9.3f}s {c:8.3f}s   "
              f"({peak / full_bytes:.0%} of the memory, {c / c_full:.2f}x the user CPU time; "
              f"memory_report estimate {est / mib:.1f} MiB)")


def variants_demo() -> None:
    """Each variant on a tiny model: parameter counts and one forward pass."""
    cfg = ModelConfig(vocab_size=64, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                      max_position_embeddings=16)
    ids = np.random.default_rng(0).integers(5, 64, (2, 10))
    for kw in ({}, {"rotary": True, "absolute_positions": False}, {"relative_position": True},
               {"gated_attention": True}, {"rotary": True, "relative_position": True, "gated_attention": True}):
        model = AdvancedMiniBERT(cfg, **kw)
        logits, cache = model.forward(ids)
        print(f"{sorted(model.variants) or ['(none)']!s:45} extra parameters {model.extra.flat.size:5d}  "
              f"logits {logits.shape}  mean attention entropy "
              f"{float(-(cache['attention_weights'][0] * np.log(cache['attention_weights'][0])).sum(-1).mean()):.3f}")
    print("relative position buckets, T = 12, 8 buckets, max_distance 8 (row = query, column = key):")
    print(relative_position_buckets(12, 8, 8))
