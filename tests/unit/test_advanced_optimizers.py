"""Lion, adaptive gradient clipping and Lookahead: hand-computed steps, convergence, exact synchronisation,
exact clipping, exact resume, and a few real training steps of a tiny MiniBERT with each."""

from __future__ import annotations

import numpy as np
import pytest

from mini_bert import MiniBERT, ModelConfig, mask_tokens
from mini_bert.training.advanced_optimizers import (AdaptiveGradientClipper, AdvancedOptimizer, Lion, Lookahead,
                                                    _unit_axis, adaptive_gradient_clip)
from mini_bert.data.batches import Batch
from mini_bert.training.optimizer import AdamW, decay_mask
from mini_bert.training.trainer import GradientWorker


class SGD:
    """Plain gradient descent, the simplest inner optimizer: Lookahead's arithmetic can be followed by hand."""

    def __init__(self, params, lr):
        self.params, self.lr = params, lr

    def step(self, g, lr=None):
        self.params -= (self.lr if lr is None else lr) * g

    def state_dict(self):
        return {}

    def load_state_dict(self, state):
        pass


# --------------------------------------------------------------------------------------------------------------
# Lion


def test_lion_matches_a_hand_computed_step():
    p = np.array([1.0, -2.0, 0.5])
    mask = np.array([1.0, 1.0, 0.0])                  # the third entry is a bias: no weight decay
    opt = Lion(p, mask, lr=0.1, betas=(0.9, 0.99), weight_decay=0.1)
    g1 = np.array([0.3, -0.2, 0.0])
    opt.step(g1)
    # m = 0, so c = 0.1 g1 and sign(c) = (+1, -1, 0); theta -= lr (sign(c) + wd mask theta)
    expected = np.array([1.0 - 0.1 * (1 + 0.1 * 1.0), -2.0 - 0.1 * (-1 + 0.1 * -2.0), 0.5])
    np.testing.assert_allclose(p, expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(opt.m, 0.01 * g1, rtol=0, atol=1e-15)   # m = 0.99 * 0 + 0.01 g1, after the update
    g2 = np.array([-0.026, -0.5, 0.2])
    opt.step(g2, lr=0.1)
    # c = 0.9 m + 0.1 g2 = (0.0001, -0.0518, 0.02): the first entry follows the momentum against the gradient.
    # (Updating m before computing c would give c_0 = 0.9 (0.99 m + 0.01 g2) + 0.1 g2 < 0: the order matters.)
    c = 0.9 * 0.01 * g1 + 0.1 * g2
    assert np.array_equal(np.sign(c), [1, -1, 1])
    expected = expected - 0.1 * (np.array([1, -1, 1]) + 0.1 * mask * expected)
    np.testing.assert_allclose(p, expected, rtol=0, atol=1e-15)
    np.testing.assert_allclose(opt.m, 0.99 * 0.01 * g1 + 0.01 * g2, rtol=0, atol=1e-15)
    assert opt.t == 2


def _quadratic():
    target = np.random.default_rng(0).normal(size=12)
    scales = np.logspace(0, 2, 12)                    # curvatures 1 ... 100
    return target, scales, lambda x: 0.5 * float(np.sum(scales * (x - target) ** 2))


OPTIMIZERS = {
    "lion": lambda x: Lion(x, np.zeros_like(x), lr=0.02),
    "lookahead(adamw)": lambda x: Lookahead(AdamW(x, np.zeros_like(x), lr=0.05), x, k=5, alpha=0.5),
    "lookahead(lion)": lambda x: Lookahead(Lion(x, np.zeros_like(x), lr=0.02), x, k=5, alpha=0.5),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_minimises_an_ill_conditioned_quadratic(name):
    target, scales, loss = _quadratic()
    x = np.zeros(12)
    opt = OPTIMIZERS[name](x)
    start = loss(x)
    for t in range(600):
        opt.step(scales * (x - target), lr=opt.lr * (1 - t / 600))      # linear decay: Lion settles to ~lr
    assert loss(x) < 1e-3 * start, f"{name}: loss {loss(x):.3g} from {start:.3g}"


def test_lion_rejects_adamw_state():
    p = np.zeros(4)
    adam = AdamW(p, np.ones(4))
    adam.step(np.ones(4))
    with pytest.raises(ValueError, match="AdamW"):
        Lion(p, np.ones(4)).load_state_dict(adam.state_dict())


# --------------------------------------------------------------------------------------------------------------
# Lookahead


def test_lookahead_synchronises_exactly_every_k_steps():
    p = np.zeros(2)
    la = Lookahead(SGD(p, lr=0.1), p, k=3, alpha=0.5)
    g = np.array([1.0, -2.0])
    fast, slow = np.zeros(2), np.zeros(2)             # followed by hand
    for t in range(1, 10):
        la.step(g)
        fast = fast - 0.1 * g
        if t % 3 == 0:
            slow = slow + 0.5 * (fast - slow)
            fast = slow.copy()
        np.testing.assert_allclose(p, fast, rtol=0, atol=1e-14, err_msg=f"fast weights after step {t}")
        np.testing.assert_allclose(la.slow, slow, rtol=0, atol=1e-14, err_msg=f"slow weights after step {t}")
    # by hand: syncs at steps 3, 6, 9 move slow to -0.15 g, -0.15 g + 0.5 (-0.45 g + 0.15 g) = -0.3 g, and
    # -0.3 g + 0.5 (-0.6 g + 0.3 g) = -0.45 g; the fast weights restart there
    np.testing.assert_allclose(la.slow, -0.45 * g, rtol=0, atol=1e-14)
    np.testing.assert_allclose(p, -0.45 * g, rtol=0, atol=1e-14)


def test_lookahead_adamw_is_adamw_plus_a_sync_every_k_steps():
    rng = np.random.default_rng(1)
    grads = rng.normal(size=(11, 6))
    p, q = np.zeros(6), np.zeros(6)
    la = Lookahead(AdamW(p, np.ones(6), lr=0.01), p, k=4, alpha=0.3)
    plain, slow = AdamW(q, np.ones(6), lr=0.01), q.copy()
    for t, g in enumerate(grads, 1):
        la.step(g)
        plain.step(g)
        if t % 4 == 0:                                # the inner moments carry on across the sync
            slow += 0.3 * (q - slow)
            q[...] = slow
        np.testing.assert_allclose(p, q, rtol=1e-12, atol=1e-15, err_msg=f"step {t}")


def test_lookahead_rejects_a_different_buffer_and_bad_settings():
    p = np.zeros(3)
    with pytest.raises(ValueError, match="different buffer"):
        Lookahead(AdamW(np.zeros(3), np.ones(3)), p)
    with pytest.raises(ValueError, match="k"):
        Lookahead(SGD(p, 0.1), p, k=0)
    with pytest.raises(ValueError, match="alpha"):
        Lookahead(SGD(p, 0.1), p, alpha=1.5)


# --------------------------------------------------------------------------------------------------------------
# Adaptive gradient clipping


def _tiny_config(dtype="float64"):
    return ModelConfig(vocab_size=30, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                       max_position_embeddings=16, dropout=0.0, attention_dropout=0.0, dtype=dtype)


def _reference_agc(grads, params, store, clip, eps):
    """AGC unit by unit with explicit loops: columns of matrices, rows of embeddings, whole vectors."""
    out, n_units, n_clipped = grads.copy(), 0, 0
    for spec in store.specs:
        G = out[store.slices[spec.name]].reshape(spec.shape)
        W = params[store.slices[spec.name]].reshape(spec.shape)
        if len(spec.shape) == 1:
            units = [(slice(None),)]
        elif spec.kind == "embedding":
            units = [(i, slice(None)) for i in range(spec.shape[0])]
        else:
            units = [(slice(None), j) for j in range(spec.shape[1])]
        for u in units:
            n_units += 1
            limit = clip * max(np.linalg.norm(W[u]), eps)
            if np.linalg.norm(G[u]) > limit:
                G[u] *= limit / np.linalg.norm(G[u])
                n_clipped += 1
    return out, n_clipped / n_units


def test_agc_clips_exactly_the_units_above_the_threshold():
    model = MiniBERT(_tiny_config(), seed=0)
    store, params = model.store, model.store.flat
    rng = np.random.default_rng(7)                   # not the model's init seed: its draws would give g = 0.05 w
    grads = rng.normal(size=params.shape) * 1e-3
    clip = 0.05
    # W_O_0 (in, out): column 2 far above its limit, column 3 just below it
    W, sl = store["W_O_0"], store.slices["W_O_0"]
    G = grads[sl].reshape(W.shape)
    for j, factor in ((2, 10.0), (3, 0.9)):
        col = rng.normal(size=W.shape[0])
        G[:, j] = col / np.linalg.norm(col) * factor * clip * np.linalg.norm(W[:, j])
    before = grads.copy()
    expected, expected_fraction = _reference_agc(grads, params, store, clip, 1e-3)
    fraction = adaptive_gradient_clip(grads, params, store, clip=clip)
    np.testing.assert_allclose(grads, expected, rtol=1e-12, atol=0)
    assert fraction == pytest.approx(expected_fraction)
    assert 0 < fraction < 1
    G_after, G_before = grads[sl].reshape(W.shape), before[sl].reshape(W.shape)
    # the clipped column keeps its direction and has exactly the limit as its norm
    assert np.linalg.norm(G_after[:, 2]) == pytest.approx(clip * np.linalg.norm(W[:, 2]), rel=1e-12)
    np.testing.assert_allclose(G_after[:, 2] / np.linalg.norm(G_after[:, 2]),
                               G_before[:, 2] / np.linalg.norm(G_before[:, 2]), rtol=1e-12)
    assert np.array_equal(G_after[:, 3], G_before[:, 3])   # just below the limit: untouched
    changed = grads != before
    assert changed.any() and not changed.all()


def test_agc_units_zero_biases_and_exclusions():
    assert _unit_axis("matrix", 2) == 0 and _unit_axis("embedding", 2) == 1 and _unit_axis("bias", 1) is None
    model = MiniBERT(_tiny_config(), seed=0)
    store, params = model.store, model.store.flat
    grads = np.ones_like(params)
    before = grads.copy()
    clipper = AdaptiveGradientClipper(params, store, clip=0.01, eps=1e-3, exclude=("W_cls", "b_cls"))
    clipper(grads)
    b = grads[store.slices["b_O_0"]]                  # zero-initialised: limit = clip * eps
    assert np.linalg.norm(b) == pytest.approx(0.01 * 1e-3, rel=1e-9)
    for name in ("W_cls", "b_cls"):
        assert np.array_equal(grads[store.slices[name]], before[store.slices[name]])
    assert clipper.last_fraction > 0
    with pytest.raises(ValueError, match="unknown blocks"):
        adaptive_gradient_clip(grads, params, store, exclude=("W_nope",))
    with pytest.raises(ValueError, match="one layout"):
        adaptive_gradient_clip(grads[:-1], params, store)


# --------------------------------------------------------------------------------------------------------------
# Exact resume


RESUMABLE = {
    "lion": lambda p: Lion(p, np.ones_like(p), lr=0.01, weight_decay=0.1),
    "lookahead(adamw)": lambda p: Lookahead(AdamW(p, np.ones_like(p), lr=0.01), p, k=5),
    "lookahead(lion)": lambda p: Lookahead(Lion(p, np.ones_like(p), lr=0.01), p, k=5),
}


@pytest.mark.parametrize("name", RESUMABLE)
def test_state_dict_round_trip_makes_the_next_steps_identical(name):
    grads = np.random.default_rng(2).normal(size=(9, 7))
    p = np.random.default_rng(3).normal(size=7)
    opt = RESUMABLE[name](p)
    for g in grads[:3]:
        opt.step(g)
    saved_params, saved_state = p.copy(), opt.state_dict()
    for g in grads[3:]:                               # crosses Lookahead's sync at step 5
        opt.step(g)
    q = saved_params.copy()
    resumed = RESUMABLE[name](q)
    resumed.load_state_dict(saved_state)
    for g in grads[3:]:
        resumed.step(g)
    assert np.array_equal(q, p), f"{name}: resumed run differs by {np.abs(q - p).max():.3g}"


def test_lookahead_refuses_state_saved_with_another_k():
    p = np.zeros(3)
    state = Lookahead(SGD(p, 0.1), p, k=5).state_dict()
    with pytest.raises(ValueError, match="k=5"):
        Lookahead(SGD(p, 0.1), p, k=3).load_state_dict(state)


# --------------------------------------------------------------------------------------------------------------
# A tiny MiniBERT trains with each


def _fixed_batch():
    rng = np.random.default_rng(0)
    ids = np.tile(np.arange(5, 19), (6, 1))           # a learnable pattern: position determines the token
    ids[:, 0], ids[:, -1] = 2, 3
    inp, tgt, pos = mask_tokens(ids, 30, 4, 0.3, rng)
    return Batch(inp.astype(np.int32), tgt.astype(np.int32), pos, np.ones_like(ids, dtype=np.int32),
                 np.zeros_like(ids, dtype=np.int32))


def _setups():
    def lion(model):
        return AdvancedOptimizer(model, weight_decay=0.1).implement_lion_optimizer(lr=3e-3), None

    def lookahead_adamw(model):
        adv = AdvancedOptimizer(model)
        inner = AdamW(model.store.flat, adv.decay_mask, lr=1e-2)
        return adv.implement_lookahead_wrapper(inner, k=5, alpha=0.5), None

    def adamw_agc(model):
        adv = AdvancedOptimizer(model)
        return AdamW(model.store.flat, adv.decay_mask, lr=1e-2), adv.add_adaptive_gradient_clipping(clip=0.05)

    def lookahead_lion_agc(model):
        adv = AdvancedOptimizer(model, weight_decay=0.1)
        return (adv.implement_lookahead_wrapper(adv.implement_lion_optimizer(lr=3e-3)),
                adv.add_adaptive_gradient_clipping(clip=0.05))
    return {"lion": lion, "lookahead(adamw)": lookahead_adamw, "adamw+agc": adamw_agc,
            "lookahead(lion)+agc": lookahead_lion_agc}


@pytest.mark.parametrize("name", list(_setups()))
def test_tiny_minibert_trains_with_each_optimizer(name):
    model = MiniBERT(_tiny_config("float32"), seed=0)
    opt, clipper = _setups()[name](model)
    assert getattr(opt, "params", None) is model.store.flat
    worker = GradientWorker(model, threads=1, seed=0)
    batch = _fixed_batch()
    losses = []
    for _ in range(60):
        loss, _ = worker.loss_and_gradients(batch)
        losses.append(loss)
        if clipper is not None:
            clipper(worker.grads.flat)
        opt.step(worker.grads.flat, lr=opt.lr)
        assert np.isfinite(model.store.flat).all(), f"{name}: non-finite parameters"
    assert np.isfinite(losses).all()
    print(f"{name}: loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5]), f"{name}: losses {losses[0]:.3f} -> {losses[-1]:.3f}"


def test_facade_builds_each_optimizer_on_the_models_buffer():
    model = MiniBERT(_tiny_config("float32"), seed=0)
    adv = AdvancedOptimizer(model, weight_decay=0.2)
    lion = adv.implement_lion_optimizer(lr=1e-4)
    assert lion.params is model.store.flat and lion.weight_decay == 0.2
    np.testing.assert_array_equal(lion.decay, 0.2 * decay_mask(model.store))     # no decay on biases and norms
    la = adv.implement_lookahead_wrapper(k=3)
    assert isinstance(la.inner, AdamW) and la.inner.params is model.store.flat and la.k == 3
    agc = adv.add_adaptive_gradient_clipping(clip=0.02)
    assert agc.params is model.store.flat and agc.clip == 0.02
