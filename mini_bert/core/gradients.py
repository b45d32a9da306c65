"""MiniBERTGradients: the backward pass of MiniBERT, written by hand, reading the forward cache.

It reads like the forward pass in reverse. Gradients accumulate with `+=` into one flat buffer with the same
layout as the parameters (`self.gradients["W_Q_0"]` is a view), so the tied token embedding simply receives both
its input-side and its decoder-side contribution. Each override of the forward has its backward here:
`attention_backward` for `model._attention_forward`, `_embedding_lookup_backward` for `model._embedding_lookup`.

    mlm_loss_and_backward(batch)  ->  model.forward, mlm_cross_entropy, mlm_head_backward (each returns), then
        backward_from_hidden  ->  _encoder_layer_backward (per layer)  ->  attention_backward (core/attention.py)

Shapes: B batch, T tokens, D hidden, V vocab, N masked positions, C labels. dX means dLoss/dX.
"""

from __future__ import annotations

import numpy as np

from .attention import attention_backward
from .embeddings import bert_embeddings_backward
from .layers import ffn_backward, layer_norm_backward, linear_backward, linear_backward_transposed
from .math_ops import (ACTIVATION_BACKWARD, cross_entropy_backward, cross_entropy_forward, dropout_backward,
                       tanh_backward)
from .parameters import ParameterStore


def mlm_cross_entropy(logits, target_ids, mask_positions):
    """Mean cross-entropy over the masked positions, and dLoss/dlogits with logits' shape.

    logits: (B, T, V) with mask_positions (B, T) bool, or (N, V) already gathered at those positions (the cheap
    path: `model.forward(..., masked_positions=mask_positions)`). target_ids: (B, T) original ids.
    Returns (loss, grad_logits).
    """
    mask_positions = np.asarray(mask_positions, dtype=bool, like=logits)
    targets = np.asarray(target_ids, like=logits)[mask_positions]  # (N,)
    if logits.ndim == 3:
        if logits.shape[:2] != mask_positions.shape:
            raise ValueError(f"logits {logits.shape[:2]} and mask_positions {mask_positions.shape} disagree")
        loss, probs = cross_entropy_forward(logits[mask_positions], targets)
        grad = np.zeros_like(logits)
        grad[mask_positions] = cross_entropy_backward(probs, targets)
        return loss, grad
    if logits.shape[0] != targets.shape[0]:
        raise ValueError(f"logits has {logits.shape[0]} rows but mask_positions selects {targets.shape[0]}")
    loss, probs = cross_entropy_forward(logits, targets)
    return loss, cross_entropy_backward(probs, targets, out=probs)    # probs is this function's own: reuse it


class GradientBuffer:
    """A flat gradient buffer `self.store` with the parameters' layout, and what every user of one reads."""

    store: ParameterStore

    @property
    def gradients(self) -> dict[str, np.ndarray]:
        """Named views of the gradient buffer, under the same public names as model.params."""
        return self.store.views

    @property
    def flat(self) -> np.ndarray:
        return self.store.flat

    def zero_gradients(self) -> None:
        self.store.zero()

    def global_norm(self) -> float:
        """sqrt of the sum of squares of every gradient (the quantity clipping bounds)."""
        return float(np.sqrt(np.dot(self.flat, self.flat)))


