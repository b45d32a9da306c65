"""Architectural variants (core/variants.py): each new op and the whole AdvancedMiniBERT against float64 central
differences, the properties each variant is designed to have, and a tiny model of each that learns.

Each gradient test prints its largest relative error (`pytest -s tests/test_variants.py` shows them).
"""

from __future__ import annotations

import numpy as np
import pytest

from gradcheck import TOL, check, model_case, numeric_gradient, relative_error, report
from mini_bert import MiniBERT, MiniBERTGradients, ModelConfig, mask_tokens, mlm_cross_entropy
from mini_bert.core import attention as att
from mini_bert.core import variants as var
from mini_bert.core.variants import AdvancedMiniBERT, AdvancedMiniBERTGradients
from mini_bert.training.optimizer import AdamW, decay_mask

rng = np.random.default_rng(0)


def randn(*shape, scale=1.0):
    return rng.normal(size=shape) * scale


# --------------------------------------------------------------------------------------------------------------
# Rotary embeddings

def test_rope_gradient():
    report("rope", check(lambda x: var.rope_forward(x), var.rope_backward, randn(2, 3, 5, 8)))


def test_rope_shifted_positions_gradient():
    pos = np.array([3, 7, 8, 20])
    report("rope (positions)", check(lambda x: var.rope_forward(x, pos), var.rope_backward,
                                     randn(2, 4, 6)))


