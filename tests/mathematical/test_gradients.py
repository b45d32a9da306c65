"""Every backward pass against float64 central differences: each op alone, then the whole model.

Each test prints the observed maximum relative error (run `pytest -s tests/test_gradients.py` to see them).
"""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck import TOL, check, model_case, numeric_gradient, relative_error, report
from mini_bert import MiniBERT, MiniBERTGradients, ModelConfig, mlm_cross_entropy
from mini_bert.core import attention as att
from mini_bert.core import embeddings as emb
from mini_bert.core import layers, math_ops

rng = np.random.default_rng(0)


def randn(*shape, scale=1.0):
    return rng.normal(size=shape) * scale


# --------------------------------------------------------------------------------------------------------------
# One line per op (tinygrad style); edge cases get their own line.

def test_softmax():
    report("softmax", check(lambda x: (y := math_ops.softmax_forward(x), y),
                            lambda dy, y: math_ops.softmax_backward(dy, y), randn(3, 4, 7)))


def test_softmax_large_inputs_stay_finite_and_correct():
    x = randn(2, 5) * 1e3
    y = math_ops.softmax_forward(x)
    assert np.isfinite(y).all() and np.allclose(y.sum(-1), 1)
    report("softmax (scale 5)", check(lambda x: (y := math_ops.softmax_forward(x), y),
                                      lambda dy, y: math_ops.softmax_backward(dy, y), randn(2, 5) * 5))


def test_cross_entropy():
    targets = np.array([0, 3, 5, 1])
    logits = randn(4, 6)
    loss, probs = math_ops.cross_entropy_forward(logits, targets)
    g = math_ops.cross_entropy_backward(probs, targets)
    num = numeric_gradient(lambda: math_ops.cross_entropy_forward(logits, targets)[0], logits)
    report("cross-entropy", relative_error(g, num))
    # and the value: -log softmax at the target, averaged
    z = logits - logits.max(1, keepdims=True)
    ref = np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(4), targets])
    assert abs(loss - ref) < 1e-12


@pytest.mark.parametrize("name", ["relu", "gelu", "gelu_tanh"])
def test_activation(name):
    x = randn(4, 9) * 2
    x[np.abs(x) < 1e-3] = 0.5   # keep ReLU away from its kink, where finite differences are undefined
    report(name, check(math_ops.ACTIVATION_FORWARD[name], math_ops.ACTIVATION_BACKWARD[name], x))


def test_gelu_large_inputs():
    x = np.array([-40.0, -10.0, 0.0, 10.0, 40.0])
    for name in ("gelu", "gelu_tanh"):
        y, c = math_ops.ACTIVATION_FORWARD[name](x)
        d = math_ops.ACTIVATION_BACKWARD[name](np.ones_like(x), c)
        assert np.isfinite(y).all() and np.isfinite(d).all()
        np.testing.assert_allclose(y[[0, -1]], [0.0, 40.0], atol=1e-12)
        np.testing.assert_allclose(d[[0, -1]], [0.0, 1.0], atol=1e-12)


def test_gelu_is_the_exact_erf_form():
    from scipy.stats import norm
    x = np.linspace(-4, 4, 17)
    np.testing.assert_allclose(math_ops.gelu_forward(x)[0], x * norm.cdf(x), rtol=1e-12, atol=1e-15)


def test_tanh():
    report("tanh", check(math_ops.tanh_forward, math_ops.tanh_backward, randn(3, 5)))


def test_dropout_with_fixed_mask():
    x = randn(4, 6)
    fwd = lambda x: math_ops.dropout_forward(x, 0.3, np.random.default_rng(1), True)  # noqa: E731
    y, mask = fwd(x)
    assert set(np.unique(mask)) <= {0.0, 1 / 0.7}
    report("dropout", check(fwd, math_ops.dropout_backward, x))
    # expectation is preserved: E[y] = x
    big = np.ones(200_000)
    assert abs(math_ops.dropout_forward(big, 0.3, np.random.default_rng(2), True)[0].mean() - 1) < 0.01
    assert math_ops.dropout_forward(x, 0.3, None, False)[1] is None   # identity at evaluation


def test_linear():
    def fwd(x, W, b):
        return layers.linear_forward(x, W, b), (x, W)
    report("linear", check(fwd, lambda dy, c: layers.linear_backward(dy, *c),
                           randn(2, 3, 4), randn(4, 5), randn(5)))