class MiniBERTGradients(GradientBuffer):
    """Gradient buffers for `model` and the backward pass that fills them."""

    # layer l's attention backward, (dout, cache, model.attention_params(l)) -> (dx, grads named like the params):
    # the one call from an encoder layer's backward into attention; AdvancedMiniBERTGradients puts the variant
    # attention's here
    attention_backward = staticmethod(attention_backward)

    def __init__(self, model):
        self.model = model
        self.store = ParameterStore(model.store.specs, model.dtype)

    # ----------------------------------------------------------------------------------------------------------
    # Losses

    def compute_mlm_loss_and_gradients(self, logits, target_ids, mask_positions):
        """The notes' name for `mlm_cross_entropy` (the one masked-LM loss): (loss, dLoss/dlogits)."""
        return mlm_cross_entropy(logits, target_ids, mask_positions)

    def compute_classification_loss_and_gradients(self, logits, labels):
        """Mean cross-entropy of class logits (B, C) against labels (B,); returns (loss, dlogits)."""
        labels = np.asarray(labels, like=logits)
        loss, probs = cross_entropy_forward(logits, labels)
        return loss, cross_entropy_backward(probs, labels)

    # ----------------------------------------------------------------------------------------------------------
    # Backward passes

    def mlm_loss_and_backward(self, batch, rng=None, loss_scale: float = 1.0) -> tuple[float, dict]:
        """The masked-LM loss of `batch` and its gradient, in place of what this buffer held: zero the buffer,
        forward in training mode (logits at the masked positions only), `mlm_cross_entropy`, then the backward.
        batch: anything with input_ids, target_ids, mask_positions, attention_mask, token_type_ids (B, T).
        loss_scale multiplies dLoss/dlogits (a thread's share n_i / N of a split batch, so that parts add up).
        Returns (loss, cache). (guide, section "MLM head and tied decoder", then section "Encoder layer".)"""
        self.zero_gradients()
        logits, cache = self.model.forward(batch.input_ids, batch.attention_mask, batch.token_type_ids,
                                           training=True, masked_positions=batch.mask_positions, rng=rng)
        loss, dlogits = mlm_cross_entropy(logits, batch.target_ids, batch.mask_positions)
        if loss_scale != 1.0:
            dlogits *= dlogits.dtype.type(loss_scale)
        self.backward_from_hidden(self.mlm_head_backward(dlogits, cache), cache)
        return loss, cache

    def backward_from_logits(self, grad_logits, cache) -> None:
        """Accumulate dLoss/dparams given dLoss/dlogits of `model.forward`: the MLM head, then the encoder (guide,
        section "MLM head and tied decoder")."""
        self.backward_from_hidden(self.mlm_head_backward(grad_logits, cache), cache)

    def mlm_head_backward(self, grad_logits, cache):
        """Backward through the MLM head and the tied decoder (guide, section "MLM head and tied decoder"):
        accumulates their gradients and returns dLoss/d(last hidden state) (B, T, D)."""
        model, G, P = self.model, self.store.blocks, self.model.store.blocks
        cfg, head = model.config, cache["mlm_head"]
        tied = cfg.tie_word_embeddings
        if tied:
            # logits = t E_token^T + b: the decoder's share of the tied embedding, dlogits^T t (V, D), is formed in
            # E_token's own layout; forming t^T dlogits (D, V) and adding its transpose was 1.5x slower
            dt, dE, db_dec = linear_backward_transposed(grad_logits, head["t"], P["E_token"])
            G["E_token"] += dE
        else:
            dt, dW_dec, db_dec = linear_backward(grad_logits, head["t"], P["W_decoder"])
            G["W_decoder"] += dW_dec
        G["b_decoder"] += db_dec
        dt, dg, db = layer_norm_backward(dt, head["ln"])
        G["ln_mlm_gamma"] += dg
        G["ln_mlm_beta"] += db
        dt = ACTIVATION_BACKWARD[cfg.activation](dt, head["act"])
        dh, dW, db = linear_backward(dt, head["h"], P["W_mlm"])
        G["W_mlm"] += dW
        G["b_mlm"] += db
        if "masked_index" in cache:                                # scatter the N rows back to (B, T, D)
            B, T = cache["input_ids"].shape
            full = np.zeros((B * T, dh.shape[-1]), dtype=dh.dtype, like=dh)
            full[cache["masked_index"]] = dh                       # indices are unique: plain assignment
            dh = full.reshape(B, T, -1)
        return dh

    def backward_from_class_logits(self, grad_logits, cache) -> None:
        """Accumulate gradients given dLoss/d(class logits) (B, C) of `model.forward_classifier` (guide, section
        "Pooler and classifier")."""
        G, P, c = self.store.blocks, self.model.store.blocks, cache["classifier"]
        ddropped, dW, db = linear_backward(grad_logits, c["dropped"], P["W_cls"])
        G["W_cls"] += dW
        G["b_cls"] += db
        dpooled = dropout_backward(ddropped, c["drop_mask"])
        dz = tanh_backward(dpooled, c["tanh"])
        dcls, dW, db = linear_backward(dz, c["cls"], P["W_pool"])
        G["W_pool"] += dW
        G["b_pool"] += db
        h = cache["hidden_states"][-1]
        if c["pool_weights"] is None:           # u = h_[CLS]
            dh = np.zeros_like(h)
            dh[:, 0] = dcls
        else:                                   # u = sum_t w_t h_t  =>  dh_t = w_t du
            dh = c["pool_weights"][:, :, None] * dcls[:, None, :]                  # (B, T, D)
        self.backward_from_hidden(dh, cache)

    def backward_from_hidden(self, dh, cache) -> None:
        """Backward through the encoder from dLoss/d(last hidden state) (B, T, D): layers in reverse, then embeddings
        (guide, section "Encoder layer"; pre-LN starts with ln_f)."""
        G, cfg = self.store.blocks, self.model.config
        if cfg.norm_position == "pre":
            dh, dg, db = layer_norm_backward(dh, cache["ln_f"])
            G["ln_f_gamma"] += dg
            G["ln_f_beta"] += db
        for l in reversed(range(cfg.num_layers)):
            dh = self._encoder_layer_backward(dh, cache["layers"][l], l)
        de = dropout_backward(dh, cache["emb_drop"])
        if cfg.embedding_layer_norm:
            de, dg, db = layer_norm_backward(de, cache["ln_emb"])
            G["ln_emb_gamma"] += dg
            G["ln_emb_beta"] += db
        self._embedding_lookup_backward(de, cache)

    def _encoder_layer_backward(self, dx2, c, l):
        """The encoder layer in reverse (guide, section "Encoder layer"). Returns dLoss/d(layer input)."""
        cfg = self.model.config
        G, P = self.store.blocks, self.model.store.blocks
        W = lambda k: P[f"{k}_{l}"]  # noqa: E731

        def acc(k, g):
            G[f"{k}_{l}"] += g

        if cfg.norm_position == "post":
            # x2 = LN2(x1 + drop(FFN(x1))): the residual sum's gradient goes both into the FFN and straight to x1
            ds2, dg, db = layer_norm_backward(dx2, c["ln2"])
            acc("ln2_gamma", dg), acc("ln2_beta", db)
            df = dropout_backward(ds2, c["ffn_drop"])
            dx1, dW1, db1, dW2, db2 = ffn_backward(df, c["ffn"], W("W1"), W("W2"))
            acc("W1", dW1), acc("b1", db1), acc("W2", dW2), acc("b2", db2)
            dx1 += ds2
            # x1 = LN1(x + drop(Attn(x)))
            ds1, dg, db = layer_norm_backward(dx1, c["ln1"])
            acc("ln1_gamma", dg), acc("ln1_beta", db)
            da = dropout_backward(ds1, c["attn_drop"])
            dx, grads = self.attention_backward(da, c["attn"], self.model.attention_params(l))
            self._accumulate(grads, l)
            dx += ds1
            return dx
        # pre-LN: x2 = x1 + drop(FFN(LN2(x1))), x1 = x + drop(Attn(LN1(x)))
        df = dropout_backward(dx2, c["ffn_drop"])
        dn2, dW1, db1, dW2, db2 = ffn_backward(df, c["ffn"], W("W1"), W("W2"))
        acc("W1", dW1), acc("b1", db1), acc("W2", dW2), acc("b2", db2)
        dx1, dg, db = layer_norm_backward(dn2, c["ln2"])
        acc("ln2_gamma", dg), acc("ln2_beta", db)
        dx1 += dx2
        da = dropout_backward(dx1, c["attn_drop"])
        dn1, grads = self.attention_backward(da, c["attn"], self.model.attention_params(l))
        self._accumulate(grads, l)
        dx, dg, db = layer_norm_backward(dn1, c["ln1"])
        acc("ln1_gamma", dg), acc("ln1_beta", db)
        dx += dx1
        return dx

    def _embedding_lookup_backward(self, de, cache) -> None:
        """Backward of `model._embedding_lookup`: scatter-add de (B, T, D) into dE_token, dE_pos and dE_type (guide,
        section "Embeddings")."""
        G = self.store.blocks
        bert_embeddings_backward(de, cache["input_ids"], cache["token_type_ids"], G["E_token"], G["E_pos"], G["E_type"])

    def _accumulate(self, grads, l) -> None:
        """Add layer l's parameter gradients (named without the `_{l}` suffix) into the buffer."""
        G = self.store.blocks
        for k, g in grads.items():
            G[f"{k}_{l}"] += g
