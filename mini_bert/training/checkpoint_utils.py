"""Activation checkpointing for MiniBERT: keep only each segment's input in the forward pass, recompute its cache
just before its backward pass. Memory for time: about one extra forward pass through the encoder layers.

(Not to be confused with `checkpointing.py`, which saves training state to disk.)

Shapes: B batch, T tokens, D hidden, L layers. Sizes are bytes of NumPy arrays.

Without checkpointing, the forward pass keeps every layer's cache until the backward pass reads it:
    cache bytes ~ embeddings + L * (one layer's cache) + MLM head.
With the L layers split into k segments, the forward pass keeps only the k segment inputs (B, T, D) and the
backward pass rebuilds one segment's caches at a time:
    peak ~ embeddings + k * (B, T, D) + (L / k) * (one layer's cache) + MLM head.
The recomputation replays dropout exactly: the generator's state is saved before each segment's forward and a
copy of the generator restarts from it, so the gradients are bit-for-bit those of the normal path, and the
model's own generator ends where the normal path leaves it.

`minibert demo checkpointing` measures both on the default model and a 32 x 128 batch.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np

from ..core.attention import mask_bias
from ..core.layers import layer_norm_forward
from ..core.gradients import mlm_cross_entropy
from ..errors import ConfigError

BATCH_FIELDS = ("input_ids", "target_ids", "mask_positions", "attention_mask", "token_type_ids")


def cache_nbytes(*objects, exclude=()) -> int:
    """Bytes of memory held by the arrays in nested dicts/lists/tuples, each underlying buffer counted once.

    Views (Q, K, V of one fused array; a layer's output that is the next layer's input) share their base's memory,
    so an array is charged as its base buffer, deduplicated by identity. Buffers in `exclude` are not counted:
    pass the model's parameter buffers (`parameter_buffers(model)`), which LayerNorm caches reference through
    gamma and which exist whether or not a cache does.
    """
    def root(a):
        while isinstance(a.base, np.ndarray):
            a = a.base
        return a

    skip = {id(root(a)) for a in exclude}
    seen: dict[int, int] = {}

    def visit(o):
        if isinstance(o, np.ndarray):
            o = root(o)
            if id(o) not in skip:
                seen[id(o)] = o.nbytes
        elif isinstance(o, dict):
            for v in o.values():
                visit(v)
        elif isinstance(o, (list, tuple)):
            for v in o:
                visit(v)

    for obj in objects:
        visit(obj)
    return int(sum(seen.values()))


def parameter_buffers(model) -> tuple[np.ndarray, ...]:
    """The flat parameter buffer(s) of a model: MiniBERT's store, and AdvancedMiniBERT's extra store."""
    return (model.store.flat,) + ((model.extra.flat,) if hasattr(model, "extra") else ())


def _field(batch, name):
    value = batch.get(name) if isinstance(batch, dict) else getattr(batch, name, None)
    if value is None and name not in ("token_type_ids", "attention_mask"):      # those two are optional
        raise ValueError(f"batch lacks {name!r}: pass a data_loader.Batch or a dict with {', '.join(BATCH_FIELDS)}")
    return value


def segment_bounds(num_layers: int, segments: int | None) -> list[range]:
    """Split layers 0 .. L-1 into `segments` consecutive ranges (None: one per layer)."""
    segments = num_layers if segments is None else segments
    if not isinstance(segments, (int, np.integer)) or not 1 <= segments <= num_layers:
        raise ConfigError(f"segments (activation checkpointing) must be an integer from 1 to the model's "
                          f"num_layers={num_layers}; got {segments!r}")
    edges = np.linspace(0, num_layers, segments + 1).round().astype(int)
    return [range(a, b) for a, b in zip(edges[:-1], edges[1:])]


# ----------------------------------------------------------------------------------------------------------------
# The recomputed layer caches


class RecomputedLayerCaches(Sequence):
    """Stands in for `cache["layers"]`: item l is layer l's cache, rebuilt on first access from its segment's
    saved input and generator state; the previous segment's caches are dropped at that moment. The backward pass
    reads layers L-1, ..., 0, so each segment is recomputed exactly once, just before its backward.

    Records `peak_bytes`: the most cache memory held at once (the rest of the cache, every saved segment input
    and the live segment's caches), measured with `cache_nbytes` after each recomputation.
    """

    def __init__(self, model, bounds, inputs, states, bias, rest_of_cache):
        self.model, self.bounds, self.inputs, self.states, self.bias = model, bounds, inputs, states, bias
        self.rest = rest_of_cache
        self.live: dict[int, dict] = {}
        self.recomputed_layers = 0
        self.params = parameter_buffers(model)
        self.peak_bytes = cache_nbytes(rest_of_cache, inputs, exclude=self.params)

    def __len__(self) -> int:
        return self.bounds[-1].stop

    def __getitem__(self, l: int) -> dict:
        if l not in self.live:
            self.live = {}                                         # free the segment whose backward is done
            s = next(i for i, r in enumerate(self.bounds) if l in r)
            rng = copy.deepcopy(self.states[s])                    # replay this segment's dropout draws
            x = self.inputs[s]
            for j in self.bounds[s]:
                x, self.live[j] = self.model._encoder_layer(x, j, self.bias, True, rng)
                self.recomputed_layers += 1
            self.peak_bytes = max(self.peak_bytes, cache_nbytes(self.rest, self.inputs, self.live,
                                                                 exclude=self.params))
        return self.live[l]


def checkpointed_loss_and_gradients(model, grads, batch, segments: int | None = None, rng=None):
    """MLM loss of `batch` (training mode, dropout on) with its gradient accumulated into `grads`, keeping only
    each segment's input during the forward pass.

    model: MiniBERT (or AdvancedMiniBERT); grads: its MiniBERTGradients (AdvancedMiniBERTGradients), which this
    adds to (zero it first for a fresh gradient). batch: a data_loader.Batch or a dict with input_ids,
    target_ids, mask_positions, attention_mask, token_type_ids. segments: how many groups the L layers form
    (default L: every layer's input is kept; 1 keeps only the encoder's input). rng: the dropout generator
    (default model.rng), advanced exactly as `model.forward` would advance it.

    Returns (loss, report) with report {"peak_cache_bytes", "saved_input_bytes", "recomputed_layers"}.
    """
    cfg = model.config
    bounds = segment_bounds(cfg.num_layers, segments)
    rng = model.rng if rng is None else rng
    input_ids, attention_mask, token_type_ids = model._check_inputs(
        _field(batch, "input_ids"), _field(batch, "attention_mask"), _field(batch, "token_type_ids"))
    target_ids, mask_positions = _field(batch, "target_ids"), np.asarray(_field(batch, "mask_positions"), bool)

    # Forward: the embeddings, then each segment keeps only its input and the generator state before it.
    x, cache = model.embed(input_ids, token_type_ids, True, rng)
    cache["attention_mask"] = attention_mask                       # as in model.forward's cache (for the report)
    bias = mask_bias(attention_mask, model.dtype)
    inputs, states = [], []
    for seg in bounds:
        inputs.append(x)
        states.append(copy.deepcopy(rng))
        for l in seg:
            x, _ = model._encoder_layer(x, l, bias, True, rng)     # the layer's cache is dropped at once
    if cfg.norm_position == "pre":
        x, cache["ln_f"] = layer_norm_forward(x, model.store.blocks["ln_f_gamma"], model.store.blocks["ln_f_beta"],
                                              cfg.layer_norm_eps)
    logits = model.mlm_head(x, cache, mask_positions)             # (N, V), at the masked positions only
    loss, dlogits = mlm_cross_entropy(logits, target_ids, mask_positions)

    # Backward: the unchanged backward pass, reading layer caches that are rebuilt segment by segment.
    layers = RecomputedLayerCaches(model, bounds, inputs, states, bias, cache)
    cache["layers"] = layers
    grads.backward_from_logits(dlogits, cache)
    return loss, {"peak_cache_bytes": layers.peak_bytes, "saved_input_bytes": cache_nbytes(inputs),
                  "recomputed_layers": layers.recomputed_layers}


def loss_and_gradients(model, grads, batch, rng=None):
    """The normal path, for comparison: the full forward cache, then the backward. Returns (loss, cache)."""
    logits, cache = model.forward(_field(batch, "input_ids"), _field(batch, "attention_mask"),
                                  _field(batch, "token_type_ids"), training=True,
                                  masked_positions=_field(batch, "mask_positions"), rng=rng)
    loss, dlogits = mlm_cross_entropy(logits, _field(batch, "target_ids"), _field(batch, "mask_positions"))
    grads.backward_from_logits(dlogits, cache)
    return loss, cache


def memory_report(model, batch, segments: int | None = None) -> dict[str, int]:
    """Cache bytes of one training forward pass, and the checkpointed peak estimated from it.

    Runs `model.forward` once (on a copy of model.rng, so the model's generator does not move) and sums the cache:
    `full_cache_bytes`; per layer `layer_cache_bytes` (largest); `rest_bytes` (embeddings and MLM head caches);
    `saved_input_bytes` (the segment inputs); `checkpointed_peak_bytes` = rest + saved inputs + the largest
    segment's caches: what `checkpointed_loss_and_gradients` holds at its peak.
    """
    bounds = segment_bounds(model.config.num_layers, segments)
    _, cache = model.forward(_field(batch, "input_ids"), _field(batch, "attention_mask"),
                             _field(batch, "token_type_ids"), training=True,
                             masked_positions=_field(batch, "mask_positions"), rng=copy.deepcopy(model.rng))
    layer_caches = cache["layers"]
    inputs = [cache["hidden_states"][seg.start] for seg in bounds]
    rest = {k: v for k, v in cache.items() if k not in ("layers", "hidden_states", "attention_weights")}
    params = parameter_buffers(model)
    peak = max(cache_nbytes(rest, inputs, [layer_caches[l] for l in seg], exclude=params) for seg in bounds)
    return {
        "full_cache_bytes": cache_nbytes(cache, exclude=params),
        "layer_cache_bytes": max(cache_nbytes(c, exclude=params) for c in layer_caches),
        "rest_bytes": cache_nbytes(rest, exclude=params),
        "saved_input_bytes": cache_nbytes(inputs),
        "checkpointed_peak_bytes": peak,
    }


# ----------------------------------------------------------------------------------------------------------------
# Demo: the default model, a 32 x 128 batch


def synthetic_batch(vocab_size: int, batch_size: int = 32, seq_len: int = 128, seed: int = 0) -> dict:
    """A masked MLM batch of random ids with some padding (rows of random length >= seq_len / 2)."""
    from ..config import CLS_ID, PAD_ID, SEP_ID
    from ..data.masking import mask_tokens

    r = np.random.default_rng(seed)
    ids = r.integers(5, vocab_size, (batch_size, seq_len))
    lengths = r.integers(seq_len // 2, seq_len + 1, batch_size)
    ids[:, 0] = CLS_ID
    for b, n in enumerate(lengths):
        ids[b, n - 1] = SEP_ID
        ids[b, n:] = PAD_ID
    input_ids, target_ids, mask_positions = mask_tokens(ids, vocab_size, rng=r)
    return {"input_ids": input_ids, "target_ids": target_ids, "mask_positions": mask_positions,
            "attention_mask": (ids != PAD_ID).astype(np.int32), "token_type_ids": np.zeros_like(ids)}
