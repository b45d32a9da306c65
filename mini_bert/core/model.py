"""MiniBERT: a BERT encoder in NumPy. The forward pass; `gradients.py` holds the backward pass.

Shapes: B batch, T tokens, D hidden, H heads, d = D/H, F intermediate, V vocab, N masked positions, C labels.

    e   = LN(E_token[ids] + E_pos[t] + E_type[tt])                 embeddings            (B, T, D)
    post-LN layer:  x = LN1(x + drop(Attn(x)));  x = LN2(x + drop(FFN(x)))
    pre-LN layer:   x = x + drop(Attn(LN1(x)));  x = x + drop(FFN(LN2(x)))   (then a final LN_f)
    MLM head:       logits = LN_mlm(act(h W_mlm + b_mlm)) E_token^T + b_decoder      (B, T, V) or (N, V)
    pooler:         p = tanh(h[:, 0] W_pool + b_pool);  class logits = drop(p) W_cls + b_cls  (B, C)

`forward` = `encode` (`embed`, then `encode_from_embeddings`: the layers) followed by `mlm_head`; it returns
`(logits, cache)`. The cache holds every intermediate under stable names: the backward pass reads it, and so do the
probes, the visualisations and the analysis tools (see `describe_cache`). A subclass changes the attention by
overriding `_attention_forward` and the embedding sum by overriding `_embedding_lookup` (variants.py does both).
"""

from __future__ import annotations

import numpy as np

from ..config import CLS_ID, MASK_ID, PAD_ID, SEP_ID, ModelConfig
from ..errors import InputError
from .attention import attention_forward, mask_bias
from .embeddings import bert_embeddings_forward, sinusoidal_positions
from .layers import ffn_forward, layer_norm_forward, linear_forward
from .math_ops import ACTIVATION_FORWARD, dropout_forward, tanh_forward
from .parameters import ParameterStore, parameter_specs
from .pretrained import load_pretrained_weights, pretrained_config


