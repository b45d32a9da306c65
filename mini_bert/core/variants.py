"""Architectural variants (the notes' Phase 3.1): rotary embeddings, relative position bias, gated attention.

Each op is a forward/backward pair derived in docs/VARIANTS.md; `AdvancedMiniBERT` is a MiniBERT whose encoder
layers use `attention_variant_forward`, with the variants' parameters in a second ParameterStore (`model.extra`) so
that the base buffer keeps MiniBERT's layout (checkpoints, optimizer state and tools that read it still fit).
It overrides only MiniBERT's two hooks, `_attention_forward` and `_embedding_lookup` (to leave out E_pos), and
AdvancedMiniBERTGradients their backward passes, `attention_backward` and `_embedding_lookup_backward`: every
other step, the layers' LayerNorms, FFN, dropout and residuals included, is MiniBERT's code.

Shapes: B batch, T tokens, D hidden, H heads, d = D / H head size, nb relative-position buckets.

    RoPE:      y = R(t) x per pair of dimensions (2i, 2i+1), angle t * base^(-2i/d)      (B, H, T, d)
    rel. bias: S += table[bucket(j - i), h]                                             (1, H, T, T)
    gate:      out = sigmoid(x W_gate + b_gate) * attention(x)                          (B, T, D)

    qkv = x W_QKV + b_QKV;  Q, K, V = heads(qkv)                                        (B, H, T, d)
    Q, K = RoPE(Q), RoPE(K)                                   if "rotary"
    S = scale Q K^T + mask_bias (+ rel_bias)                  rel_bias if "relative_position"
    A = softmax(S);  C = dropout(A) V;  a = merge(C) W_O + b_O
    out = sigmoid(x W_gate + b_gate) * a                      if "gated", else a
"""

from __future__ import annotations

import zlib

import numpy as np

from ..config import ModelConfig
from .attention import context_softmax_backward, merge_heads, split_heads
from .embeddings import embedding_backward, embedding_forward
from .gradients import MiniBERTGradients
from .layers import linear_backward, linear_forward
from .math_ops import dropout_forward, softmax_forward
from .model import MiniBERT
from .parameters import ParameterStore, ParamSpec

VARIANTS = frozenset({"rotary", "relative_position", "gated"})


# --------------------------------------------------------------------------------------------------------------
# Rotary position embeddings (Su et al., 2021, "RoFormer")


def rope_tables(positions, head_dim: int, base: float = 10000.0, dtype=np.float64):
    """cos and sin of the angles positions[t] * base^(-2i/d), each (T, d/2), i = 0 .. d/2 - 1."""
    if head_dim % 2:
        raise ValueError(f"rotary embeddings rotate pairs of dimensions: the head size must be even, got {head_dim} "
                         "(choose hidden_size and num_heads so that hidden_size / num_heads is even)")
    inv_freq = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)       # (d/2,)
    angles = np.asarray(positions, dtype=np.float64)[:, None] * inv_freq[None, :]      # (T, d/2)
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


def rope_rotate(x, cos, sin):
    """Rotate each pair (x[..., 2i], x[..., 2i+1]) by the angle whose cos/sin are given. x: (..., T, d)."""
    x_even, x_odd = x[..., 0::2], x[..., 1::2]                                        # (..., T, d/2) each
    y = np.empty_like(x)
    y[..., 0::2] = x_even * cos - x_odd * sin
    y[..., 1::2] = x_even * sin + x_odd * cos
    return y


def rope_forward(x, positions=None, base: float = 10000.0):
    """Rotary embedding of x: (B, H, T, d) at `positions` (T,) (default 0 .. T-1). Returns (y, cache=(cos, sin)).

    Pairs are the interleaved dimensions (2i, 2i+1), as in the RoFormer paper; implementations that pair i with
    i + d/2 (GPT-NeoX, Llama) differ only by a fixed permutation of each head's dimensions.
    """
    T, d = x.shape[-2], x.shape[-1]
    positions = np.arange(T) if positions is None else np.asarray(positions)
    if positions.shape != (T,):
        raise ValueError(f"positions must have shape ({T},) like the token axis of x; got {positions.shape}")
    cos, sin = rope_tables(positions, d, base, x.dtype)
    return rope_rotate(x, cos, sin), (cos, sin)


