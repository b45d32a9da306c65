"""One contiguous buffer holding every parameter, exposed as named views.

The optimizer updates the whole model with a handful of vectorised operations on `store.flat`, while the model
code reads `store["W_Q_0"]`. Gradients live in a second store with the same layout, so `grads.flat` lines up with
`params.flat` element for element.

Q, K and V of a layer are stored side by side as one fused `(D, 3D)` block `W_QKV_{l}` (and `b_QKV_{l}`), so the
forward pass computes all three with one large matmul; `W_Q_{l}`, `W_K_{l}`, `W_V_{l}` are column views of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..config import ModelConfig


@dataclass(frozen=True)
class ParamSpec:
    """A named block of the buffer. kind: "matrix" | "embedding" | "bias" | "norm_gain" | "norm_bias".

    `parts` splits a fused block into public names along its last axis (the Q | K | V columns).
    """

    name: str
    shape: tuple[int, ...]
    kind: str
    parts: tuple[str, ...] = field(default=())

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


def parameter_specs(cfg: ModelConfig) -> list[ParamSpec]:
    """The model's parameters in buffer order. docs/MODEL.md lists them with their shapes."""
    D, F, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    specs = [
        ParamSpec("E_token", (V, D), "embedding"),
        ParamSpec("E_pos", (cfg.max_position_embeddings, D), "embedding"),
        ParamSpec("E_type", (cfg.type_vocab_size, D), "embedding"),
    ]
    if cfg.embedding_layer_norm:
        specs += [ParamSpec("ln_emb_gamma", (D,), "norm_gain"), ParamSpec("ln_emb_beta", (D,), "norm_bias")]
    for l in range(cfg.num_layers):
        specs += [
            ParamSpec(f"W_QKV_{l}", (D, 3 * D), "matrix", (f"W_Q_{l}", f"W_K_{l}", f"W_V_{l}")),
            ParamSpec(f"b_QKV_{l}", (3 * D,), "bias", (f"b_Q_{l}", f"b_K_{l}", f"b_V_{l}")),
            ParamSpec(f"W_O_{l}", (D, D), "matrix"),
            ParamSpec(f"b_O_{l}", (D,), "bias"),
            ParamSpec(f"ln1_gamma_{l}", (D,), "norm_gain"),
            ParamSpec(f"ln1_beta_{l}", (D,), "norm_bias"),
            ParamSpec(f"W1_{l}", (D, F), "matrix"),
            ParamSpec(f"b1_{l}", (F,), "bias"),
            ParamSpec(f"W2_{l}", (F, D), "matrix"),
            ParamSpec(f"b2_{l}", (D,), "bias"),
            ParamSpec(f"ln2_gamma_{l}", (D,), "norm_gain"),
            ParamSpec(f"ln2_beta_{l}", (D,), "norm_bias"),
        ]
    if cfg.norm_position == "pre":
        specs += [ParamSpec("ln_f_gamma", (D,), "norm_gain"), ParamSpec("ln_f_beta", (D,), "norm_bias")]
    specs += [
        ParamSpec("W_mlm", (D, D), "matrix"),
        ParamSpec("b_mlm", (D,), "bias"),
        ParamSpec("ln_mlm_gamma", (D,), "norm_gain"),
        ParamSpec("ln_mlm_beta", (D,), "norm_bias"),
    ]
    if not cfg.tie_word_embeddings:
        specs.append(ParamSpec("W_decoder", (D, V), "matrix"))
    specs += [
        ParamSpec("b_decoder", (V,), "bias"),
        ParamSpec("W_pool", (D, D), "matrix"),
        ParamSpec("b_pool", (D,), "bias"),
        ParamSpec("W_cls", (D, cfg.num_labels), "matrix"),
        ParamSpec("b_cls", (cfg.num_labels,), "bias"),
    ]
    return specs


def layer_of(name: str) -> int | None:
    """Encoder layer index of a parameter name (`W1_2` -> 2), None for embeddings and heads."""
    head, _, tail = name.rpartition("_")
    return int(tail) if head and tail.isdigit() else None


class ParameterStore:
    """A flat buffer plus named views. `store[name]` works for public names (W_Q_0) and fused ones (W_QKV_0)."""

    def __init__(self, specs: list[ParamSpec], dtype):
        self.specs = specs
        self.dtype = np.dtype(dtype)
        self.rebind(np.zeros(sum(s.size for s in specs), dtype=self.dtype))

    # Pickling (and copy.deepcopy) would copy every view into an array of its own, silently cutting it off from
    # `flat`; a store is therefore saved as its buffer alone, and the views are rebuilt on it when loaded.
    def __getstate__(self) -> dict:
        return {"specs": self.specs, "dtype": self.dtype, "flat": self.flat}

    def __setstate__(self, state: dict) -> None:
        self.specs, self.dtype = state["specs"], state["dtype"]
        self.rebind(state["flat"])

    def rebind(self, flat) -> None:
        """Make `flat` the buffer and rebuild every view on it: after a copy, or to move the parameters to another
        array module with the same API (scripts/cupy_check.py puts them on a GPU with CuPy)."""
        size = sum(s.size for s in self.specs)
        if flat.shape != (size,):
            raise ValueError(f"a flat buffer of {size} values is needed; got shape {flat.shape}")
        self.flat = flat
        self.blocks: dict[str, np.ndarray] = {}    # buffer blocks, fused ones included: what the math uses
        self.views: dict[str, np.ndarray] = {}     # public names: what users, checkpoints and tools see
        self.slices: dict[str, slice] = {}          # where each block lies in `flat`
        offset = 0
        for s in self.specs:
            block = self.flat[offset:offset + s.size].reshape(s.shape)
            self.blocks[s.name] = block
            self.slices[s.name] = slice(offset, offset + s.size)
            offset += s.size
            if s.parts:
                width = s.shape[-1] // len(s.parts)
                for i, part in enumerate(s.parts):
                    self.views[part] = block[..., i * width:(i + 1) * width]
            else:
                self.views[s.name] = block

    def __getitem__(self, name: str) -> np.ndarray:
        return self.views[name] if name in self.views else self.blocks[name]

    def __contains__(self, name: str) -> bool:
        return name in self.views or name in self.blocks

    def names(self) -> list[str]:
        return list(self.views)

    def items(self):
        return self.views.items()

    def zero(self) -> None:
        self.flat.fill(0)

    def per_element(self, value_of_spec) -> np.ndarray:
        """A flat array aligned with `flat`, filled block by block with value_of_spec(spec) (e.g. a decay mask)."""
        out = np.empty_like(self.flat)
        for s in self.specs:
            out[self.slices[s.name]] = value_of_spec(s)
        return out