def test_rope_preserves_norms_and_backward_inverts_it():
    x = randn(2, 3, 6, 8)
    y, cache = var.rope_forward(x)
    # each pair (2i, 2i+1) is rotated, so the norm of every pair (hence of every vector) is unchanged
    pair_norm = lambda a: np.hypot(a[..., 0::2], a[..., 1::2])  # noqa: E731
    np.testing.assert_allclose(pair_norm(y), pair_norm(x), rtol=1e-12)
    np.testing.assert_allclose(var.rope_backward(y, cache), x, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(y[..., 0, :], x[..., 0, :])      # position 0: angle 0, the identity
    assert not np.allclose(y[..., 1:, :], x[..., 1:, :])


def test_rope_score_depends_only_on_the_offset():
    q, k = randn(1, 1, 7, 8), randn(1, 1, 7, 8)
    scores = lambda pos: var.rope_forward(q, pos)[0] @ var.rope_forward(k, pos)[0].swapaxes(-1, -2)  # noqa: E731
    base = scores(np.arange(7))
    for shift in (1, 5, 100):                                       # shift every position: i - j is unchanged
        np.testing.assert_allclose(scores(np.arange(7) + shift), base, rtol=1e-10, atol=1e-12)
    # the same q at every position and the same k at every position: S[i, j] is a function of i - j (Toeplitz)
    qs, ks = np.broadcast_to(randn(8), (1, 1, 7, 8)), np.broadcast_to(randn(8), (1, 1, 7, 8))
    S = (var.rope_forward(qs)[0] @ var.rope_forward(ks)[0].swapaxes(-1, -2))[0, 0]
    for offset in range(-6, 7):
        diag = np.diagonal(S, offset)
        np.testing.assert_allclose(diag, diag[0], rtol=1e-10, atol=1e-12)
    assert np.ptp([np.diagonal(S, o)[0] for o in range(-6, 7)]) > 1e-3   # ... and it does depend on i - j


def test_rope_rejects_odd_head_size_and_bad_positions():
    with pytest.raises(ValueError, match="even"):
        var.rope_forward(randn(1, 1, 3, 5))
    with pytest.raises(ValueError, match="positions"):
        var.rope_forward(randn(1, 1, 3, 4), np.arange(4))
    with pytest.raises(ValueError, match="even"):
        AdvancedMiniBERT(ModelConfig(vocab_size=10, hidden_size=6, num_heads=2, intermediate_size=8), rotary=True)


# --------------------------------------------------------------------------------------------------------------
# Relative position bias

def test_relative_bias_gradient():
    T, nb, md = 9, 8, 6

    def fwd(table):
        return var.relative_position_bias_forward(T, table, nb, md)
    report("relative position bias", check(fwd, var.relative_position_bias_backward, randn(nb, 3)))


def test_relative_bias_batched_gradient_sums_over_the_batch():
    bias, cache = var.relative_position_bias_forward(5, randn(8, 2), 8, 6)
    dbias = randn(3, 2, 5, 5)
    np.testing.assert_allclose(var.relative_position_bias_backward(dbias, cache),
                               var.relative_position_bias_backward(dbias.sum(0, keepdims=True), cache))


@pytest.mark.parametrize("nb,md", [(32, 128), (8, 6), (16, 20)])
def test_relative_buckets_symmetric_monotone_and_saturating(nb, md):
    T = md + 10
    b = var.relative_position_buckets(T, nb, md)
    half, exact = nb // 2, nb // 4
    r = np.arange(T)[None, :] - np.arange(T)[:, None]
    # a function of the offset j - i alone (constant along diagonals)
    for o in range(-(T - 1), T):
        assert len(set(np.diagonal(b, o))) == 1
    by_offset = {o: int(np.diagonal(b, o)[0]) for o in range(-(T - 1), T)}
    assert by_offset[0] == 0
    for n in range(1, T):
        assert by_offset[n] == by_offset[-n] + half                  # mirror: right keys use the upper half
        assert by_offset[-n] >= by_offset[-(n - 1)]                  # monotone in the distance
    assert [by_offset[-n] for n in range(exact)] == list(range(exact))   # one bucket per short distance
    assert {by_offset[-n] for n in range(md, T)} == {half - 1}        # everything beyond max_distance shares one
    assert b.min() >= 0 and b.max() == nb - 1 and (b[r < 0] < half).all() and (b[r > 0] >= half).all()
    # every left bucket is reached (no bucket wasted by the log spacing)
    assert set(by_offset[-n] for n in range(T)) == set(range(half))


def test_relative_bias_rejects_bad_settings():
    with pytest.raises(ValueError, match="even"):
        var.relative_position_buckets(4, 7, 10)
    with pytest.raises(ValueError, match="max_distance"):
        var.relative_position_buckets(4, 16, 4)
    with pytest.raises(ValueError, match="table"):
        var.relative_position_bias_forward(4, randn(6, 2), 8, 10)


# --------------------------------------------------------------------------------------------------------------
# Gate and the variant attention

def test_gate_gradient():
    def fwd(x, a, W_gate, b_gate):
        y, c = var.gate_forward(x, a, W_gate, b_gate)
        return y, (c, W_gate)
    report("gate", check(
        fwd, lambda dy, c: var.gate_backward(dy, c[0], c[1]),
        randn(2, 3, 4), randn(2, 3, 4), randn(4, 4), randn(4)))


def test_gate_is_finite_for_large_inputs():
    y, c = var.gate_forward(np.array([[[-1e4, 1e4]]]), np.ones((1, 1, 2)), np.eye(2), np.zeros(2))
    np.testing.assert_array_equal(y, [[[0.0, 1.0]]])


VARIANT_SETS = [{"rotary"}, {"relative_position"}, {"gated"}, {"rotary", "relative_position", "gated"}]


@pytest.mark.parametrize("variant", VARIANT_SETS, ids=lambda v: "+".join(sorted(v)))
def test_attention_variant_gradient_with_padding_and_dropout(variant):
    B, T, D, H, nb = 2, 6, 8, 2, 8
    bias = att.mask_bias(np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]]), np.dtype(np.float64))
    names = ("W_QKV", "b_QKV", "W_O", "b_O", "rel_bias_table", "W_gate", "b_gate")

    def fwd(x, W_QKV, b_QKV, W_O, b_O, rel_bias_table, W_gate, b_gate):
        p = dict(zip(names, (W_QKV, b_QKV, W_O, b_O, rel_bias_table, W_gate, b_gate)))
        out, c = var.attention_variant_forward(x, p, H, bias, variant, 0.2, np.random.default_rng(3), True,
                                               max_distance=4)
        return out, (c, p)

    def bwd(dy, cache):
        dx, g = var.attention_variant_backward(dy, *cache)
        return (dx,) + tuple(g.get(n) for n in names)
    report(f"attention {sorted(variant)}", check(
        fwd, bwd, randn(B, T, D), randn(D, 3 * D, scale=0.5), randn(3 * D), randn(D, D), randn(D), randn(nb, H),
        randn(D, D, scale=0.5), randn(D)))