def rope_backward(dy, cache):
    """dx = R^T dy: the rotation is orthogonal, so its backward is the inverse rotation, by -angle
    (VARIANTS.md, section "Rotary position embeddings")."""
    cos, sin = cache
    return rope_rotate(dy, cos, -sin)


# --------------------------------------------------------------------------------------------------------------
# T5-style relative position bias (Raffel et al., 2020)


def _check_buckets(num_buckets: int, max_distance: int) -> None:
    if num_buckets < 4 or num_buckets % 2:
        raise ValueError(f"num_buckets must be even and >= 4 (half for keys on each side of the query); "
                         f"got {num_buckets}")
    if max_distance <= num_buckets // 4:
        raise ValueError(f"max_distance must exceed num_buckets // 4 = {num_buckets // 4}, the last distance "
                         f"with a bucket of its own; got {max_distance}")


def relative_position_buckets(T: int, num_buckets: int = 32, max_distance: int = 128) -> np.ndarray:
    """bucket[i, j] (T, T) int of the signed distance r = j - i from query i to key j (bidirectional).

    Keys to the left (r <= 0) use buckets 0 .. nb/2 - 1, keys to the right the same pattern shifted by nb/2.
    Within a side, with n = |r| and e = nb/4: distances n < e have a bucket each; from e to max_distance the buckets
    are spaced logarithmically, and every n >= max_distance shares the side's last bucket.
    """
    _check_buckets(num_buckets, max_distance)
    r = np.arange(T)[None, :] - np.arange(T)[:, None]                    # (T, T), r = j - i
    half = num_buckets // 2
    exact = half // 2
    n = np.abs(r)
    # bucket = e + floor((nb/2 - e) * log(n/e) / log(max_distance/e)): e at n = e, nb/2 at n = max_distance
    log_ratio = np.log(np.maximum(n, 1) / exact) / np.log(max_distance / exact)
    far = np.minimum(exact + (log_ratio * (half - exact)).astype(np.int64), half - 1)
    return np.where(r > 0, half, 0) + np.where(n < exact, n, far)


def relative_position_bias_forward(T: int, table, num_buckets: int, max_distance: int):
    """bias[0, h, i, j] = table[bucket(j - i), h]. table: (nb, H) -> bias (1, H, T, T), cache (buckets, nb)."""
    if table.ndim != 2 or table.shape[0] != num_buckets:
        raise ValueError(f"relative bias table must have shape (num_buckets={num_buckets}, num_heads); "
                         f"got {table.shape}")
    buckets = relative_position_buckets(T, num_buckets, max_distance)   # (T, T)
    bias = table[buckets].transpose(2, 0, 1)[None]                        # (T, T, H) -> (1, H, T, T)
    return bias, (buckets, num_buckets)


def relative_position_bias_backward(dbias, cache):
    """dtable[k, h] = sum of dbias[b, h, i, j] over b and every (i, j) with bucket(j - i) = k: a scatter-add, like
    an embedding's backward (VARIANTS.md, section "Relative position bias"). dbias: (B or 1, H, T, T)."""
    buckets, num_buckets = cache
    dsum = dbias.sum(axis=0)                                              # (H, T, T): the bias is shared over b
    H = dsum.shape[0]
    return embedding_backward(dsum.reshape(H, -1).T, buckets.reshape(-1), num_buckets)   # (nb, H)


# --------------------------------------------------------------------------------------------------------------
# Output gate: out = sigmoid(x W_gate + b_gate) * a, per hidden unit


def gate_forward(x, a, W_gate, b_gate):
    """x: (B, T, D) the attention's input, a: (B, T, D) its output -> out = g * a, g = sigmoid(x W_gate + b_gate)."""
    z = linear_forward(x, W_gate, b_gate)                                # (B, T, D)
    g = 0.5 * (1.0 + np.tanh(0.5 * z))                                   # sigmoid(z) without exp overflow
    return g * a, {"x": x, "a": a, "gate": g}