class MiniBERT:
    """The encoder, its MLM head and its classification head, with all parameters in one flat buffer.

    `MiniBERT(config=None, seed=0)`: `config` is a ModelConfig (or a dict of its fields); `seed` seeds the
    initialisation and the dropout generator `self.rng`.

    Two defaults, on purpose: `MiniBERT()` builds the notes' original block (ReLU, post-LN, dropout 0.1), the one
    their Week 1-3 snippets print; `minibert train` builds `config.pretraining_model()` (exact GELU, pre-LN, no
    dropout), the recipe that trains in 40 CPU minutes. `MiniBERT(pretraining_model())` is the trained shape, and
    `minibert config` prints which block a configuration builds.
    """

    def __init__(self, config: ModelConfig | dict | None = None, seed: int = 0):
        if config is None:
            config = ModelConfig()
        elif isinstance(config, dict):
            config = ModelConfig(**config)
        self.config = config
        self.dtype = np.dtype(config.dtype)
        self.store = ParameterStore(parameter_specs(config), self.dtype)
        self.rng = np.random.default_rng(seed)  # dropout noise; its state is saved in checkpoints
        self.init_weights(np.random.default_rng(seed))

    # ----------------------------------------------------------------------------------------------------------
    # Parameters

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Public named views of the flat buffer: model.params["W_Q_0"] (writing into one writes the buffer)."""
        return self.store.views

    def init_weights(self, rng: np.random.Generator) -> None:
        """BERT's scheme: weights and embeddings ~ N(0, initializer_range^2), biases 0, LayerNorm gains 1.
        With `position_init="sinusoidal"`, E_pos starts as `sinusoidal_positions` instead (the draws of every
        other tensor stay the same)."""
        std = self.config.initializer_range
        for s in self.store.specs:
            block = self.store.blocks[s.name]
            if s.kind in ("matrix", "embedding"):
                block[...] = rng.normal(0.0, std, size=s.shape)
            elif s.kind == "norm_gain":
                block[...] = 1.0
            else:
                block[...] = 0.0
        if self.config.position_init == "sinusoidal":
            self.store.blocks["E_pos"][...] = sinusoidal_positions(*self.store.blocks["E_pos"].shape, rms=std)

    @property
    def num_parameters(self) -> int:
        return int(self.store.flat.size)

    def state_dict(self) -> dict[str, np.ndarray]:
        """Public name -> contiguous copy (what a checkpoint stores)."""
        return {name: np.ascontiguousarray(v) for name, v in self.store.items()}

    def load_state_dict(self, state: dict[str, np.ndarray], strict: bool = True) -> list[str]:
        """Copy arrays into the buffer. A wrong shape names the tensor; returns the names that were missing."""
        unexpected = sorted(set(state) - set(self.params))
        if unexpected and strict:
            raise ValueError(f"checkpoint has tensors this model does not: {', '.join(unexpected[:10])}")
        for name, value in state.items():
            if name not in self.params:
                continue
            target = self.params[name]
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(
                    f"tensor {name!r} has shape {tuple(value.shape)} in the checkpoint but the model expects "
                    f"{tuple(target.shape)}: the checkpoint was made with a different model config"
                )
            target[...] = value
        missing = [n for n in self.params if n not in state]
        if missing and strict:
            raise ValueError(f"checkpoint lacks tensors: {', '.join(missing[:10])}")
        return missing

    @classmethod
    def from_pretrained(cls, path, dtype: str = "float32") -> "MiniBERT":
        """A model with the config and weights of a Hugging Face BERT folder (config.json, model.safetensors);
        see core/pretrained.py for the name table and what is reported when tensors are missing."""
        model = cls(pretrained_config(path, dtype))
        return load_pretrained_weights(model, path)

    # ----------------------------------------------------------------------------------------------------------
    # Input checks: a clear InputError (a ValueError) that names the problem and the limit.

    def _as_array(self, a, dtype=None):
        """`a` as an array of the parameters' array module (NEP 35 `like=`): NumPy normally; with the buffer on a
        GPU array module such as CuPy, the inputs move there too."""
        return np.asarray(a, dtype=dtype, like=self.store.flat)

    def _check_inputs(self, input_ids, attention_mask, token_type_ids):
        cfg = self.config
        input_ids = self._as_array(input_ids)
        if input_ids.ndim != 2:
            raise InputError(
                f"input_ids must have shape (batch, seq_len); got shape {input_ids.shape}. "
                "Wrap a single sequence as ids[None, :]."
            )
        if not np.issubdtype(input_ids.dtype, np.integer):
            raise InputError(f"input_ids must be integers; got dtype {input_ids.dtype}")
        B, T = input_ids.shape
        if T == 0 or B == 0:
            raise InputError(f"input_ids is empty (shape {input_ids.shape})")
        if T > cfg.max_position_embeddings:
            raise InputError(
                f"sequence length {T} exceeds max_position_embeddings={cfg.max_position_embeddings}; "
                "truncate or split the input"
            )
        lo, hi = int(input_ids.min()), int(input_ids.max())
        if lo < 0 or hi >= cfg.vocab_size:
            bad = lo if lo < 0 else hi
            raise InputError(f"token id {bad} is outside the vocabulary [0, {cfg.vocab_size - 1}]")
        if attention_mask is not None:
            attention_mask = self._as_array(attention_mask)
            if attention_mask.shape != input_ids.shape:
                raise InputError(
                    f"attention_mask has shape {attention_mask.shape}, expected {input_ids.shape} like input_ids"
                )
            if attention_mask.dtype != bool and bool(((attention_mask != 0) & (attention_mask != 1)).any()):
                bad = attention_mask[(attention_mask != 0) & (attention_mask != 1)][0]
                raise InputError(f"attention_mask holds {bad.item()!r}; it must be 1 for a real token and 0 for "
                                 f"padding (or booleans)")
        if token_type_ids is None:
            token_type_ids = np.zeros_like(input_ids)
        else:
            token_type_ids = self._as_array(token_type_ids)
            if token_type_ids.shape != input_ids.shape:
                raise InputError(
                    f"token_type_ids has shape {token_type_ids.shape}, expected {input_ids.shape} like input_ids"
                )
            if token_type_ids.min() < 0 or token_type_ids.max() >= cfg.type_vocab_size:
                raise InputError(f"token_type_ids must lie in [0, {cfg.type_vocab_size - 1}]")
        return input_ids, attention_mask, token_type_ids

    # ----------------------------------------------------------------------------------------------------------
    # Forward

    def _layer_params(self, l: int):
        """Layer l's tensors outside its attention (which `_attention_forward` reads), without the `_{l}` suffix."""
        b = self.store.blocks
        return {k: b[f"{k}_{l}"] for k in ("ln1_gamma", "ln1_beta", "W1", "b1", "W2", "b2", "ln2_gamma", "ln2_beta")}

    def embed(self, input_ids, token_type_ids, training=False, rng=None):
        """The embedding step: x = dropout(LN(E_token[ids] + E_pos[t] + E_type[tt])).

        input_ids, token_type_ids: (B, T) ints, already checked (`encode` checks them with `_check_inputs`).
        Returns (x (B, T, D), cache): the start of the forward cache (input_ids, token_type_ids, ln_emb, emb_drop)."""
        cfg, P = self.config, self.store.blocks
        rng = self.rng if rng is None else rng
        cache: dict = {"input_ids": input_ids, "token_type_ids": token_type_ids}
        e = self._embedding_lookup(input_ids, token_type_ids)                   # (B, T, D)
        if cfg.embedding_layer_norm:
            e, cache["ln_emb"] = layer_norm_forward(e, P["ln_emb_gamma"], P["ln_emb_beta"], cfg.layer_norm_eps)
        x, cache["emb_drop"] = dropout_forward(e, cfg.dropout, rng, training)
        return x, cache

    def _embedding_lookup(self, input_ids, token_type_ids):
        """E_token[ids] + E_pos[t] + E_type[tt]: (B, T, D). AdvancedMiniBERT overrides it to leave out E_pos
        (MiniBERTGradients._embedding_lookup_backward is its backward)."""
        P = self.store.blocks
        return bert_embeddings_forward(input_ids, token_type_ids, P["E_token"], P["E_pos"], P["E_type"])

    def _multi_head_attention(self, x, layer: int, attention_mask=None, training: bool = False, rng=None):
        """Self-attention of one layer on x: (B, T, D). Returns (out, cache) with Q, K, V, attention_weights, context."""
        bias = mask_bias(attention_mask, x.dtype)
        return self._attention_forward(x, layer, bias, training, self.rng if rng is None else rng)

    def attention_params(self, l: int) -> dict[str, np.ndarray]:
        """The tensors layer l's attention reads, without the `_{l}` suffix: W_QKV, b_QKV, W_O, b_O."""
        b = self.store.blocks
        return {k: b[f"{k}_{l}"] for k in ("W_QKV", "b_QKV", "W_O", "b_O")}

    def _attention_forward(self, x, l, bias, training, rng):
        """Layer l's self-attention on x: (B, T, D), with the padding bias (B, 1, 1, T) or None -> (out, cache).

        The only place an encoder layer calls attention: AdvancedMiniBERT overrides it with the variant attention
        (and MiniBERTGradients.attention_backward is its backward)."""
        p = self.attention_params(l)
        return attention_forward(x, p["W_QKV"], p["b_QKV"], p["W_O"], p["b_O"], self.config.num_heads, bias,
                                 self.config.attention_dropout, rng, training)

    def _encoder_layer(self, x, l, bias, training, rng):
        """One encoder layer, post- or pre-LN. x: (B, T, D) -> (B, T, D), cache."""
        cfg, p = self.config, self._layer_params(l)
        eps = cfg.layer_norm_eps
        c: dict = {}
        if cfg.norm_position == "post":
            a, c["attn"] = self._attention_forward(x, l, bias, training, rng)
            a, c["attn_drop"] = dropout_forward(a, cfg.dropout, rng, training)
            x1, c["ln1"] = layer_norm_forward(x + a, p["ln1_gamma"], p["ln1_beta"], eps)
            f, c["ffn"] = ffn_forward(x1, p["W1"], p["b1"], p["W2"], p["b2"], cfg.activation)
            f, c["ffn_drop"] = dropout_forward(f, cfg.dropout, rng, training)
            x2, c["ln2"] = layer_norm_forward(x1 + f, p["ln2_gamma"], p["ln2_beta"], eps)
        else:
            n1, c["ln1"] = layer_norm_forward(x, p["ln1_gamma"], p["ln1_beta"], eps)
            a, c["attn"] = self._attention_forward(n1, l, bias, training, rng)
            a, c["attn_drop"] = dropout_forward(a, cfg.dropout, rng, training)
            x1 = x + a
            n2, c["ln2"] = layer_norm_forward(x1, p["ln2_gamma"], p["ln2_beta"], eps)
            f, c["ffn"] = ffn_forward(n2, p["W1"], p["b1"], p["W2"], p["b2"], cfg.activation)
            f, c["ffn_drop"] = dropout_forward(f, cfg.dropout, rng, training)
            x2 = x1 + f
        return x2, c

    def encode(self, input_ids, attention_mask=None, token_type_ids=None, training=False, rng=None):
        """The encoder alone: `embed`, then `encode_from_embeddings`. Returns (last hidden state (B, T, D), cache)."""
        input_ids, attention_mask, token_type_ids = self._check_inputs(input_ids, attention_mask, token_type_ids)
        rng = self.rng if rng is None else rng
        x, cache = self.embed(input_ids, token_type_ids, training, rng)
        return self.encode_from_embeddings(x, attention_mask, training, rng, cache)

    def encode_from_embeddings(self, x, attention_mask=None, training=False, rng=None, cache=None):
        """The encoder layers (and pre-LN's final LayerNorm) applied to embedding outputs x: (B, T, D).

        Analysis tools use it to perturb the embeddings directly. Returns (last hidden state, cache)."""
        cfg, P = self.config, self.store.blocks
        rng = self.rng if rng is None else rng
        cache = {} if cache is None else cache
        cache.update({"attention_mask": attention_mask, "training": training, "layers": [], "hidden_states": [x],
                      "attention_weights": []})
        bias = mask_bias(attention_mask, self.dtype)
        for l in range(cfg.num_layers):
            x, layer_cache = self._encoder_layer(x, l, bias, training, rng)
            cache["layers"].append(layer_cache)
            cache["attention_weights"].append(layer_cache["attn"]["attention_weights"])
            cache["hidden_states"].append(x)
        if cfg.norm_position == "pre":
            # The residual stream of a pre-LN model is never normalised inside the layers: a final LN does it.
            x, cache["ln_f"] = layer_norm_forward(x, P["ln_f_gamma"], P["ln_f_beta"], cfg.layer_norm_eps)
            cache["hidden_states"][-1] = x
        return x, cache

    def mlm_head(self, h, cache, masked_positions=None):
        """The MLM head on the encoder output h: (B, T, D): logits = LN_mlm(act(h W_mlm + b_mlm)) W_dec + b_decoder,
        with W_dec = E_token^T when the embeddings are tied.

        With the boolean `masked_positions` (B, T), only the N rows where it is True (row-major order) go through
        the head: logits (N, V), the cheap path that training uses; without it, logits (B, T, V). Adds
        cache["mlm_head"] (and cache["masked_index"], the gathered rows) to `cache`, the dict `encode` returned."""
        cfg, P = self.config, self.store.blocks
        if masked_positions is not None:
            masked_positions = self._as_array(masked_positions, dtype=bool)
            if masked_positions.shape != h.shape[:2]:
                raise ValueError(f"masked_positions has shape {masked_positions.shape}, expected {h.shape[:2]}")
            idx = np.flatnonzero(masked_positions)                 # (N,) rows of the (B*T, D) view
            cache["masked_index"] = idx
            h = h.reshape(-1, h.shape[-1])[idx]                    # (N, D)
        head: dict = {"h": h}
        t = linear_forward(h, P["W_mlm"], P["b_mlm"])
        t, head["act"] = ACTIVATION_FORWARD[cfg.activation](t)
        t, head["ln"] = layer_norm_forward(t, P["ln_mlm_gamma"], P["ln_mlm_beta"], cfg.layer_norm_eps)
        head["t"] = t
        W_dec = P["E_token"].T if cfg.tie_word_embeddings else P["W_decoder"]   # (D, V)
        logits = linear_forward(t, W_dec, P["b_decoder"])           # (B, T, V) or (N, V)
        cache["mlm_head"] = head
        return logits

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, training=False,
                masked_positions=None, rng=None):
        """MLM logits: `encode`, then `mlm_head`. Returns (logits, cache): logits (B, T, V), or (N, V) at the N
        positions where the boolean `masked_positions` (B, T) is True (row-major order) — the cheap path that
        training uses."""
        h, cache = self.encode(input_ids, attention_mask, token_type_ids, training, rng)
        return self.mlm_head(h, cache, masked_positions), cache

    __call__ = forward

    def forward_classifier(self, input_ids, attention_mask=None, token_type_ids=None, training=False, rng=None):
        """Sequence classification from a pooled vector. Returns (class logits (B, C), cache).

        The pooler reads h_[CLS] (config.classifier_pooling="cls", BERT's) or the mean of the real tokens' last
        hidden states ("mean": u = sum_t m_t h_t / sum_t m_t, which MLM pretraining has shaped at every position,
        where it never trains [CLS]); then p = tanh(u W_pool + b_pool), dropout, logits = p W_cls + b_cls.
        """
        cfg, P = self.config, self.store.blocks
        rng = self.rng if rng is None else rng
        h, cache = self.encode(input_ids, attention_mask, token_type_ids, training, rng)
        if cfg.classifier_pooling == "mean":
            m = np.ones(h.shape[:2], dtype=h.dtype) if attention_mask is None else \
                np.asarray(attention_mask).astype(h.dtype)                          # (B, T)
            weights = m / m.sum(axis=1, keepdims=True)                              # (B, T), rows sum to 1
            u = np.einsum("bt,btd->bd", weights, h)                                 # (B, D)
        else:
            weights, u = None, h[:, 0]                                              # (B, D)
        pooled, tanh_cache = tanh_forward(linear_forward(u, P["W_pool"], P["b_pool"]))   # (B, D)
        dropped, drop_mask = dropout_forward(pooled, cfg.dropout, rng, training)
        logits = linear_forward(dropped, P["W_cls"], P["b_cls"])   # (B, C)
        cache["classifier"] = {"cls": u, "pool_weights": weights, "pooled": pooled, "tanh": tanh_cache,
                               "drop_mask": drop_mask, "dropped": dropped}
        return logits, cache

    def predict_masked(self, input_ids, attention_mask=None, top_k: int = 5, mask_id: int = MASK_ID):
        """Top-k token ids and probabilities at every `mask_id` in input_ids: a list of (position, ids, probs).
        (Hugging Face vocabularies put [MASK] elsewhere, e.g. 103: pass tokenizer.token_to_id("[MASK]").)"""
        input_ids = np.asarray(input_ids)
        where = input_ids == mask_id
        logits, _ = self.forward(input_ids, attention_mask, masked_positions=where)
        logits = logits - logits.max(-1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(-1, keepdims=True)
        top = np.argsort(-probs, axis=-1)[:, :top_k]
        positions = np.argwhere(where)
        return [(tuple(pos), top[i], probs[i, top[i]]) for i, pos in enumerate(positions)]


def describe_cache(cache: dict, prefix: str = "") -> dict[str, tuple]:
    """Flatten a forward cache into dotted names -> shapes (`layers.0.attn.attention_weights`), for reading."""
    out: dict[str, tuple] = {}
    items = enumerate(cache) if isinstance(cache, list) else cache.items()
    for k, v in items:
        name = f"{prefix}{k}"
        if isinstance(v, (dict, list)) and not (isinstance(v, list) and v and isinstance(v[0], np.ndarray)):
            out.update(describe_cache(v, name + "."))
        elif isinstance(v, list):
            for i, a in enumerate(v):
                out[f"{name}.{i}"] = tuple(a.shape)
        elif isinstance(v, np.ndarray):
            out[name] = tuple(v.shape)
        elif isinstance(v, tuple):
            for i, a in enumerate(v):
                if isinstance(a, np.ndarray):
                    out[f"{name}.{i}"] = tuple(a.shape)
    return out


SPECIAL_IDS = {"pad": PAD_ID, "cls": CLS_ID, "sep": SEP_ID, "mask": MASK_ID}
