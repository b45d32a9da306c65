"""ELECTRA's replaced-token detection (Clark et al. 2020): a generator, a discriminator, and the backward of both.

A small generator (a MiniBERT of the discriminator's depth and a fraction of its width) is trained as a masked LM
on the masked batch. Its samples fill the masked positions, and the discriminator (the encoder that is kept,
fine-tuned and probed) reads that corrupted text and predicts, for every real token, whether it was replaced:

    x~_i ~ softmax(generator logits_i)          at each masked position i: sampled, so no gradient crosses it
    c    = original ids, masked positions set to x~                                         (B, T)
    y_t  = [c_t != original_t]                  a sample equal to the original counts as original (as the paper)
    z    = h w_rtd + b_rtd                      h: the discriminator's last hidden state (B, T, D) -> z (B, T)
    L_disc = sum over real tokens of (softplus(z_t) - y_t z_t) / (number of real tokens)
    L    = L_gen + lambda L_disc                lambda = 50, the paper's weight

No gradient crosses the sampling, so the generator learns from L_gen alone and the discriminator from
lambda L_disc alone; one optimizer trains both over one flat buffer (discriminator, then generator, then the head).
The discriminator is a plain MiniBERT: a checkpoint stores it as the model, and the generator and head beside it.

    ElectraGradients.electra_loss_and_backward(batch, rng)  ->  generator: forward, mlm_cross_entropy,
        MiniBERTGradients.backward_from_logits;  sample_from_logits;  discriminator: encode, rtd_head_forward,
        binary_cross_entropy, rtd_head_backward, MiniBERTGradients.backward_from_hidden

Shapes: B batch, T tokens, D hidden, V vocab, N masked positions. dX means dLoss/dX.
"""

from __future__ import annotations

import numpy as np

from ..config import ModelConfig
from .gradients import GradientBuffer, MiniBERTGradients, mlm_cross_entropy
from .layers import _rows
from .math_ops import softmax_forward
from .model import MiniBERT
from .parameters import ParameterStore, ParamSpec

GENERATOR_PREFIX = "generator."
RTD_PARAMS = ("rtd_w", "rtd_b")


# --------------------------------------------------------------------------------------------------------------
# The replaced-token head and its loss (guide, section "Replaced-token detection")


def rtd_head_forward(h, w, b):
    """z = h w + b: one logit per token. h (B, T, D), w (D, 1), b (1,) -> z (B, T)."""
    return (h @ w)[..., 0] + b[0]


def rtd_head_backward(dz, h, w):
    """Backward of `rtd_head_forward`: dh = dz w^T (B, T, D), dw = h^T dz (D, 1), db = sum dz (1,) (guide, section
    "Replaced-token detection")."""
    dh = dz[..., None] * w[:, 0]                                    # (B, T, 1) * (D,) -> (B, T, D)
    dw = _rows(h).T @ dz.reshape(-1, 1)                            # (D, B*T) @ (B*T, 1)
    return dh, dw, dz.sum(keepdims=True).reshape(1)


