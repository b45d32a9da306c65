"""Metrics on inputs whose answer is known (evaluation/metrics.py)."""

import math

import numpy as np
import pytest

from mini_bert.core.gradients import MiniBERTGradients
from mini_bert.core.model import MiniBERT
from mini_bert.evaluation import metrics as M

TINY = dict(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
            max_position_embeddings=16)


@pytest.fixture(scope="module")
def model():
    return MiniBERT(TINY, seed=0)


# Level 1 -------------------------------------------------------------------------------------------------------

def test_masked_accuracy_all_input_layouts():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 5, 7))
    targets = logits.argmax(-1)
    mask = np.zeros((2, 5), bool)
    mask[0, 1] = mask[1, 3] = mask[1, 4] = True
    targets[1, 4] = (targets[1, 4] + 1) % 7                       # one of the three masked positions is wrong
    assert M.masked_accuracy(logits, targets, mask) == pytest.approx(2 / 3)
    assert M.masked_accuracy(logits[mask], targets, mask) == pytest.approx(2 / 3)     # gathered (N, V) rows
    assert M.masked_accuracy(logits[mask], targets[mask]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="selects nothing"):
        M.masked_accuracy(logits, targets, np.zeros((2, 5), bool))


def test_perplexity_and_gradient_norm(model):
    assert M.compute_perplexity(math.log(50)) == pytest.approx(50)
    assert M.compute_perplexity(1e4) == math.inf
    with pytest.raises(ValueError, match="NaN"):
        M.compute_perplexity(float("nan"))
    grads = MiniBERTGradients(model)
    grads.flat[:] = np.random.default_rng(0).normal(size=grads.flat.size)
    expected = float(np.linalg.norm(grads.flat.astype(np.float64)))
    # The public views (W_Q/W_K/W_V of the fused block included) tile the buffer exactly once.
    assert M.compute_gradient_norm(grads.gradients) == pytest.approx(expected, rel=1e-6)
    assert M.compute_gradient_norm(grads) == pytest.approx(expected, rel=1e-6)
    assert M.compute_gradient_norm(grads.flat) == pytest.approx(expected, rel=1e-6)


# Level 2 -------------------------------------------------------------------------------------------------------

def test_attention_entropy_uniform_is_log_t_and_one_hot_is_zero():
    T = 6
    uniform = np.full((1, 3, T, T), 1 / T)
    one_hot = np.broadcast_to(np.eye(T)[::-1], (1, 3, T, T))
    np.testing.assert_allclose(M.compute_attention_entropy(uniform), np.full(3, math.log(T)), rtol=1e-12)
    np.testing.assert_allclose(M.compute_attention_entropy(one_hot), np.zeros(3), atol=1e-12)
    np.testing.assert_allclose(M.compute_attention_entropy(uniform, normalize=True), np.ones(3), rtol=1e-12)


def test_attention_entropy_excludes_padding(model):
    ids = np.array([[2, 10, 11, 12, 3, 0, 0]])
    mask = (ids != 0).astype(np.int64)
    _, cache = model.encode(ids, attention_mask=mask)
    ent = M.compute_attention_entropy(cache["attention_weights"], mask)       # (L, H)
    assert ent.shape == (2, 2)
    # A near-uniform random model spreads over the 5 real keys, not the 7 positions.
    np.testing.assert_allclose(ent, math.log(5), atol=0.01)
    # The same sequence without padding gives the same entropy.
    _, short = model.encode(ids[:, :5])
    np.testing.assert_allclose(M.compute_attention_entropy(short["attention_weights"]), ent, atol=1e-5)


def test_cka_is_one_for_same_and_rotated_and_low_for_unrelated():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 12))
    Q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    assert M.linear_cka(X, X) == pytest.approx(1.0, abs=1e-12)
    assert M.linear_cka(X, X @ Q) == pytest.approx(1.0, abs=1e-10)
    assert M.linear_cka(X, 3.0 * X + 1.0) == pytest.approx(1.0, abs=1e-10)
    assert M.linear_cka(X, rng.normal(size=(300, 12))) < 0.15


