"""Multi-head scaled dot-product self-attention with a padding mask: forward/backward pair.

Shapes: B batch, T tokens, D hidden, H heads, d = D / H head size.

    qkv = x @ W_QKV + b_QKV                  (B, T, 3D)   one matmul for Q, K and V (W_QKV = [W_Q | W_K | W_V])
    Q, K, V = split(qkv) -> heads            (B, H, T, d) each
    S = (Q / sqrt d) @ K^T + mask_bias       (B, H, T, T) mask_bias = -inf-like on padded keys
    A = softmax(S)                           (B, H, T, T) the attention weights
    C = dropout(A) @ V                       (B, H, T, d) the context, then merged to (B, T, D)
    out = C @ W_O + b_O                      (B, T, D)
"""

from __future__ import annotations

import numpy as np

from .layers import _rows, linear_forward
from .math_ops import dropout_forward, row_sum, softmax_forward


def split_heads(x, H):
    """(B, T, D) -> (B, H, T, d)."""
    B, T, D = x.shape
    return x.reshape(B, T, H, D // H).transpose(0, 2, 1, 3)


def merge_heads(x):
    """(B, H, T, d) -> (B, T, D), contiguous."""
    B, H, T, d = x.shape
    return x.transpose(0, 2, 1, 3).reshape(B, T, H * d)


def mask_bias(attention_mask, dtype):
    """(B, T) of 1 = real token, 0 = padding -> additive bias (B, 1, 1, T): 0 or a large negative number.

    A large finite number rather than -inf: a row whose keys are all padding then gets uniform weights
    instead of 0/0 = NaN (guide, section "Attention").
    """
    if attention_mask is None:
        return None
    neg = np.finfo(dtype).min / 2
    return ((1.0 - attention_mask.astype(dtype)) * dtype.type(neg))[:, None, None, :]


def attention_forward(x, W_QKV, b_QKV, W_O, b_O, num_heads, bias=None, dropout_p=0.0, rng=None, training=False):
    """x: (B, T, D) -> out: (B, T, D), cache (Q, K, V, attention_weights, context, ...)."""
    B, T, D = x.shape
    H, d = num_heads, D // num_heads
    qkv = linear_forward(x, W_QKV, b_QKV)                          # (B, T, 3D)
    # Q, K and V as head-major views of qkv, no copy: each (T, d) matrix has unit column stride and row stride 3D,
    # a layout BLAS reads as it is (its leading dimension), as fast as a contiguous copy
    QKV = qkv.reshape(B, T, 3, H, d).transpose(2, 0, 3, 1, 4)      # (3, B, H, T, d)
    Q, K, V = QKV[0], QKV[1], QKV[2]                               # (B, H, T, d) each
    scale = x.dtype.type(1.0 / np.sqrt(d))
    S = (Q * scale) @ K.transpose(0, 1, 3, 2)                      # (B, H, T, T); scaling Q is cheaper than S
    if bias is not None:
        S += bias
    A = softmax_forward(S)                                         # (B, H, T, T), rows sum to 1 (in S's memory)
    A_drop, drop_mask = dropout_forward(A, dropout_p, rng, training)
    context = np.empty((B, T, D), dtype=x.dtype, like=x)           # (B, T, D)
    np.matmul(A_drop, V, out=split_heads(context, H))              # C = A_drop V (B, H, T, d), written merged
    out = linear_forward(context, W_O, b_O)                        # (B, T, D)
    cache = {
        "x": x, "Q": Q, "K": K, "V": V, "scale": scale,
        "attention_weights": A, "attention_dropout_mask": drop_mask, "A_drop": A_drop,
        "context": context,
    }
    return out, cache


def context_softmax_backward(dC, cache, dV_out):
    """Steps 3 to 5 of the guide's attention backward (section "Attention"): back through C = A_drop V, the
    attention dropout and the softmax. dC: (B, H, T, d). Writes dV into dV_out (B, H, T, d) and returns
    dS (B, H, T, T), the gradient of the scores S before the scaling."""
    A, A_drop, V = cache["attention_weights"], cache["A_drop"], cache["V"]
    np.matmul(A_drop.transpose(0, 1, 3, 2), dC, out=dV_out)      # dV = A_drop^T dC
    dA = dC @ V.transpose(0, 1, 3, 2)                              # (B, H, T, T)
    if cache["attention_dropout_mask"] is not None:
        dA *= cache["attention_dropout_mask"]
    # softmax backward in place: dS = A * (dA - rowsum(A * dA)); the mask bias is a constant, it gets no gradient.
    # rowsum(A * dA) = rowsum(dC * C) (step 5): a sum over the head size d, not over the T keys
    C = split_heads(cache["context"], dC.shape[1])                 # (B, H, T, d), a view
    dA -= row_sum(dC * C)
    dA *= A
    return dA


def attention_backward(dout, cache, params):
    """Backward through attention (guide, section "Attention"). params: the layer's weights by name, as
    `MiniBERT.attention_params(l)` gives them (W_QKV and W_O are read).

    Returns (dx, grads), grads named like the parameters: W_QKV, b_QKV, W_O, b_O.
    """
    Q, K, scale = cache["Q"], cache["K"], cache["scale"]
    B, H, T, d = Q.shape
    D = H * d
    # out = context W_O + b_O, the Linear rule on (B*T, D) rows
    dout2 = _rows(dout)
    dW_O, db_O = _rows(cache["context"]).T @ dout2, dout2.sum(axis=0)
    dC = split_heads((dout2 @ params["W_O"].T).reshape(B, T, D), H)   # dcontext as (B, H, T, d), a view
    # dQ, dK, dV written in place into the (B, T, 3D) layout of qkv, through head-major views: no concatenate
    dqkv = np.empty((B * T, 3 * D), dtype=Q.dtype, like=Q)
    dQKV = dqkv.reshape(B, T, 3, H, d).transpose(2, 0, 3, 1, 4)    # (3, B, H, T, d) views
    dS = context_softmax_backward(dC, cache, dQKV[2])              # (B, H, T, T)
    dS *= scale                                                    # S = scale Q K^T
    np.matmul(dS, K, out=dQKV[0])                                  # dQ = scale dS K
    np.matmul(dS.transpose(0, 1, 3, 2), Q, out=dQKV[1])            # dK = scale dS^T Q
    # qkv = x W_QKV + b_QKV, the Linear rule: dW_QKV = x^T dqkv, whose first D columns are dLoss/dW_Q
    dW_QKV, db_QKV = _rows(cache["x"]).T @ dqkv, dqkv.sum(axis=0)
    dx = (dqkv @ params["W_QKV"].T).reshape(B, T, D)
    return dx, {"W_QKV": dW_QKV, "b_QKV": db_QKV, "W_O": dW_O, "b_O": db_O}