def sigmoid(z):
    """1 / (1 + e^-z), computed as (1 + tanh(z/2)) / 2: no overflow for any z."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def binary_cross_entropy(z, y, weights, count: float):
    """Sum over tokens of weights * (softplus(z) - y z), divided by `count`, and its gradient dL/dz.

    z: logits (B, T); y: 0/1 labels (B, T); weights: 1 for a token that counts (a real token), 0 for padding.
    count: the divisor (the real tokens of the whole batch, so that the parts of a split batch add up).
    softplus(z) = max(z, 0) + log(1 + e^-|z|) stays finite for every z. dL/dz = weights (sigmoid(z) - y) / count.
    Returns (loss, dz). (guide, section "Replaced-token detection".)"""
    y = y.astype(z.dtype)
    w = weights.astype(z.dtype)
    per_token = np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z))) - y * z
    loss = float((per_token * w).sum()) / count
    dz = (sigmoid(z) - y) * (w / z.dtype.type(count))
    return loss, dz


def sample_from_logits(logits, rng: np.random.Generator):
    """One id per row drawn from softmax(logits): logits (N, V) -> ids (N,), by inverting the cumulative sum at a
    uniform draw per row (u scaled by the row's total, so rounding in the sum cannot push it past the end)."""
    cdf = np.cumsum(softmax_forward(logits), axis=-1)              # (N, V), rows end at ~1
    u = np.asarray(rng.random((logits.shape[0], 1)), dtype=cdf.dtype, like=cdf) * cdf[:, -1:]
    return np.minimum((cdf < u).sum(axis=-1), logits.shape[-1] - 1)


# --------------------------------------------------------------------------------------------------------------
# The pair of models, one flat buffer


def generator_config(config: ModelConfig, width: float) -> ModelConfig:
    """The generator's shape: the discriminator's depth, vocabulary and head count, `width` of its hidden and
    feed-forward sizes (rounded to a multiple of the head count)."""
    H = config.num_heads
    D = max(H, int(round(config.hidden_size * width / H)) * H)
    F = max(1, int(round(config.intermediate_size * D / config.hidden_size)))
    return config.model_copy(update={"hidden_size": D, "intermediate_size": F})


class Electra:
    """The discriminator (a MiniBERT of `config`), the generator (a MiniBERT of `generator`) and the replaced-token
    head (rtd_w (D, 1), rtd_b (1,)), all in one flat buffer: `store` holds them in that order, and the two models'
    own stores are views into it, so an optimizer over `store.flat` trains all three.

    Initial weights: the discriminator's are those of MiniBERT(config, seed); the generator's and the head's are
    drawn from generators derived from the seed."""

    def __init__(self, config: ModelConfig, generator: ModelConfig, seed: int = 0):
        if generator.vocab_size != config.vocab_size or generator.max_position_embeddings != \
                config.max_position_embeddings:
            raise ValueError("the generator must share the discriminator's vocabulary and positions")
        self.config, self.dtype = config, np.dtype(config.dtype)
        self.discriminator = MiniBERT(config, seed=seed)
        self.generator = MiniBERT(generator, seed=seed)
        self.generator.init_weights(np.random.default_rng([seed, 2]))
        D = config.hidden_size
        specs = (list(self.discriminator.store.specs)
                 + [ParamSpec(GENERATOR_PREFIX + s.name, s.shape, s.kind, tuple(GENERATOR_PREFIX + p for p in s.parts))
                    for s in self.generator.store.specs]
                 + [ParamSpec("rtd_w", (D, 1), "matrix"), ParamSpec("rtd_b", (1,), "bias")])
        self.store = ParameterStore(specs, self.dtype)
        self._bind(self.store, self.discriminator.store, self.generator.store, copy=True)
        self.store.blocks["rtd_w"][...] = np.random.default_rng([seed, 3]).normal(
            0.0, config.initializer_range, size=(D, 1))

    @staticmethod
    def _bind(whole: ParameterStore, first: ParameterStore, second: ParameterStore, copy: bool) -> None:
        """Make `first` and `second` views of the start of `whole.flat` (after copying their values in)."""
        n1, n2 = first.flat.size, second.flat.size
        if copy:
            whole.flat[:n1], whole.flat[n1:n1 + n2] = first.flat, second.flat
        first.rebind(whole.flat[:n1])
        second.rebind(whole.flat[n1:n1 + n2])

    def model_slices(self, flat: np.ndarray) -> dict[str, list[np.ndarray]]:
        """Views of a buffer laid out like `store.flat`, model by model: "discriminator" (its tensors and the head's,
        which it alone trains) and "generator". Together they cover the buffer once."""
        n1, n2 = self.discriminator.store.flat.size, self.generator.store.flat.size
        return {"discriminator": [flat[:n1], flat[n1 + n2:]], "generator": [flat[n1:n1 + n2]]}

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Every trained tensor: the discriminator's names, generator.<name>, rtd_w, rtd_b."""
        return self.store.views

    @property
    def num_parameters(self) -> int:
        return int(self.store.flat.size)

    def state_dict(self) -> dict[str, np.ndarray]:
        """The discriminator's tensors: what a checkpoint stores as its model (every tool loads it as a MiniBERT)."""
        return self.discriminator.state_dict()

    def auxiliary_state_dict(self) -> dict[str, np.ndarray]:
        """The generator's tensors (prefixed) and the head's: what a checkpoint stores beside the model."""
        out = {GENERATOR_PREFIX + k: v for k, v in self.generator.state_dict().items()}
        out.update({k: np.ascontiguousarray(self.params[k]) for k in RTD_PARAMS})
        return out

    def load_auxiliary_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Load what `auxiliary_state_dict` returned. A missing or misshapen tensor raises ValueError naming it."""
        expected = set(self.auxiliary_state_dict())
        if set(state) != expected:
            names = sorted(expected.symmetric_difference(state))[:10]
            raise ValueError(f"the ELECTRA tensors do not match this configuration: {', '.join(names)}")
        n = len(GENERATOR_PREFIX)
        self.generator.load_state_dict({k[n:]: v for k, v in state.items() if k.startswith(GENERATOR_PREFIX)})
        for k in RTD_PARAMS:
            if tuple(state[k].shape) != tuple(self.params[k].shape):
                raise ValueError(f"tensor {k!r} has shape {tuple(state[k].shape)}, expected "
                                 f"{tuple(self.params[k].shape)}")
            self.params[k][...] = state[k]

    def corrupt(self, batch, gen_logits, rng):
        """The discriminator's input and labels from the generator's logits at the masked positions (N, V):
        (corrupted ids (B, T), replaced (B, T) bool)."""
        corrupted = np.array(batch.target_ids, copy=True)
        mask = np.asarray(batch.mask_positions, dtype=bool)
        corrupted[mask] = sample_from_logits(gen_logits, rng).astype(corrupted.dtype)
        return corrupted, corrupted != np.asarray(batch.target_ids)


class ElectraGradients(GradientBuffer):
    """Gradient buffers for an Electra (the layout of `model.store`) and the backward pass that fills them."""

    def __init__(self, model: Electra):
        self.model = model
        self.store = ParameterStore(model.store.specs, model.dtype)
        self.discriminator = MiniBERTGradients(model.discriminator)
        self.generator = MiniBERTGradients(model.generator)
        Electra._bind(self.store, self.discriminator.store, self.generator.store, copy=False)

    def electra_loss_and_backward(self, batch, rng, weight: float = 50.0, mlm_scale: float = 1.0,
                                  real_tokens: int | None = None) -> tuple[float, dict]:
        """L = L_gen + weight * L_disc of `batch` and its gradient, in place of what this buffer held.

        batch: a masked batch (input_ids with the masked positions replaced, target_ids the originals).
        mlm_scale multiplies the generator's dLoss/dlogits (a thread's share n_i / N of the masked tokens);
        real_tokens divides the discriminator's loss (default: this batch's real tokens), so that the parts of a
        split batch add up to the whole. Returns (loss, stats): the generator's and discriminator's losses, and
        the discriminator's correct predictions and real tokens. (guide, section "Replaced-token detection".)"""
        self.zero_gradients()
        gen, disc, P = self.model.generator, self.model.discriminator, self.model.store.blocks
        logits, gcache = gen.forward(batch.input_ids, batch.attention_mask, batch.token_type_ids, training=True,
                                     masked_positions=batch.mask_positions, rng=rng)            # (N, V)
        gen_loss, dlogits = mlm_cross_entropy(logits, batch.target_ids, batch.mask_positions)
        if mlm_scale != 1.0:
            dlogits *= dlogits.dtype.type(mlm_scale)
        corrupted, replaced = self.model.corrupt(batch, logits, rng)
        self.generator.backward_from_logits(dlogits, gcache)

        h, dcache = disc.encode(corrupted, batch.attention_mask, batch.token_type_ids, training=True, rng=rng)
        z = rtd_head_forward(h, P["rtd_w"], P["rtd_b"])                                         # (B, T)
        real = np.ones(z.shape, dtype=bool) if batch.attention_mask is None else \
            np.asarray(batch.attention_mask).astype(bool)
        count = int(real.sum()) if real_tokens is None else real_tokens
        disc_loss, dz = binary_cross_entropy(z, replaced, real, count)
        dz *= dz.dtype.type(weight)
        dh, dw, db = rtd_head_backward(dz, h, P["rtd_w"])
        G = self.store.blocks
        G["rtd_w"] += dw
        G["rtd_b"] += db
        self.discriminator.backward_from_hidden(dh, dcache)
        correct = int((((z > 0) == replaced) & real).sum())
        stats = {"generator_loss": gen_loss, "discriminator_loss": disc_loss, "rtd_correct": correct,
                 "real_tokens": int(real.sum()), "replaced": int((replaced & real).sum())}
        return gen_loss * mlm_scale + weight * disc_loss, stats