def test_layer_norm():
    def fwd(x, gamma, beta):
        return layers.layer_norm_forward(x, gamma, beta, 1e-5)
    report("layer_norm", check(fwd, layers.layer_norm_backward, randn(2, 3, 5), randn(5), randn(5)))


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_ffn(activation):
    def fwd(x, W1, b1, W2, b2):
        y, c = layers.ffn_forward(x, W1, b1, W2, b2, activation)
        return y, (c, W1, W2)
    report(f"ffn ({activation})", check(
        fwd, lambda dy, c: layers.ffn_backward(dy, *c),
        randn(2, 3, 4), randn(4, 6), randn(6), randn(6, 4), randn(4)))


def test_embeddings_scatter_add():
    ids = np.array([[1, 2, 1], [0, 1, 3]])        # id 1 used three times: its rows must add up
    tt = np.array([[0, 0, 1], [0, 1, 1]])
    E_tok, E_pos, E_type = randn(5, 4), randn(6, 4), randn(2, 4)

    def fwd(E_tok, E_pos, E_type):
        return emb.bert_embeddings_forward(ids, tt, E_tok, E_pos, E_type), None

    def bwd(dy, _):
        g = [np.zeros_like(E_tok), np.zeros_like(E_pos), np.zeros_like(E_type)]
        emb.bert_embeddings_backward(dy, ids, tt, *g)
        return tuple(g)
    report("embeddings", check(fwd, bwd, E_tok, E_pos, E_type))


@pytest.mark.parametrize("with_dropout", [False, True])
def test_attention_with_padding(with_dropout):
    B, T, D, H = 2, 5, 6, 2
    am = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    bias = att.mask_bias(am, np.dtype(np.float64))

    def fwd(x, W_QKV, b_QKV, W_O, b_O):
        out, c = att.attention_forward(x, W_QKV, b_QKV, W_O, b_O, H, bias, 0.2 if with_dropout else 0.0,
                                       np.random.default_rng(3), with_dropout)
        return out, (c, {"W_QKV": W_QKV, "W_O": W_O})

    def bwd(dy, c):
        dx, g = att.attention_backward(dy, *c)
        return dx, g["W_QKV"], g["b_QKV"], g["W_O"], g["b_O"]
    report("attention", check(
        fwd, bwd,
        randn(B, T, D), randn(D, 3 * D, scale=0.5), randn(3 * D), randn(D, D), randn(D)))


def test_attention_padding_gets_no_weight_and_all_padding_row_is_finite():
    D, H = 4, 2
    W_QKV, b, W_O, bO = randn(D, 3 * D), randn(3 * D), randn(D, D), randn(D)
    am = np.array([[1, 1, 0], [0, 0, 0]])          # the second row is all padding
    out, c = att.attention_forward(randn(2, 3, D), W_QKV, b, W_O, bO, H, att.mask_bias(am, np.dtype(np.float64)))
    A = c["attention_weights"]
    assert np.isfinite(out).all() and np.isfinite(A).all()
    assert np.abs(A[0, :, :, 2]).max() < 1e-30                       # padded key ignored
    np.testing.assert_allclose(A[1], np.full((H, 3, 3), 1 / 3))      # no real key: uniform, not NaN
    dx = att.attention_backward(np.ones_like(out), c, {"W_QKV": W_QKV, "W_O": W_O})[0]
    assert np.isfinite(dx).all()


# --------------------------------------------------------------------------------------------------------------
# The whole model: every parameter of a 2-layer model at once.

def _tiny_model(activation, norm, dropout, tie=True):
    cfg = ModelConfig(vocab_size=19, hidden_size=8, num_layers=2, num_heads=2, intermediate_size=12,
                      max_position_embeddings=9, activation=activation, norm_position=norm, dtype="float64",
                      dropout=0.2 if dropout else 0.0, attention_dropout=0.2 if dropout else 0.0,
                      layer_norm_eps=1e-5, tie_word_embeddings=tie)
    model = MiniBERT(cfg, seed=1)
    # move every parameter off its special init value (LN gains 1, biases 0) so nothing is checked trivially
    model.store.flat += np.random.default_rng(5).normal(0, 0.1, model.store.flat.shape)
    return model


def _check_model(model, loss_and_grads):
    L, analytic = loss_and_grads()
    flat = model.store.flat
    numeric = numeric_gradient(lambda: loss_and_grads()[0], flat)
    names = model.store.views
    worst = 0.0
    for name, view in names.items():
        # view into the flat buffers: locate it by offset
        sl = _slice_of(model, view)
        err = relative_error(analytic[sl], numeric[sl])
        if np.linalg.norm(numeric[sl]) == 0 and np.linalg.norm(analytic[sl]) == 0:
            continue
        worst = max(worst, err)
        assert err <= TOL, f"{name}: relative error {err:.2e}"
    return worst