def gate_backward(dout, cache, W_gate):
    """da = dout * g;  dz = dout * a * g (1 - g);  then Linear (VARIANTS.md, section "Gated attention").

    Returns (dx, da, dW_gate, db_gate)."""
    g, a = cache["gate"], cache["a"]
    da = dout * g
    dz = dout * a * g * (1.0 - g)                                        # sigmoid'(z) = g (1 - g)
    dx, dW, db = linear_backward(dz, cache["x"], W_gate)
    return dx, da, dW, db


# --------------------------------------------------------------------------------------------------------------
# Attention with any subset of the variants


def check_variant(variant) -> frozenset:
    variant = frozenset(variant)
    unknown = variant - VARIANTS
    if unknown:
        raise ValueError(f"unknown attention variant(s) {sorted(unknown)}; choose from {sorted(VARIANTS)}")
    return variant


def attention_variant_forward(x, params, num_heads, bias=None, variant=frozenset(), dropout_p=0.0, rng=None,
                              training=False, max_distance=128, rope_base=10000.0):
    """Multi-head self-attention with RoPE on Q and K ("rotary"), a relative bias on the scores
    ("relative_position") and/or an output gate ("gated"); with no variant it computes exactly what
    `attention.attention_forward` computes, in the same order (the same bits, the same dropout draws).

    x: (B, T, D). params: W_QKV, b_QKV, W_O, b_O, and rel_bias_table (nb, H) / W_gate (D, D), b_gate (D,) for the
    variants that need them. bias: the padding mask bias (B, 1, 1, T) or None. Returns (out (B, T, D), cache).
    """
    variant = check_variant(variant)
    B, T, D = x.shape
    H, d = num_heads, D // num_heads
    qkv = linear_forward(x, params["W_QKV"], params["b_QKV"])            # (B, T, 3D)
    QKV = np.ascontiguousarray(qkv.reshape(B, T, 3, H, d).transpose(2, 0, 3, 1, 4), like=qkv)   # (3, B, H, T, d)
    Q, K, V = QKV[0], QKV[1], QKV[2]                                     # (B, H, T, d) each
    rope = None
    if "rotary" in variant:
        # The same rotation tables for Q and K: q_i . k_j then depends on the positions only through j - i.
        Q, rope = rope_forward(Q, np.arange(T), rope_base)
        K = rope_rotate(K, *rope)
    scale = x.dtype.type(1.0 / np.sqrt(d))
    S = (Q * scale) @ K.transpose(0, 1, 3, 2)                            # (B, H, T, T)
    if bias is not None:
        S += bias
    rel = None
    if "relative_position" in variant:
        table = params["rel_bias_table"]
        rel_bias, rel = relative_position_bias_forward(T, table, table.shape[0], max_distance)   # (1, H, T, T)
        S += rel_bias
    A = softmax_forward(S)                                               # (B, H, T, T)
    A_drop, drop_mask = dropout_forward(A, dropout_p, rng, training)
    C = A_drop @ V                                                       # (B, H, T, d)
    context = merge_heads(C)                                             # (B, T, D)
    out = linear_forward(context, params["W_O"], params["b_O"])         # (B, T, D)
    gate = None
    if "gated" in variant:
        out, gate = gate_forward(x, out, params["W_gate"], params["b_gate"])
    cache = {
        "x": x, "Q": Q, "K": K, "V": V, "scale": scale,       # Q and K as the scores saw them (rotated under RoPE)
        "attention_weights": A, "attention_dropout_mask": drop_mask, "A_drop": A_drop, "context": context,
        "variant": variant, "rope": rope, "rel": rel, "gate": gate,
    }
    return out, cache