def test_layer_similarity_matrix(model):
    ids = np.random.default_rng(0).integers(5, 50, size=(3, 9))
    _, cache = model.encode(ids)
    sim = M.compute_layer_similarity(cache["hidden_states"])
    L = len(cache["hidden_states"])
    for key in ("cka", "cosine"):
        assert sim[key].shape == (L, L)
        np.testing.assert_allclose(sim[key], sim[key].T)
        np.testing.assert_allclose(np.diag(sim[key]), 1.0, atol=1e-10)
    assert M.compute_layer_similarity([cache["hidden_states"][0]] * 2)["cka"][0, 1] == pytest.approx(1.0)


def test_effective_dimensionality():
    rng = np.random.default_rng(2)
    iso = rng.normal(size=(20000, 6))
    d = M.compute_effective_dimensionality(iso)
    assert d["participation_ratio"] == pytest.approx(6, rel=0.03)
    assert d["n_components"] == 6                     # isotropic: every direction is needed for 90%
    plane = rng.normal(size=(500, 2)) @ rng.normal(size=(2, 10))
    assert M.compute_effective_dimensionality(plane)["n_components"] <= 2
    scaled = rng.normal(size=(5000, 3)) * np.array([10.0, 1.0, 0.1])
    assert M.compute_effective_dimensionality(scaled)["n_components"] == 1      # 98% along the first axis


def test_token_diversity():
    rng = np.random.default_rng(3)
    assert M.compute_token_diversity(np.tile([1.0, 2.0, 3.0], (20, 1)))["diversity"] == pytest.approx(0, abs=1e-12)
    assert M.compute_token_diversity(rng.normal(size=(500, 32)))["diversity"] == pytest.approx(1, abs=0.05)


# Level 3 -------------------------------------------------------------------------------------------------------

def test_effective_rank_known_values():
    assert M.compute_effective_rank(np.eye(7)) == pytest.approx(7)
    rng = np.random.default_rng(4)
    assert M.compute_effective_rank(np.outer(rng.normal(size=9), rng.normal(size=5))) == pytest.approx(1)
    assert M.compute_effective_rank(np.diag([1.0, 1.0, 0.0])) == pytest.approx(2)
    assert 1 < M.compute_effective_rank(rng.normal(size=(8, 8))) < 8
    with pytest.raises(ValueError, match="2-D"):
        M.compute_effective_rank(np.ones(3))


def test_representation_geometry():
    rng = np.random.default_rng(5)
    cone = np.outer(rng.uniform(1, 3, 100), rng.normal(size=8)) + 1e-3 * rng.normal(size=(100, 8))
    g = M.compute_representation_geometry(cone)
    assert g["anisotropy"] > 0.99 and g["top_pc_variance_ratio"] > 0.99
    iso = rng.normal(size=(3000, 8))
    g = M.compute_representation_geometry(iso)
    assert abs(g["anisotropy"]) < 0.02
    assert g["isotropy"] > 0.5 > M.compute_representation_geometry(cone)["isotropy"]


def test_representation_stability(model):
    ids = np.random.default_rng(6).integers(5, 50, size=(2, 10))
    zero = M.measure_representation_stability(model, ids, perturbation="noise", noise_std=0.0, n_trials=1)
    np.testing.assert_allclose(zero["relative_drift"], 0.0, atol=1e-6)
    small = M.measure_representation_stability(model, ids, perturbation="noise", noise_std=0.01)
    big = M.measure_representation_stability(model, ids, perturbation="noise", noise_std=0.5)
    assert len(big["relative_drift"]) == TINY["num_layers"] + 1
    assert np.all(big["relative_drift"] > small["relative_drift"])
    sub = M.measure_representation_stability(model, ids, perturbation="substitution")
    assert sub["relative_drift"][0] == pytest.approx(0, abs=1e-6)     # unchanged positions: embeddings do not mix
    assert sub["relative_drift"][-1] > 0                               # ... the layers do
    with pytest.raises(ValueError, match="perturbation"):
        M.measure_representation_stability(model, ids, perturbation="dropout")


def test_self_test_command_passes(capsys):
    from mini_bert import cli
    assert cli.main(["metrics", "--test"]) == 0
    assert "all checks passed" in capsys.readouterr().out
