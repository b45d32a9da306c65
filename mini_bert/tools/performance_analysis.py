"""Where the time of one training step goes: each stage timed on its own, its FLOPs, and BLAS vs elementwise work.

    python -m mini_bert.tools.performance_analysis [--batch 32] [--seq 128] [--repeats 3] [--threads 1]
                                                   [--config NAME] [key=value model overrides ...]

One training step (forward, MLM loss, backward, clip, AdamW) is run stage by stage by calling the core
functions directly — the same functions `MiniBERT.forward` and `MiniBERTGradients` call, in the same order — so that
each stage can be timed alone (best of `repeats`; a repeated backward stage first restores the gradient buffers it
adds to, so the step's result is unchanged):

    embeddings            lookup + LayerNorm + dropout, and the scatter-add backward
    layer{l}.attention    attention_forward / attention_backward (QKV, scores, softmax, context, output)
    layer{l}.ffn          ffn_forward / ffn_backward (two linears and the activation)
    layer{l}.norms        the layer's LayerNorms, dropouts and residual sums
    final_norm            pre-LN's final LayerNorm (pre-LN models only)
    mlm_head              gather the masked rows, dense + activation + LayerNorm, tied decoder, cross-entropy
    optimizer             global-norm clipping and the AdamW update (elementwise over every parameter)

FLOPs count the matrix multiplications only (2 M K N each, a multiply and an add); the elementwise work (softmax,
LayerNorm, GELU, dropout, AdamW) is a few operations per element and is reported as time, not FLOPs. With
B batch, T tokens, D hidden, H heads, d = D/H, F FFN width, V vocab and N masked tokens, per layer:

    attention forward   2BT*D*3D (QKV) + 2BH*T*d*T (Q K^T) + 2BH*T*T*d (A V) + 2BT*D*D (W_O) = 8BTD^2 + 4BT^2 D
    attention backward  twice the forward (each matmul has two gradients)            = 16BTD^2 + 8BT^2 D
    FFN forward         2BT*D*F + 2BT*F*D = 4BTDF;   backward 8BTDF
    MLM head forward    2N*D*D + 2N*D*V;             backward twice that

"BLAS time" is measured by running each stage's matrix multiplications alone, on arrays of the same shapes; the
rest of the stage's time is elementwise work, memory traffic and Python overhead. Achieved GFLOP/s = FLOPs / time.

`profile_training_step(config, batch_size, seq_len)` returns the numbers; `matmul_shapes` / `stage_flops` give
the FLOP count without running anything.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from contextlib import nullcontext

import numpy as np

from ..config import ConfigError, ModelConfig, load_config, pretraining_model
from ..core.attention import attention_backward, attention_forward, mask_bias
from ..core.embeddings import bert_embeddings_backward, bert_embeddings_forward
from ..core.gradients import MiniBERTGradients, masked_cross_entropy
from ..core.layers import ffn_backward, ffn_forward, layer_norm_backward, layer_norm_forward, linear_backward, \
    linear_forward
from ..core.math_ops import ACTIVATION_BACKWARD, ACTIVATION_FORWARD, dropout_backward, dropout_forward
from ..core.model import MiniBERT
from ..training.checkpoint_utils import synthetic_batch
from ..training.optimizer import AdamW, clip_grad_norm, decay_mask

# ----------------------------------------------------------------------------------------------------------------
# FLOPs: each stage's matrix multiplications as (batch, M, K, N): `batch` independent (M, K) @ (K, N) products


def matmul_shapes(cfg: ModelConfig, batch_size: int, seq_len: int, masked_tokens: int) -> dict[str, list[tuple]]:
    """stage name -> its matmuls [(batch, M, K, N)], forward and backward stages separately."""
    B, T, N = batch_size, seq_len, masked_tokens
    D, H, F, V = cfg.hidden_size, cfg.num_heads, cfg.intermediate_size, cfg.vocab_size
    d, BT, BH = cfg.head_dim, batch_size * seq_len, batch_size * cfg.num_heads
    shapes: dict[str, list[tuple]] = {"embeddings.forward": [], "embeddings.backward": []}
    for l in range(cfg.num_layers):
        shapes[f"layer{l}.attention.forward"] = [
            (1, BT, D, 3 * D),        # qkv = x W_QKV
            (BH, T, d, T),            # S = Q K^T
            (BH, T, T, d),            # C = A V
            (1, BT, D, D)]            # out = context W_O
        shapes[f"layer{l}.attention.backward"] = [
            (1, BT, D, D), (1, D, BT, D),          # dcontext = dout W_O^T, dW_O = context^T dout
            (BH, T, T, d), (BH, T, d, T),          # dV = A^T dC, dA = dC V^T
            (BH, T, T, d), (BH, T, T, d),          # dQ = dS K, dK = dS^T Q
            (1, BT, 3 * D, D), (1, D, BT, 3 * D)]  # dx = dqkv W_QKV^T, dW_QKV = x^T dqkv
        shapes[f"layer{l}.ffn.forward"] = [(1, BT, D, F), (1, BT, F, D)]
        shapes[f"layer{l}.ffn.backward"] = [(1, BT, D, F), (1, F, BT, D),     # da = df W2^T, dW2 = a^T df
                                            (1, BT, F, D), (1, D, BT, F)]     # dx = dh W1^T, dW1 = x^T dh
        shapes[f"layer{l}.norms.forward"] = []
        shapes[f"layer{l}.norms.backward"] = []
    if cfg.norm_position == "pre":
        shapes["final_norm.forward"], shapes["final_norm.backward"] = [], []
    shapes["mlm_head.forward"] = [(1, N, D, D), (1, N, D, V)]                # dense, decoder
    shapes["mlm_head.backward"] = [(1, N, V, D), (1, D, N, V),               # dt = dlogits W_dec^T, dW_dec
                                   (1, N, D, D), (1, D, N, D)]               # dh, dW_mlm
    shapes["optimizer"] = []
    return shapes


def stage_flops(cfg: ModelConfig, batch_size: int, seq_len: int, masked_tokens: int) -> dict[str, int]:
    """stage name -> matmul FLOPs (2 M K N per product)."""
    return {name: sum(2 * b * m * k * n for b, m, k, n in mm)
            for name, mm in matmul_shapes(cfg, batch_size, seq_len, masked_tokens).items()}


# ----------------------------------------------------------------------------------------------------------------
# The staged training step


class _Timer:
    """Best-of-`repeats` wall time per stage; `restore` (untimed) runs before each repeat."""

    def __init__(self, repeats: int):
        self.repeats = repeats
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str, fn, restore=None):
        best = math.inf
        for _ in range(self.repeats):
            if restore is not None:
                restore()
            t0 = time.perf_counter()
            out = fn()
            best = min(best, time.perf_counter() - t0)
        self.seconds[name] = self.seconds.get(name, 0.0) + best     # a stage timed in pieces adds them up
        return out


def _restorer(arrays: list[np.ndarray]):
    """A function that puts `arrays` back to their current values (for repeating a stage that adds into them)."""
    saved = [a.copy() for a in arrays]

    def restore():
        for a, s in zip(arrays, saved):
            a[...] = s
    return restore


def staged_training_step(model: MiniBERT, grads: MiniBERTGradients, optimizer: AdamW | None, batch: dict,
                         rng: np.random.Generator, repeats: int = 1, lr: float = 1e-4,
                         grad_clip: float = 1.0) -> tuple[float, dict[str, float]]:
    """One training step (dropout on) split into timed stages. Adds the gradient into `grads` (zero it first) and,
    with an optimizer, clips it and updates the parameters. Returns (loss, stage name -> best seconds)."""
    cfg, P, G = model.config, model.store.blocks, grads.store.blocks
    eps, H, p_drop, p_attn = cfg.layer_norm_eps, cfg.num_heads, cfg.dropout, cfg.attention_dropout
    timed = _Timer(repeats)
    ids, mask, tt = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    target, where = batch["target_ids"], np.asarray(batch["mask_positions"], bool)
    bias = mask_bias(mask, model.dtype)

    # ---- forward -------------------------------------------------------------------------------------------------
    def embeddings_forward():
        e = bert_embeddings_forward(ids, tt, P["E_token"], P["E_pos"], P["E_type"])
        ln = None
        if cfg.embedding_layer_norm:
            e, ln = layer_norm_forward(e, P["ln_emb_gamma"], P["ln_emb_beta"], eps)
        x, m = dropout_forward(e, p_drop, rng, True)
        return x, ln, m

    x, ln_emb, emb_drop = timed("embeddings.forward", embeddings_forward)
    layer_caches = []
    for l in range(cfg.num_layers):
        W = lambda k: P[f"{k}_{l}"]  # noqa: E731
        c: dict = {}
        norms = f"layer{l}.norms.forward"
        attn = lambda inp: attention_forward(inp, W("W_QKV"), W("b_QKV"), W("W_O"), W("b_O"), H, bias,  # noqa: E731
                                             p_attn, rng, True)
        ffn = lambda inp: ffn_forward(inp, W("W1"), W("b1"), W("W2"), W("b2"), cfg.activation)  # noqa: E731
        if cfg.norm_position == "post":
            a, c["attn"] = timed(f"layer{l}.attention.forward", lambda: attn(x))

            def post_norm1():
                a2, m1 = dropout_forward(a, p_drop, rng, True)
                return (m1,) + layer_norm_forward(x + a2, W("ln1_gamma"), W("ln1_beta"), eps)
            c["attn_drop"], x1, c["ln1"] = timed(norms, post_norm1)
            f, c["ffn"] = timed(f"layer{l}.ffn.forward", lambda: ffn(x1))

            def post_norm2():
                f2, m2 = dropout_forward(f, p_drop, rng, True)
                return (m2,) + layer_norm_forward(x1 + f2, W("ln2_gamma"), W("ln2_beta"), eps)
            c["ffn_drop"], x, c["ln2"] = timed(norms, post_norm2)
        else:
            n1, c["ln1"] = timed(norms, lambda: layer_norm_forward(x, W("ln1_gamma"), W("ln1_beta"), eps))
            a, c["attn"] = timed(f"layer{l}.attention.forward", lambda: attn(n1))

            def pre_norm2():
                a2, m1 = dropout_forward(a, p_drop, rng, True)
                x1 = x + a2
                return (m1, x1) + layer_norm_forward(x1, W("ln2_gamma"), W("ln2_beta"), eps)
            c["attn_drop"], x1, n2, c["ln2"] = timed(norms, pre_norm2)
            f, c["ffn"] = timed(f"layer{l}.ffn.forward", lambda: ffn(n2))

            def pre_residual2():
                f2, m2 = dropout_forward(f, p_drop, rng, True)
                return m2, x1 + f2
            c["ffn_drop"], x = timed(norms, pre_residual2)
        layer_caches.append(c)
    ln_f = None
    if cfg.norm_position == "pre":
        x, ln_f = timed("final_norm.forward", lambda: layer_norm_forward(x, P["ln_f_gamma"], P["ln_f_beta"], eps))
    W_dec = P["E_token"].T if cfg.tie_word_embeddings else P["W_decoder"]     # (D, V)

    def head_forward():
        idx = np.flatnonzero(where)                                            # (N,) rows of the (B*T, D) view
        h = x.reshape(-1, x.shape[-1])[idx]                                    # (N, D)
        t = linear_forward(h, P["W_mlm"], P["b_mlm"])
        t, act = ACTIVATION_FORWARD[cfg.activation](t)
        t, ln = layer_norm_forward(t, P["ln_mlm_gamma"], P["ln_mlm_beta"], eps)
        logits = linear_forward(t, W_dec, P["b_decoder"])                      # (N, V)
        loss, dlogits = masked_cross_entropy(logits, target, where)
        return loss, dlogits, (idx, h, act, ln, t)

    loss, dlogits, head = timed("mlm_head.forward", head_forward)

    # ---- backward: the forward in reverse; each stage restores the gradient blocks it adds to before a repeat --
    def blocks(*names):
        return [G[n] for n in names]

    def head_backward():
        idx, h, act, ln, t = head
        dt, dW_dec, db_dec = linear_backward(dlogits, t, W_dec)
        if cfg.tie_word_embeddings:
            G["E_token"] += dW_dec.T
        else:
            G["W_decoder"] += dW_dec
        G["b_decoder"] += db_dec
        dt, dg, db = layer_norm_backward(dt, ln)
        G["ln_mlm_gamma"] += dg
        G["ln_mlm_beta"] += db
        dt = ACTIVATION_BACKWARD[cfg.activation](dt, act)
        dh, dW, db = linear_backward(dt, h, P["W_mlm"])
        G["W_mlm"] += dW
        G["b_mlm"] += db
        full = np.zeros((x.shape[0] * x.shape[1], dh.shape[-1]), dtype=dh.dtype)
        full[idx] = dh                                                         # scatter the N rows back
        return full.reshape(x.shape)

    head_params = ["E_token" if cfg.tie_word_embeddings else "W_decoder", "b_decoder", "ln_mlm_gamma",
                   "ln_mlm_beta", "W_mlm", "b_mlm"]
    dx = timed("mlm_head.backward", head_backward, _restorer(blocks(*head_params)))
    if cfg.norm_position == "pre":
        def final_norm_backward():
            d, dg, db = layer_norm_backward(dx, ln_f)
            G["ln_f_gamma"] += dg
            G["ln_f_beta"] += db
            return d
        dx = timed("final_norm.backward", final_norm_backward, _restorer(blocks("ln_f_gamma", "ln_f_beta")))

    for l in reversed(range(cfg.num_layers)):
        c = layer_caches[l]
        Wl = lambda k: P[f"{k}_{l}"]  # noqa: E731
        Gl = lambda k: G[f"{k}_{l}"]  # noqa: E731
        norms = f"layer{l}.norms.backward"
        ffn_restore = _restorer([Gl(k) for k in ("W1", "b1", "W2", "b2")])
        attn_restore = _restorer([Gl(k) for k in ("W_QKV", "b_QKV", "W_O", "b_O")])
        # the norms stage is timed in pieces: each piece restores the LayerNorm gradients it adds to
        ln_restore = {k: _restorer([Gl(f"{k}_gamma"), Gl(f"{k}_beta")]) for k in ("ln1", "ln2")}

        def ln_back(k, dy, cache):
            d, dg, db = layer_norm_backward(dy, cache)
            Gl(f"{k}_gamma")[...] += dg
            Gl(f"{k}_beta")[...] += db
            return d

        def ffn_back(df):
            d, dW1, db1, dW2, db2 = ffn_backward(df, c["ffn"], Wl("W1"), Wl("W2"))
            for k, g in (("W1", dW1), ("b1", db1), ("W2", dW2), ("b2", db2)):
                Gl(k)[...] += g
            return d

        def attn_back(da):
            d, dWqkv, dbqkv, dWo, dbo = attention_backward(da, c["attn"], Wl("W_QKV"), Wl("W_O"))
            for k, g in (("W_QKV", dWqkv), ("b_QKV", dbqkv), ("W_O", dWo), ("b_O", dbo)):
                Gl(k)[...] += g
            return d

        if cfg.norm_position == "post":
            def post_back2(dx2=dx):
                ds2 = ln_back("ln2", dx2, c["ln2"])
                return ds2, dropout_backward(ds2, c["ffn_drop"])
            ds2, df = timed(norms, post_back2, ln_restore["ln2"])
            dx1 = timed(f"layer{l}.ffn.backward", lambda: ffn_back(df), ffn_restore)

            def post_back1():
                ds1 = ln_back("ln1", dx1 + ds2, c["ln1"])                    # residual: x1 feeds LN2 and the FFN
                return ds1, dropout_backward(ds1, c["attn_drop"])
            ds1, da = timed(norms, post_back1, ln_restore["ln1"])
            dxa = timed(f"layer{l}.attention.backward", lambda: attn_back(da), attn_restore)
            dx = timed(norms, lambda: dxa + ds1)
        else:
            dx2 = dx
            df = timed(norms, lambda: dropout_backward(dx2, c["ffn_drop"]))
            dn2 = timed(f"layer{l}.ffn.backward", lambda: ffn_back(df), ffn_restore)

            def pre_back2():
                dx1 = ln_back("ln2", dn2, c["ln2"]) + dx2                     # residual: x2 = x1 + FFN(LN2(x1))
                return dx1, dropout_backward(dx1, c["attn_drop"])
            dx1, da = timed(norms, pre_back2, ln_restore["ln2"])
            dn1 = timed(f"layer{l}.attention.backward", lambda: attn_back(da), attn_restore)
            dx = timed(norms, lambda: ln_back("ln1", dn1, c["ln1"]) + dx1, ln_restore["ln1"])

    def embeddings_backward():
        de = dropout_backward(dx, emb_drop)
        if cfg.embedding_layer_norm:
            de, dg, db = layer_norm_backward(de, ln_emb)
            G["ln_emb_gamma"] += dg
            G["ln_emb_beta"] += db
        bert_embeddings_backward(de, ids, tt, G["E_token"], G["E_pos"], G["E_type"])

    emb_params = ["E_token", "E_pos", "E_type"] + (["ln_emb_gamma", "ln_emb_beta"] if cfg.embedding_layer_norm else [])
    timed("embeddings.backward", embeddings_backward, _restorer(blocks(*emb_params)))

    if optimizer is not None:
        state = _restorer([model.store.flat, grads.flat, optimizer.m, optimizer.v])
        t0 = optimizer.t

        def restore():
            state()
            optimizer.t = t0

        def optimizer_step():
            clip_grad_norm(grads.flat, grad_clip)
            optimizer.step(grads.flat, lr)
        timed("optimizer", optimizer_step, restore)
    return loss, timed.seconds


# ----------------------------------------------------------------------------------------------------------------
# BLAS time and the report


def blas_seconds(shapes: list[tuple], dtype, repeats: int, rng: np.random.Generator) -> float:
    """Best-of-repeats time of running the matmuls `shapes` [(batch, M, K, N)] alone on random arrays."""
    if not shapes:
        return 0.0
    operands = []
    for b, m, k, n in shapes:
        lead = () if b == 1 else (b,)
        operands.append((rng.standard_normal((*lead, m, k)).astype(dtype),
                         rng.standard_normal((*lead, k, n)).astype(dtype)))
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for a, w in operands:
            a @ w
        best = min(best, time.perf_counter() - t0)
    return best


def profile_training_step(config: ModelConfig | dict | None = None, batch_size: int = 32, seq_len: int = 128,
                          repeats: int = 3, seed: int = 0, threads: int | None = None) -> dict:
    """Time one training step stage by stage (see the module docstring) on a synthetic masked batch.

    config: a ModelConfig or dict (None: the model `minibert train` builds).
    threads: BLAS threads during the measurement (None: leave as is). Returns {"stages": [{"name", "seconds",
    "flops", "gflops_per_s", "blas_seconds", "blas_share"}], "total_seconds", "total_flops", "blas_seconds",
    "blas_share", "reference_step_seconds" (model.forward + backward + clip + AdamW, untouched), "loss",
    "masked_tokens", "batch_size", "seq_len", "repeats", "threads"}.
    """
    from threadpoolctl import threadpool_limits

    cfg = ModelConfig(**config) if isinstance(config, dict) else (config or pretraining_model())
    if seq_len > cfg.max_position_embeddings:
        raise ValueError(f"seq_len {seq_len} exceeds max_position_embeddings={cfg.max_position_embeddings}; "
                         "lower --seq or raise model.max_position_embeddings")
    if batch_size < 1 or seq_len < 4 or repeats < 1:
        raise ValueError(f"need batch_size >= 1, seq_len >= 4 and repeats >= 1; got {batch_size}, {seq_len}, "
                         f"{repeats}")
    model = MiniBERT(cfg, seed=seed)
    grads = MiniBERTGradients(model)
    opt = AdamW(model.store.flat, decay_mask(model.store), lr=1e-4)
    batch = synthetic_batch(cfg.vocab_size, batch_size, seq_len, seed)
    N = int(batch["mask_positions"].sum())
    rng = np.random.default_rng(seed)
    with threadpool_limits(threads) if threads else nullcontext():
        loss, seconds = staged_training_step(model, grads, opt, batch, rng, repeats)
        shapes = matmul_shapes(cfg, batch_size, seq_len, N)
        blas = {name: blas_seconds(shapes[name], model.dtype, repeats, rng) for name in seconds}
        ref_model = MiniBERT(cfg, seed=seed)
        ref_grads = MiniBERTGradients(ref_model)
        ref_opt = AdamW(ref_model.store.flat, decay_mask(ref_model.store), lr=1e-4)
        ref = math.inf
        for _ in range(repeats):
            t0 = time.perf_counter()
            logits, cache = ref_model.forward(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                                              training=True, masked_positions=batch["mask_positions"], rng=rng)
            _, dlogits = masked_cross_entropy(logits, batch["target_ids"], batch["mask_positions"])
            ref_grads.zero_gradients()
            ref_grads.backward_from_logits(dlogits, cache)
            clip_grad_norm(ref_grads.flat, 1.0)
            ref_opt.step(ref_grads.flat, 1e-4)
            ref = min(ref, time.perf_counter() - t0)
    flops = stage_flops(cfg, batch_size, seq_len, N)
    stages = []
    for name, s in seconds.items():
        b = min(blas[name], s)
        stages.append({"name": name, "seconds": s, "flops": flops[name],
                       "gflops_per_s": flops[name] / s / 1e9 if s > 0 else 0.0,
                       "blas_seconds": b, "blas_share": b / s if s > 0 else 0.0})
    total = sum(s["seconds"] for s in stages)
    total_blas = sum(s["blas_seconds"] for s in stages)
    return {"stages": stages, "total_seconds": total, "total_flops": sum(s["flops"] for s in stages),
            "blas_seconds": total_blas, "blas_share": total_blas / total if total > 0 else 0.0,
            "reference_step_seconds": ref, "loss": loss, "masked_tokens": N, "batch_size": batch_size,
            "seq_len": seq_len, "repeats": repeats, "threads": threads, "config": cfg.model_dump()}


def format_report(r: dict) -> str:
    """The profile as a plain-text table, then the totals and what they mean."""
    c = r["config"]
    lines = [f"One training step: {c['num_layers']} layers, D={c['hidden_size']}, H={c['num_heads']}, "
             f"F={c['intermediate_size']}, V={c['vocab_size']}, {c['activation']}, {c['norm_position']}-LN; batch "
             f"{r['batch_size']} x {r['seq_len']} ({r['masked_tokens']} masked tokens); best of {r['repeats']}, "
             f"{r['threads'] or 'default'} BLAS thread(s)", "",
             f"{'stage':<28}{'ms':>9}{'share':>8}{'MFLOP':>11}{'GFLOP/s':>9}{'BLAS ms':>9}{'BLAS %':>8}"]
    total = r["total_seconds"]
    for s in r["stages"]:
        lines.append(f"{s['name']:<28}{1e3 * s['seconds']:9.2f}{s['seconds'] / total:8.1%}{s['flops'] / 1e6:11.1f}"
                     f"{s['gflops_per_s']:9.2f}{1e3 * s['blas_seconds']:9.2f}{s['blas_share']:8.0%}")
    lines += ["", f"{'sum of stages':<28}{1e3 * total:9.2f}{'':8}{r['total_flops'] / 1e6:11.1f}"
                  f"{r['total_flops'] / total / 1e9:9.2f}{1e3 * r['blas_seconds']:9.2f}{r['blas_share']:8.0%}",
              f"{'reference step (model)':<28}{1e3 * r['reference_step_seconds']:9.2f}",
              "", f"Matrix multiplications (BLAS) take {r['blas_share']:.0%} of the step's time; the other "
                  f"{1 - r['blas_share']:.0%} is elementwise work (softmax, LayerNorm, the activation, dropout, the "
                  "embedding scatter-add, AdamW: a few operations per element, bound by memory bandwidth) and, for "
                  "small shapes, Python and NumPy call overhead."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mini_bert.tools.performance_analysis",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32, help="batch size (default 32)")
    parser.add_argument("--seq", type=int, default=128, help="tokens per sequence (default 128)")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many runs per stage (default 3)")
    parser.add_argument("--threads", type=int, default=1, help="BLAS threads (default 1; 0 = leave as is)")
    parser.add_argument("--config", default=None, help="a YAML file or configs/ name whose model section to use")
    parser.add_argument("overrides", nargs="*", help="model.key=value settings, e.g. model.num_layers=6")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides).model
        report = profile_training_step(cfg, args.batch, args.seq, args.repeats, threads=args.threads or None)
    except (ConfigError, ValueError) as e:
        print(f"performance_analysis: error: {e}", file=sys.stderr)
        return 2
    print(format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