def test_relative_table_gradient_sums_to_zero_per_head():
    """Adding c to all of a head's buckets adds c to whole rows of scores, which softmax ignores."""
    D, H = 8, 2
    p = {"W_QKV": randn(D, 3 * D), "b_QKV": randn(3 * D), "W_O": randn(D, D), "b_O": randn(D),
         "rel_bias_table": randn(8, H)}
    out, c = var.attention_variant_forward(randn(2, 9, D), p, H, None, {"relative_position"}, max_distance=6)
    _, g = var.attention_variant_backward(randn(*out.shape), c, p)
    assert np.abs(g["rel_bias_table"]).max() > 1e-3
    np.testing.assert_allclose(g["rel_bias_table"].sum(axis=0), 0.0, atol=1e-12)


def test_attention_without_variants_is_core_attention_bit_for_bit():
    x = randn(2, 5, 8).astype(np.float32)
    p = {k: randn(*s).astype(np.float32) for k, s in
         {"W_QKV": (8, 24), "b_QKV": (24,), "W_O": (8, 8), "b_O": (8,)}.items()}
    bias = att.mask_bias(np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]), np.dtype(np.float32))
    ref, rc = att.attention_forward(x, p["W_QKV"], p["b_QKV"], p["W_O"], p["b_O"], 2, bias, 0.3,
                                    np.random.default_rng(1), True)
    out, c = var.attention_variant_forward(x, p, 2, bias, set(), 0.3, np.random.default_rng(1), True)
    np.testing.assert_array_equal(out, ref)
    dy = randn(*out.shape).astype(np.float32)
    dx, grads = att.attention_backward(dy, rc, p)
    dx_var, grads_var = var.attention_variant_backward(dy, c, p)
    np.testing.assert_array_equal(dx, dx_var)
    assert grads.keys() == grads_var.keys()
    for k in grads:
        np.testing.assert_array_equal(grads[k], grads_var[k])


def test_unknown_variant_is_rejected():
    with pytest.raises(ValueError, match="unknown attention variant"):
        var.attention_variant_forward(randn(1, 2, 4), {}, 2, variant={"alibi"})


# --------------------------------------------------------------------------------------------------------------
# The whole AdvancedMiniBERT: every parameter of both stores against central differences

def _config(norm="post", dropout=True, dtype="float64", **kw):
    return ModelConfig(vocab_size=19, hidden_size=8, num_layers=2, num_heads=2, intermediate_size=12,
                       max_position_embeddings=9, activation="gelu", norm_position=norm, dtype=dtype,
                       dropout=0.2 if dropout else 0.0, attention_dropout=0.2 if dropout else 0.0,
                       layer_norm_eps=1e-5, **kw)


def _tiny_advanced(norm="post", absolute_positions=True, **variants):
    model = AdvancedMiniBERT(_config(norm), seed=1, num_buckets=8, max_distance=5,
                             absolute_positions=absolute_positions, **variants)
    # move every parameter off its special init value (LN gains 1, biases 0) so nothing is checked trivially
    model.store.flat += np.random.default_rng(5).normal(0, 0.1, model.store.flat.shape)
    model.extra.flat += np.random.default_rng(6).normal(0, 0.3, model.extra.flat.shape)
    return model


CASE = model_case()


def _loss(model):
    """The MLM loss; a fresh generator of the same seed replays the same dropout masks on every call."""
    inp, tgt, pos, am, tt = CASE
    logits, cache = model.forward(inp, am, tt, training=True, masked_positions=pos, rng=np.random.default_rng(7))
    return mlm_cross_entropy(logits, tgt, pos)[0], logits, cache


def _loss_and_grads(model):
    g = AdvancedMiniBERTGradients(model)
    loss, logits, cache = _loss(model)
    g.backward_from_logits(mlm_cross_entropy(logits, CASE[1], CASE[2])[1], cache)
    return loss, g


WHOLE_MODEL_CASES = [
    ("post", True, {"rotary": True}),
    ("post", True, {"relative_position": True}),
    ("post", True, {"gated_attention": True}),
    ("post", True, {"rotary": True, "relative_position": True, "gated_attention": True}),
    ("pre", False, {"rotary": True, "relative_position": True, "gated_attention": True}),
]


@pytest.mark.parametrize("norm,absolute,variants", WHOLE_MODEL_CASES,
                         ids=["rotary", "relative", "gated", "all", "all-preLN-noabs"])
