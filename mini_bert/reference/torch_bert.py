"""TorchMiniBERT: the same model as `mini_bert.core.model.MiniBERT`, written the way a PyTorch user would.

It is the reference the NumPy forward and hand-written backward passes are checked against
(tests/test_torch_parity.py), and the baseline the benchmarks train. Needs PyTorch (the `reference` extra).

Shapes: B batch, T tokens, D hidden, H heads, d = D/H, F intermediate, V vocab, N masked positions, C labels.

PyTorch's nn.Linear stores its weight as (out, in) and computes y = x W^T + b; the NumPy model stores (in, out)
and computes y = x W + b. Moving weights or gradients between the two therefore transposes every matrix (not the
embedding tables, which are (rows, D) in both). The NumPy Q, K and V are column blocks of one fused
(D, 3D) matrix; here they are the row blocks of one `nn.Linear(D, 3D)` named `qkv`.

    twin = TorchMiniBERT.from_numpy(np_model)        # same config, same weights
    logits = twin(ids, mask, masked_positions=sel)   # (N, V), like np_model.forward(...)[0]
    loss.backward(); grads = twin.numpy_grads()      # {"W_Q_0": (D, D) array, ...} under the NumPy names
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import ModelConfig

_TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _activation(name: str):
    """The config's activation as a function on tensors: relu, exact (erf) GELU, or the tanh approximation."""
    if name == "relu":
        return F.relu
    if name == "gelu":
        return lambda x: F.gelu(x, approximate="none")
    if name == "gelu_tanh":
        return lambda x: F.gelu(x, approximate="tanh")
    raise ValueError(f"unknown activation {name!r}; choose relu, gelu or gelu_tanh")