def attention_variant_backward(dout, cache, params):
    """Backward of `attention_variant_forward` (VARIANTS.md, section "Attention with the variants").

    Returns (dx, grads) with grads a dict named like `params`: W_QKV, b_QKV, W_O, b_O, and rel_bias_table, W_gate,
    b_gate when those variants are on.
    """
    Q, K, scale = cache["Q"], cache["K"], cache["scale"]
    B, H, T, d = Q.shape
    D = H * d
    grads: dict[str, np.ndarray] = {}
    dx_gate = None
    if cache["gate"] is not None:                                        # out = g * a: first through the gate
        dx_gate, dout, grads["W_gate"], grads["b_gate"] = gate_backward(dout, cache["gate"], params["W_gate"])
    dcontext, grads["W_O"], grads["b_O"] = linear_backward(dout, cache["context"], params["W_O"])
    dC = split_heads(dcontext, H)                                        # (B, H, T, d), a view, as in core
    dQKV = np.empty((3, B, H, T, d), dtype=Q.dtype, like=Q)
    dS = context_softmax_backward(dC, cache, dQKV[2])                    # dV, and dS before the scale
    if cache["rel"] is not None:                                         # S = ... + rel_bias: dbias = dS
        grads["rel_bias_table"] = relative_position_bias_backward(dS, cache["rel"])
    dS *= scale                                                          # S = scale Q K^T
    np.matmul(dS, K, out=dQKV[0])                                        # dQ = scale dS K   (rotated Q)
    np.matmul(dS.transpose(0, 1, 3, 2), Q, out=dQKV[1])                  # dK = scale dS^T Q (rotated K)
    if cache["rope"] is not None:                                        # back through the rotation: R^T
        dQKV[0] = rope_backward(dQKV[0], cache["rope"])
        dQKV[1] = rope_backward(dQKV[1], cache["rope"])
    dqkv = dQKV.transpose(1, 3, 0, 2, 4).reshape(B, T, 3 * D)            # (B, T, 3D), the layout of qkv
    dx, grads["W_QKV"], grads["b_QKV"] = linear_backward(dqkv, cache["x"], params["W_QKV"])
    if dx_gate is not None:
        dx += dx_gate                                                    # x feeds both the gate and Q, K, V
    return dx, grads


# --------------------------------------------------------------------------------------------------------------
# The model