def _slice_of(model, view):
    """Flat indices of a (possibly strided) view of model.store.flat."""
    base = model.store.flat
    idx = np.arange(base.size).reshape(-1)
    offset = (view.__array_interface__["data"][0] - base.__array_interface__["data"][0]) // base.itemsize
    strides = tuple(s // base.itemsize for s in view.strides)
    return np.lib.stride_tricks.as_strided(idx[offset:], shape=view.shape,
                                           strides=tuple(s * idx.itemsize for s in strides)).ravel()


@pytest.mark.parametrize("activation,norm", [("relu", "post"), ("gelu", "post"), ("relu", "pre"), ("gelu", "pre")])
def test_whole_model_mlm(activation, norm):
    """All parameters, with padding, token types, masked-positions path and dropout masks held fixed."""
    model = _tiny_model(activation, norm, dropout=True)
    inp, tgt, pos, am, tt = model_case()

    def loss_and_grads():
        g = MiniBERTGradients(model)
        logits, cache = model.forward(inp, am, tt, training=True, masked_positions=pos,
                                      rng=np.random.default_rng(7))   # same seed: same dropout masks every call
        loss, dlogits = mlm_cross_entropy(logits, tgt, pos)
        g.backward_from_logits(dlogits, cache)
        return loss, g.flat.copy()
    worst = _check_model(model, loss_and_grads)
    print(f"whole model MLM ({activation}, {norm}-LN, padding, dropout): max relative error {worst:.2e}")


def test_whole_model_full_logits_untied_gelu_tanh():
    model = _tiny_model("gelu_tanh", "post", dropout=False, tie=False)
    inp, tgt, pos, am, tt = model_case()

    def loss_and_grads():
        g = MiniBERTGradients(model)
        logits, cache = model.forward(inp, am, tt)        # (B, T, V): the full-logits path
        loss, dlogits = g.compute_mlm_loss_and_gradients(logits, tgt, pos)
        g.backward_from_logits(dlogits, cache)
        return loss, g.flat.copy()
    worst = _check_model(model, loss_and_grads)
    print(f"whole model full logits (gelu_tanh, untied): max relative error {worst:.2e}")


@pytest.mark.parametrize("norm,pooling", [("post", "cls"), ("pre", "cls"), ("pre", "mean")])
def test_whole_model_classifier(norm, pooling):
    model = _tiny_model("gelu", norm, dropout=True)
    model.config.classifier_pooling = pooling
    inp, _, _, am, tt = model_case()
    labels = np.array([1, 0])

    def loss_and_grads():
        g = MiniBERTGradients(model)
        logits, cache = model.forward_classifier(inp, am, tt, training=True, rng=np.random.default_rng(7))
        loss, dlogits = g.compute_classification_loss_and_gradients(logits, labels)
        g.backward_from_class_logits(dlogits, cache)
        return loss, g.flat.copy()
    worst = _check_model(model, loss_and_grads)
    print(f"whole model classifier ({norm}-LN, {pooling} pooling): max relative error {worst:.2e}")


def test_masked_path_equals_full_logits_at_masked_positions():
    model = _tiny_model("gelu", "post", dropout=False)
    inp, tgt, pos, am, tt = model_case()
    full, _ = model.forward(inp, am, tt)
    masked, _ = model.forward(inp, am, tt, masked_positions=pos)
    np.testing.assert_allclose(masked, full[pos], rtol=1e-12, atol=1e-12)
    g_full, g_masked = MiniBERTGradients(model), MiniBERTGradients(model)
    lf, cf = model.forward(inp, am, tt)
    g_full.backward_from_logits(mlm_cross_entropy(lf, tgt, pos)[1], cf)
    lm, cm = model.forward(inp, am, tt, masked_positions=pos)
    g_masked.backward_from_logits(mlm_cross_entropy(lm, tgt, pos)[1], cm)
    np.testing.assert_allclose(g_masked.flat, g_full.flat, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_a_copied_model_keeps_its_views_on_its_own_buffer(how):
    import copy
    import pickle

    model = MiniBERT(ModelConfig(vocab_size=50, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=16,
                                 max_position_embeddings=16), seed=0)
    twin = pickle.loads(pickle.dumps(model)) if how == "pickle" else copy.deepcopy(model)
    np.testing.assert_array_equal(twin.store.flat, model.store.flat)
    twin.store.flat[...] = 7.0                          # writing the buffer writes every view, fused ones included
    assert all(np.all(v == 7.0) for v in twin.params.values())
    assert not np.any(model.store.flat == 7.0)          # and leaves the original alone
    grads = MiniBERTGradients(twin)
    grads.flat[...] = 1.0
    assert all(np.all(g == 1.0) for g in grads.gradients.values())