def test_whole_advanced_model_gradients(norm, absolute, variants):
    """Every block of both buffers, with padding, token types, dropout masks held fixed and the masked-row path."""
    model = _tiny_advanced(norm, absolute, **variants)
    _, g = _loss_and_grads(model)
    worst = 0.0
    for store, grads in ((model.store, g.store), (model.extra, g.extra_store)):
        if store.flat.size == 0:
            continue
        numeric = numeric_gradient(lambda: _loss(model)[0], store.flat)
        for name, sl in store.slices.items():
            a, n = grads.flat[sl], numeric[sl]
            if name == "E_pos" and not absolute:
                assert not a.any() and np.abs(n).max() < 1e-10, "E_pos must not matter without absolute positions"
                continue
            if not a.any() and not n.any():
                continue                                             # pooler/classifier: unused by the MLM loss
            err = relative_error(a, n)
            worst = max(worst, err)
            assert err <= TOL, f"{name}: relative error {err:.2e}"
    assert g.extra_flat.size == model.extra.flat.size and (g.extra_flat.size == 0) == (variants == {"rotary": True})
    print(f"whole AdvancedMiniBERT {sorted(model.variants)} ({norm}-LN, absolute positions {absolute}, padding, "
          f"dropout): max relative error {worst:.2e}")


def test_classifier_path_with_all_variants():
    model = _tiny_advanced("post", True, rotary=True, relative_position=True, gated_attention=True)
    inp, _, _, am, tt = model_case()
    labels = np.array([1, 0])

    def loss_and_grads():
        g = AdvancedMiniBERTGradients(model)
        logits, cache = model.forward_classifier(inp, am, tt, training=True, rng=np.random.default_rng(7))
        loss, dlogits = g.compute_classification_loss_and_gradients(logits, labels)
        g.backward_from_class_logits(dlogits, cache)
        return loss, g
    _, g = loss_and_grads()
    numeric = numeric_gradient(lambda: loss_and_grads()[0], model.extra.flat)
    err = relative_error(g.extra_flat, numeric)
    print(f"classifier, extra parameters: relative error {err:.2e}")
    assert err <= TOL


# --------------------------------------------------------------------------------------------------------------
# Design properties of the model

@pytest.mark.parametrize("norm", ["post", "pre"])
def test_all_variants_off_is_minibert_exactly(norm):
    cfg = _config(norm, dtype="float32")
    base, adv = MiniBERT(cfg, seed=3), AdvancedMiniBERT(cfg, seed=3)
    np.testing.assert_array_equal(adv.store.flat, base.store.flat)
    inp, tgt, pos, am, tt = model_case()
    results = []
    for model, G in ((base, MiniBERTGradients), (adv, AdvancedMiniBERTGradients)):
        g = G(model)
        logits, cache = model.forward(inp, am, tt, training=True, masked_positions=pos, rng=np.random.default_rng(4))
        g.backward_from_logits(mlm_cross_entropy(logits, tgt, pos)[1], cache)
        results.append((logits, g.flat))
    np.testing.assert_array_equal(results[1][0], results[0][0])
    np.testing.assert_array_equal(results[1][1], results[0][1])
    assert adv.extra.flat.size == 0 and adv.num_parameters == base.num_parameters


def test_without_absolute_positions_e_pos_is_unused():
    model = AdvancedMiniBERT(_config(dropout=False), rotary=True, absolute_positions=False)
    inp, _, _, am, tt = model_case()
    before, _ = model.forward(inp, am, tt)
    model.params["E_pos"][...] = np.random.default_rng(0).normal(size=model.params["E_pos"].shape)
    np.testing.assert_array_equal(model.forward(inp, am, tt)[0], before)
    model.absolute_positions = True
    assert not np.allclose(model.forward(inp, am, tt)[0], before)


def test_relative_positions_make_the_encoder_order_aware():
    """Without E_pos, plain attention is permutation-equivariant; the relative bias breaks that."""
    ids = np.array([[2, 7, 8, 9, 10, 11]])
    perm = np.array([0, 3, 1, 5, 2, 4])
    for kw, equivariant in (({}, True), ({"relative_position": True}, False), ({"rotary": True}, False)):
        model = AdvancedMiniBERT(_config(dropout=False), absolute_positions=False, num_buckets=8, max_distance=5, **kw)
        model.extra.flat[...] = np.random.default_rng(0).normal(0, 1.0, model.extra.flat.shape)
        h = model.encode(ids)[0]
        hp = model.encode(ids[:, perm])[0]
        assert np.allclose(hp, h[:, perm], atol=1e-10) == equivariant, kw