class AdvancedMiniBERT(MiniBERT):
    """MiniBERT with rotary embeddings, relative position bias and/or gated attention in every encoder layer.

    `AdvancedMiniBERT(config, seed=0, rotary=False, relative_position=False, gated_attention=False,
    absolute_positions=True, num_buckets=32, max_distance=128, rope_base=10000.0)`, or enable variants later with
    `implement_rotary_embeddings()`, `add_relative_position_encoding()`, `add_gated_attention()` (each returns
    self). The base parameters (`model.store`, `model.params`) keep MiniBERT's layout; the variants' parameters
    live in `model.extra` (views `model.extra_params`): `rel_bias_table_{l}` (nb, H), `W_gate_{l}` (D, D),
    `b_gate_{l}` (D,). With `absolute_positions=False` the embeddings skip E_pos (it stays in the buffer, unused
    and with zero gradient), so position information comes from RoPE or the relative bias alone (or not at all:
    a bag-of-words ablation is allowed). With no variant on, the model computes exactly what MiniBERT computes.
    """

    def __init__(self, config: ModelConfig | dict | None = None, seed: int = 0, rotary: bool = False,
                 relative_position: bool = False, gated_attention: bool = False, absolute_positions: bool = True,
                 num_buckets: int = 32, max_distance: int = 128, rope_base: float = 10000.0):
        super().__init__(config, seed)
        self.seed = seed
        self.absolute_positions = absolute_positions
        self.rotary = self.relative_position = self.gated_attention = False
        self.num_buckets, self.max_distance, self.rope_base = num_buckets, max_distance, rope_base
        self.extra = ParameterStore([], self.dtype)
        self.extra_params = self.extra.views
        if rotary:
            self.implement_rotary_embeddings()
        if relative_position:
            self.add_relative_position_encoding()
        if gated_attention:
            self.add_gated_attention()

    # ----------------------------------------------------------------------------------------------------------
    # Enabling variants (the notes' method names)

    def implement_rotary_embeddings(self, base: float | None = None) -> "AdvancedMiniBERT":
        """Rotate Q and K by position (RoPE) in every layer. No parameters. Returns self."""
        if base is not None:
            self.rope_base = base
        rope_tables(np.arange(1), self.config.head_dim)          # raises ValueError for an odd head size
        self.rotary = True
        return self

    def add_relative_position_encoding(self, num_buckets: int | None = None,
                                      max_distance: int | None = None) -> "AdvancedMiniBERT":
        """Add a learned bias per (distance bucket, head) to every layer's scores: tables rel_bias_table_{l}
        (nb, H) ~ N(0, initializer_range^2). Pass absolute_positions=False to the constructor (or set
        `model.absolute_positions = False`) to use it instead of E_pos. Returns self."""
        if self.relative_position and num_buckets not in (None, self.num_buckets):
            raise ValueError("relative positions are already on with num_buckets="
                             f"{self.num_buckets}; build a new model to change the table size")
        self.num_buckets = self.num_buckets if num_buckets is None else num_buckets
        self.max_distance = self.max_distance if max_distance is None else max_distance
        _check_buckets(self.num_buckets, self.max_distance)
        H = self.config.num_heads
        self._add_extra([ParamSpec(f"rel_bias_table_{l}", (self.num_buckets, H), "embedding")
                         for l in range(self.config.num_layers)])
        self.relative_position = True
        return self

    def add_gated_attention(self) -> "AdvancedMiniBERT":
        """Multiply every layer's attention output by sigmoid(x W_gate + b_gate), per hidden unit. W_gate ~ N(0,
        initializer_range^2), b_gate = 0, so the gate starts near 1/2 everywhere. Returns self."""
        D = self.config.hidden_size
        specs = []
        for l in range(self.config.num_layers):
            specs += [ParamSpec(f"W_gate_{l}", (D, D), "matrix"), ParamSpec(f"b_gate_{l}", (D,), "bias")]
        self._add_extra(specs)
        self.gated_attention = True
        return self

    def _add_extra(self, new_specs: list[ParamSpec]) -> None:
        """Reallocate `self.extra` with new_specs appended (existing values kept; already present names skipped).
        Each new tensor is drawn from a generator seeded by (seed, its name): the values do not depend on the
        order in which variants are enabled."""
        have = {s.name for s in self.extra.specs}
        new_specs = [s for s in new_specs if s.name not in have]
        if not new_specs:
            return
        old = self.extra
        self.extra = ParameterStore(old.specs + new_specs, self.dtype)
        self.extra_params = self.extra.views
        self.extra.flat[:old.flat.size] = old.flat
        std = self.config.initializer_range
        for s in new_specs:
            rng = np.random.default_rng([self.seed, zlib.crc32(s.name.encode())])
            self.extra.blocks[s.name][...] = rng.normal(0.0, std, size=s.shape) if s.kind != "bias" else 0.0

    @property
    def variants(self) -> frozenset:
        """The attention variants on: a subset of {"rotary", "relative_position", "gated"}."""
        on = {"rotary": self.rotary, "relative_position": self.relative_position, "gated": self.gated_attention}
        return frozenset(k for k, v in on.items() if v)

    @property
    def num_parameters(self) -> int:
        return int(self.store.flat.size + self.extra.flat.size)

    def flat_views(self) -> tuple[np.ndarray, np.ndarray]:
        """(base buffer, extra buffer): the two flat arrays an optimizer updates."""
        return self.store.flat, self.extra.flat

    def state_dict(self) -> dict[str, np.ndarray]:
        state = super().state_dict()
        state.update({name: np.ascontiguousarray(v) for name, v in self.extra.items()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray], strict: bool = True) -> list[str]:
        """As MiniBERT.load_state_dict, over both stores (enable the same variants before loading)."""
        extra_names = set(self.extra_params)
        base = {k: v for k, v in state.items() if k not in extra_names}
        missing = super().load_state_dict(base, strict)
        for name in extra_names:
            if name not in state:
                if strict:
                    raise ValueError(f"checkpoint lacks tensor {name!r} of an enabled variant")
                missing.append(name)
                continue
            if tuple(state[name].shape) != self.extra_params[name].shape:
                raise ValueError(f"tensor {name!r} has shape {tuple(state[name].shape)} in the checkpoint but the "
                                 f"model expects {self.extra_params[name].shape}")
            self.extra_params[name][...] = state[name]
        return missing

    # ----------------------------------------------------------------------------------------------------------
    # Forward

    def _embedding_lookup(self, input_ids, token_type_ids):
        """E_token[ids] (+ E_pos[t] when absolute_positions) + E_type[tt]: (B, T, D)."""
        if self.absolute_positions:
            return super()._embedding_lookup(input_ids, token_type_ids)
        P = self.store.blocks
        e = embedding_forward(input_ids, P["E_token"])                   # (B, T, D)
        e += embedding_forward(token_type_ids, P["E_type"])
        return e

    def attention_params(self, l: int) -> dict[str, np.ndarray]:
        """The tensors layer l's attention reads, base and extra, under attention_variant_forward's names."""
        e = self.extra.blocks
        p = super().attention_params(l)
        for k in ("rel_bias_table", "W_gate", "b_gate"):
            if f"{k}_{l}" in e:
                p[k] = e[f"{k}_{l}"]
        return p

    def _attention_forward(self, x, l, bias, training, rng):
        """Layer l's attention with the variants on (`attention_variant_forward`): (out (B, T, D), cache)."""
        cfg = self.config
        return attention_variant_forward(x, self.attention_params(l), cfg.num_heads, bias, self.variants,
                                         cfg.attention_dropout, rng, training, self.max_distance, self.rope_base)