class Embeddings(nn.Module):
    """e = drop(LN(E_token[ids] + E_pos[t] + E_type[tt])): (B, T) ids -> (B, T, D). LN only if configured."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        D = cfg.hidden_size
        self.word = nn.Embedding(cfg.vocab_size, D)
        self.position = nn.Embedding(cfg.max_position_embeddings, D)
        self.token_type = nn.Embedding(cfg.type_vocab_size, D)
        self.layer_norm = nn.LayerNorm(D, eps=cfg.layer_norm_eps) if cfg.embedding_layer_norm else None
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, input_ids, token_type_ids):
        T = input_ids.shape[1]
        positions = torch.arange(T, device=input_ids.device)
        e = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)   # (B, T, D)
        if self.layer_norm is not None:
            e = self.layer_norm(e)
        return self.dropout(e)


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused Q|K|V projection. x: (B, T, D) -> (B, T, D).

    attention="eager" spells out softmax(Q K^T / sqrt d + bias) V; "sdpa" calls
    F.scaled_dot_product_attention (the same math, PyTorch's fused kernel), for benchmarks.
    """

    def __init__(self, cfg: ModelConfig, attention: str = "eager"):
        super().__init__()
        self.num_heads, self.attention = cfg.num_heads, attention
        self.qkv = nn.Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.out = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.attn_dropout = nn.Dropout(cfg.attention_dropout)

    def forward(self, x, bias):
        """bias: additive (B, 1, 1, T) mask bias (0 or a large negative number) or None."""
        B, T, D = x.shape
        H = self.num_heads
        q, k, v = self.qkv(x).split(D, dim=-1)                      # 3 x (B, T, D)
        q, k, v = (t.view(B, T, H, D // H).transpose(1, 2) for t in (q, k, v))   # (B, H, T, d)
        if self.attention == "sdpa":
            p = self.attn_dropout.p if self.training else 0.0
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)
        else:
            scores = q @ k.transpose(-2, -1) / (D // H) ** 0.5      # (B, H, T, T)
            if bias is not None:
                scores = scores + bias
            weights = self.attn_dropout(scores.softmax(dim=-1))
            context = weights @ v                                    # (B, H, T, d)
        return self.out(context.transpose(1, 2).reshape(B, T, D))


class FeedForward(nn.Module):
    """f = act(x W1 + b1) W2 + b2: (B, T, D) -> (B, T, F) -> (B, T, D)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc_in = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.fc_out = nn.Linear(cfg.intermediate_size, cfg.hidden_size)
        self.act = _activation(cfg.activation)

    def forward(self, x):
        return self.fc_out(self.act(self.fc_in(x)))


class EncoderLayer(nn.Module):
    """post-LN: x = LN1(x + drop(attn(x))); x = LN2(x + drop(ffn(x))).
    pre-LN:  x = x + drop(attn(LN1(x)));  x = x + drop(ffn(LN2(x)))."""

    def __init__(self, cfg: ModelConfig, attention: str = "eager"):
        super().__init__()
        self.pre_ln = cfg.norm_position == "pre"
        self.attn = SelfAttention(cfg, attention)
        self.ln1 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.ffn = FeedForward(cfg)
        self.ln2 = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, bias):
        if self.pre_ln:
            x = x + self.dropout(self.attn(self.ln1(x), bias))
            return x + self.dropout(self.ffn(self.ln2(x)))
        x = self.ln1(x + self.dropout(self.attn(x, bias)))
        return self.ln2(x + self.dropout(self.ffn(x)))


class MLMHead(nn.Module):
    """logits = LN(act(h W + b)) W_dec + b_dec, W_dec the token embedding (tied) or its own matrix."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.act = _activation(cfg.activation)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.decoder = None if cfg.tie_word_embeddings else nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, h, word_embeddings: torch.Tensor):
        t = self.layer_norm(self.act(self.dense(h)))               # (..., D)
        weight = word_embeddings if self.decoder is None else self.decoder.weight   # (V, D) either way
        return F.linear(t, weight, self.bias)                       # (..., V)


class TorchMiniBERT(nn.Module):
    """The PyTorch twin of MiniBERT: encoder, MLM head, pooler and classifier, in eager PyTorch.

    `TorchMiniBERT(config, attention="eager")`; attention="sdpa" uses F.scaled_dot_product_attention.
    Parameters are created in the config's dtype (float32 or float64). Dropout follows `self.train()` /
    `self.eval()`, as in any PyTorch module.
    """

    def __init__(self, config: ModelConfig | dict | None = None, attention: str = "eager"):
        super().__init__()
        if config is None:
            config = ModelConfig()
        elif isinstance(config, dict):
            config = ModelConfig(**config)
        if attention not in ("eager", "sdpa"):
            raise ValueError(f"attention must be 'eager' or 'sdpa'; got {attention!r}")
        self.config = cfg = config
        self.embeddings = Embeddings(cfg)
        self.layers = nn.ModuleList(EncoderLayer(cfg, attention) for _ in range(cfg.num_layers))
        self.ln_f = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps) if cfg.norm_position == "pre" else None
        self.mlm = MLMHead(cfg)
        self.pooler = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.cls_dropout = nn.Dropout(cfg.dropout)
        self.classifier = nn.Linear(cfg.hidden_size, cfg.num_labels)
        self._init_weights()
        self.to(_TORCH_DTYPES[cfg.dtype])

    def _init_weights(self) -> None:
        """BERT's scheme, as in MiniBERT: matrices and embeddings ~ N(0, initializer_range^2), biases 0, gains 1."""
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, 0.0, std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    # ----------------------------------------------------------------------------------------------------------
    # Forward passes. Inputs may be numpy arrays or tensors; outputs are tensors.

    def _inputs(self, input_ids, attention_mask, token_type_ids):
        device = self.embeddings.word.weight.device
        input_ids = torch.as_tensor(input_ids, dtype=torch.long, device=device)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        else:
            token_type_ids = torch.as_tensor(token_type_ids, dtype=torch.long, device=device)
        bias = None
        if attention_mask is not None:
            # (B, T) of 1/0 -> additive (B, 1, 1, T): 0 on real keys, a large finite negative number on padding
            # (finite, like the NumPy model, so an all-padding row gets uniform weights rather than NaN).
            dtype = self.embeddings.word.weight.dtype
            keep = torch.as_tensor(attention_mask, device=device).to(dtype)
            bias = ((1.0 - keep) * (torch.finfo(dtype).min / 2))[:, None, None, :]
        return input_ids, token_type_ids, bias

    def encode(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """The encoder alone: last hidden state (B, T, D) (after the final LN for pre-LN models)."""
        input_ids, token_type_ids, bias = self._inputs(input_ids, attention_mask, token_type_ids)
        x = self.embeddings(input_ids, token_type_ids)             # (B, T, D)
        for layer in self.layers:
            x = layer(x, bias)
        return x if self.ln_f is None else self.ln_f(x)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, masked_positions=None) -> torch.Tensor:
        """MLM logits (B, T, V), or (N, V) at the N True entries of the boolean (B, T) `masked_positions`, in
        row-major order: the same rows as MiniBERT.forward."""
        h = self.encode(input_ids, attention_mask, token_type_ids)
        if masked_positions is not None:
            sel = torch.as_tensor(masked_positions, device=h.device).bool()
            if sel.shape != h.shape[:2]:
                raise ValueError(f"masked_positions has shape {tuple(sel.shape)}, expected {tuple(h.shape[:2])}")
            h = h[sel]                                              # (N, D), row-major like np.flatnonzero
        return self.mlm(h, self.embeddings.word.weight)

    def forward_classifier(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """Class logits (B, C) from the pooled [CLS] vector: drop(tanh(h[:, 0] W_pool + b_pool)) W_cls + b_cls."""
        h = self.encode(input_ids, attention_mask, token_type_ids)
        pooled = torch.tanh(self.pooler(h[:, 0]))                   # (B, D)
        return self.classifier(self.cls_dropout(pooled))

    # ----------------------------------------------------------------------------------------------------------
    # Exchange with the NumPy model

    def numpy_name_map(self) -> list[tuple[tuple[str, ...], str, bool]]:
        """(NumPy names, torch parameter name, transpose) for every torch parameter.

        The NumPy arrays, concatenated along their last axis, and transposed if `transpose`, give the torch
        parameter: Q | K | V columns become the rows of `qkv.weight`.
        """
        cfg = self.config
        m: list[tuple[tuple[str, ...], str, bool]] = [
            (("E_token",), "embeddings.word.weight", False),
            (("E_pos",), "embeddings.position.weight", False),
            (("E_type",), "embeddings.token_type.weight", False),
        ]
        if cfg.embedding_layer_norm:
            m += [(("ln_emb_gamma",), "embeddings.layer_norm.weight", False),
                  (("ln_emb_beta",), "embeddings.layer_norm.bias", False)]
        for l in range(cfg.num_layers):
            p = f"layers.{l}."
            m += [
                ((f"W_Q_{l}", f"W_K_{l}", f"W_V_{l}"), p + "attn.qkv.weight", True),
                ((f"b_Q_{l}", f"b_K_{l}", f"b_V_{l}"), p + "attn.qkv.bias", False),
                ((f"W_O_{l}",), p + "attn.out.weight", True),
                ((f"b_O_{l}",), p + "attn.out.bias", False),
                ((f"ln1_gamma_{l}",), p + "ln1.weight", False),
                ((f"ln1_beta_{l}",), p + "ln1.bias", False),
                ((f"W1_{l}",), p + "ffn.fc_in.weight", True),
                ((f"b1_{l}",), p + "ffn.fc_in.bias", False),
                ((f"W2_{l}",), p + "ffn.fc_out.weight", True),
                ((f"b2_{l}",), p + "ffn.fc_out.bias", False),
                ((f"ln2_gamma_{l}",), p + "ln2.weight", False),
                ((f"ln2_beta_{l}",), p + "ln2.bias", False),
            ]
        if cfg.norm_position == "pre":
            m += [(("ln_f_gamma",), "ln_f.weight", False), (("ln_f_beta",), "ln_f.bias", False)]
        m += [
            (("W_mlm",), "mlm.dense.weight", True),
            (("b_mlm",), "mlm.dense.bias", False),
            (("ln_mlm_gamma",), "mlm.layer_norm.weight", False),
            (("ln_mlm_beta",), "mlm.layer_norm.bias", False),
        ]
        if not cfg.tie_word_embeddings:
            m.append((("W_decoder",), "mlm.decoder.weight", True))
        m += [
            (("b_decoder",), "mlm.bias", False),
            (("W_pool",), "pooler.weight", True),
            (("b_pool",), "pooler.bias", False),
            (("W_cls",), "classifier.weight", True),
            (("b_cls",), "classifier.bias", False),
        ]
        return m

    @torch.no_grad()
    def load_numpy_state(self, state_dict: dict[str, np.ndarray]) -> None:
        """Copy a MiniBERT `state_dict()` (public NumPy names, (in, out) matrices) into this module.

        Every name the map needs must be present and have the right shape (ValueError naming it otherwise).
        """
        params = dict(self.named_parameters())
        for np_names, torch_name, transpose in self.numpy_name_map():
            missing = [n for n in np_names if n not in state_dict]
            if missing:
                raise ValueError(f"numpy state lacks {', '.join(missing)} (needed for {torch_name}); "
                                 "was it saved from a model with the same config?")
            value = np.concatenate([np.asarray(state_dict[n]) for n in np_names], axis=-1)
            if transpose:
                value = value.T
            target = params[torch_name]
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(f"{'+'.join(np_names)} gives shape {value.shape} but {torch_name} has "
                                 f"{tuple(target.shape)}: the configs differ")
            target.copy_(torch.from_numpy(np.ascontiguousarray(value)).to(target.dtype))

    @classmethod
    def from_numpy(cls, model, attention: str = "eager") -> "TorchMiniBERT":
        """A twin with `model`'s config (a MiniBERT) and a copy of its weights."""
        twin = cls(model.config, attention=attention)
        twin.load_numpy_state(model.state_dict())
        return twin

    def _to_numpy_names(self, tensors: dict[str, torch.Tensor | None]) -> dict[str, np.ndarray]:
        """Split and transpose torch-shaped tensors back into NumPy names and (in, out) layout."""
        out: dict[str, np.ndarray] = {}
        for np_names, torch_name, transpose in self.numpy_name_map():
            a = tensors[torch_name].detach().cpu().numpy()
            if transpose:
                a = a.T
            for name, part in zip(np_names, np.split(a, len(np_names), axis=-1)):
                out[name] = np.ascontiguousarray(part)
        return out

    def numpy_state(self) -> dict[str, np.ndarray]:
        """The weights under the NumPy names, in (in, out) layout: what MiniBERT.load_state_dict takes."""
        return self._to_numpy_names(dict(self.named_parameters()))

    def numpy_grads(self) -> dict[str, np.ndarray]:
        """The accumulated `.grad` of every parameter under the NumPy names, in (in, out) layout.

        With tied embeddings the decoder's share is already inside E_token's gradient, as in MiniBERTGradients.
        A parameter the loss did not reach (the pooler under an MLM loss) has `.grad` None and gets zeros, as its
        NumPy gradient buffer would.
        """
        params = dict(self.named_parameters())
        if all(p.grad is None for p in params.values()):
            raise ValueError("no parameter has a gradient: call backward() on a loss first")
        return self._to_numpy_names({n: torch.zeros_like(p) if p.grad is None else p.grad for n, p in params.items()})