def test_enabling_variants_allocates_named_parameters_independent_of_order():
    cfg = _config(dtype="float32")
    a = AdvancedMiniBERT(cfg, seed=2).add_gated_attention().add_relative_position_encoding(8, 5)
    b = AdvancedMiniBERT(cfg, seed=2).add_relative_position_encoding(8, 5).implement_rotary_embeddings()
    b.add_gated_attention().add_gated_attention()                  # enabling twice changes nothing
    assert set(a.extra_params) == set(b.extra_params) == {
        f"{k}_{l}" for k in ("rel_bias_table", "W_gate", "b_gate") for l in range(2)}
    for name in a.extra_params:
        np.testing.assert_array_equal(a.extra_params[name], b.extra_params[name])
    assert a.extra_params["rel_bias_table_1"].shape == (8, 2) and a.extra_params["W_gate_0"].shape == (8, 8)
    assert not a.extra_params["b_gate_0"].any() and a.extra_params["W_gate_0"].std() > 0
    assert b.variants == {"rotary", "relative_position", "gated"} and a.variants == {"relative_position", "gated"}
    with pytest.raises(ValueError, match="already on"):
        b.add_relative_position_encoding(num_buckets=16)


def test_state_dict_round_trip_and_stale_gradients():
    cfg = _config(dtype="float32")
    a = AdvancedMiniBERT(cfg, seed=1, relative_position=True, gated_attention=True, num_buckets=8, max_distance=5)
    b = AdvancedMiniBERT(cfg, seed=9, relative_position=True, gated_attention=True, num_buckets=8, max_distance=5)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(b.store.flat, a.store.flat)
    np.testing.assert_array_equal(b.extra.flat, a.extra.flat)
    with pytest.raises(ValueError, match="lacks"):
        AdvancedMiniBERT(cfg, relative_position=True, num_buckets=8, max_distance=5).load_state_dict(
            MiniBERT(cfg).state_dict())
    with pytest.raises(ValueError, match="unexpected|does not"):
        MiniBERT(cfg).load_state_dict(a.state_dict())
    g = AdvancedMiniBERTGradients(a)
    a.implement_rotary_embeddings()                                # no new tensors: the gradients still fit
    inp, tgt, pos, am, tt = model_case()
    logits, cache = a.forward(inp, am, tt, masked_positions=pos)
    g.backward_from_logits(mlm_cross_entropy(logits, tgt, pos)[1], cache)
    c = AdvancedMiniBERT(cfg)
    gc = AdvancedMiniBERTGradients(c)
    c.add_gated_attention()
    logits, cache = c.forward(inp, am, tt, masked_positions=pos)
    with pytest.raises(ValueError, match="again"):
        gc.backward_from_logits(mlm_cross_entropy(logits, tgt, pos)[1], cache)


# --------------------------------------------------------------------------------------------------------------
# A tiny model with each variant learns a small batch

@pytest.mark.parametrize("variants", [{"rotary": True}, {"relative_position": True}, {"gated_attention": True},
                                      {"rotary": True, "relative_position": True, "gated_attention": True}],
                         ids=["rotary", "relative", "gated", "all"])
def test_tiny_model_overfits_a_batch(variants):
    cfg = ModelConfig(vocab_size=40, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                      max_position_embeddings=16, dropout=0.0, attention_dropout=0.0, initializer_range=0.1)
    # positions come from the variant alone where it provides them (a gate alone keeps E_pos: without any position
    # information, masked tokens with the same context could not be told apart)
    absolute = not ({"rotary", "relative_position"} & set(variants))
    model = AdvancedMiniBERT(cfg, seed=0, absolute_positions=absolute, num_buckets=8, max_distance=8, **variants)
    r = np.random.default_rng(1)
    ids = r.integers(5, 40, (4, 12))
    ids[:, 0] = 2
    inp, tgt, pos = mask_tokens(ids, 40, 4, 0.3, r)
    grads = AdvancedMiniBERTGradients(model)
    optimizers = [AdamW(p, np.ones_like(p), lr=1e-2, weight_decay=0.0) for p in model.flat_views()]
    losses = []
    for _ in range(80):
        grads.zero_gradients()
        logits, cache = model.forward(inp, masked_positions=pos, training=True)
        loss, dlogits = mlm_cross_entropy(logits, tgt, pos)
        grads.backward_from_logits(dlogits, cache)
        for opt, g in zip(optimizers, grads.flat_views()):
            opt.step(g)
        losses.append(loss)
    print(f"{sorted(model.variants)}: loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert losses[-1] < 0.2 * losses[0]
    assert decay_mask(model.extra).size == model.extra.flat.size   # the extra store works with the decay mask