class AdvancedMiniBERTGradients(MiniBERTGradients):
    """MiniBERTGradients over both of an AdvancedMiniBERT's stores: `.gradients` (base layout) and
    `.extra_gradients` (rel_bias_table_{l}, W_gate_{l}, b_gate_{l}). Create it after enabling the variants."""

    def __init__(self, model: AdvancedMiniBERT):
        if not isinstance(model, AdvancedMiniBERT):
            raise ValueError(f"AdvancedMiniBERTGradients needs an AdvancedMiniBERT; got {type(model).__name__} "
                             "(use MiniBERTGradients for a MiniBERT)")
        super().__init__(model)
        self.extra_store = ParameterStore(model.extra.specs, model.dtype)
        self.extra_gradients = self.extra_store.views
        self.extra_flat = self.extra_store.flat

    def flat_views(self) -> tuple[np.ndarray, np.ndarray]:
        """(base gradient buffer, extra gradient buffer), aligned with model.flat_views()."""
        return self.flat, self.extra_flat

    def zero_gradients(self) -> None:
        self.store.zero()
        self.extra_store.zero()

    def global_norm(self) -> float:
        return float(np.sqrt(np.dot(self.flat, self.flat) + np.dot(self.extra_flat, self.extra_flat)))

    def backward_from_hidden(self, dh, cache) -> None:
        """As MiniBERTGradients.backward_from_hidden (guide, section "Encoder layer"), after checking that the
        variants did not change (VARIANTS.md, section "AdvancedMiniBERT")."""
        if self.extra_store.specs != self.model.extra.specs:
            raise ValueError("the model's variants changed after these gradients were created: "
                             "create AdvancedMiniBERTGradients(model) again after enabling variants")
        super().backward_from_hidden(dh, cache)

    def _embedding_lookup_backward(self, de, cache) -> None:
        """As MiniBERTGradients' (guide, section "Embeddings"), except that E_pos gets no gradient when absolute
        positions are off (VARIANTS.md, section "AdvancedMiniBERT")."""
        if self.model.absolute_positions:
            super()._embedding_lookup_backward(de, cache)
            return
        G = self.store.blocks
        embedding_backward(de, cache["input_ids"], G["E_token"].shape[0], out=G["E_token"])
        embedding_backward(de, cache["token_type_ids"], G["E_type"].shape[0], out=G["E_type"])

    # the variant attention's backward (VARIANTS.md, section "Attention with the variants"), in the place the
    # encoder layer's backward calls
    attention_backward = staticmethod(attention_variant_backward)

    def _accumulate(self, grads, l) -> None:
        """As MiniBERTGradients', into whichever store holds each tensor (the variants' own are in the extra)."""
        G, E = self.store.blocks, self.extra_store.blocks
        for k, g in grads.items():
            name = f"{k}_{l}"
            (G if name in G else E)[name] += g
