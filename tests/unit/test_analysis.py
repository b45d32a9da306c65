"""Analysis tools (analysis/: inspection, landscape, dynamics, issues): component breakdowns with known answers, training dynamics, and the
training-issue detector on planted problems in short real trainings of a tiny model."""

import math

import numpy as np
import pytest

from mini_bert.core.gradients import MiniBERTGradients
from mini_bert.core.model import MiniBERT
from mini_bert.analysis import dynamics as AD
from mini_bert.analysis import inspection as AI
from mini_bert.analysis import issues as AS
from mini_bert.analysis import landscape as AL
from mini_bert.core.gradients import mlm_cross_entropy
from mini_bert.data.masking import mask_tokens
from mini_bert.training.optimizer import AdamW, decay_mask

TINY = dict(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
            max_position_embeddings=16, dropout=0.0, attention_dropout=0.0)
HEALTHY_LR = 1e-2          # AdamW on this tiny model: learns the templates below within 150 steps


def tiny(seed=0, **overrides):
    return MiniBERT({**TINY, **overrides}, seed=seed)


def batch_for(model, seed=0, B=4, T=10):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, model.config.vocab_size, size=(B, T))
    return AI.as_mlm_batch(ids, model.config.vocab_size, rng)


# Component analysis ----------------------------------------------------------------------------------------------

def test_attention_breakdown_reproduces_the_model():
    model = tiny()
    ids = np.array([[2, 7, 8, 9, 3, 0], [2, 10, 11, 12, 13, 3]])
    mask = (ids != 0).astype(np.int64)
    _, cache = model.encode(ids, attention_mask=mask)
    att = cache["layers"][1]["attn"]
    out = AI.MathematicalAnalyzer(model).analyze_attention_computation(att["Q"], att["K"], att["V"], mask)
    np.testing.assert_allclose(out["weights"], att["attention_weights"], atol=1e-6)
    B, H, T, d = att["Q"].shape
    merged = out["context"].transpose(0, 2, 1, 3).reshape(B, T, H * d)
    np.testing.assert_allclose(merged, att["context"], atol=1e-6)
    assert out["scale"] == pytest.approx(1 / math.sqrt(d))
    assert out["stats"]["scaled_scores"]["std"] == pytest.approx(out["stats"]["scores"]["std"] / math.sqrt(d), rel=1e-5)
    assert out["weights"][0, :, :, 5].max() < 1e-6                 # the padded key gets no weight
    assert any("sqrt(d)" in line for line in out["explanation"])


def test_layer_norm_statistics():
    model = tiny()
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 5.0, size=(2, 7, 16))
    gamma, beta = np.full(16, 2.0), np.full(16, 0.5)
    s = AI.MathematicalAnalyzer(model).analyze_layer_norm_statistics(x, gamma, beta)
    assert s["normalized"]["token_mean_avg"] == pytest.approx(0, abs=1e-9)
    assert s["normalized"]["token_std_avg"] == pytest.approx(1, abs=1e-6)
    assert s["output"]["token_mean_avg"] == pytest.approx(0.5, abs=1e-9)
    assert s["output"]["token_std_avg"] == pytest.approx(2, abs=1e-6)
    assert s["std_ratio"] == pytest.approx(2 / s["input"]["token_std_avg"], rel=1e-6)


def test_ffn_patterns_and_dead_units():
    model = tiny()
    ids = np.random.default_rng(1).integers(5, 50, size=(3, 8))
    _, cache = model.encode(ids)
    x = cache["layers"][0]["ffn"]["x"]
    an = AI.MathematicalAnalyzer(model)
    out = an.analyze_ffn_activation_patterns(x, 0)
    h = cache["layers"][0]["ffn"]["h"].reshape(-1, 32)
    np.testing.assert_allclose(out["active_fraction_per_neuron"], (h > 0).mean(axis=0))
    assert out["dead_fraction"] == pytest.approx(AI.dead_unit_fraction(cache["layers"][0]["ffn"]["h"]))
    model.params["b1_0"][:8] = -100.0                               # kill 8 of the 32 units
    out = an.analyze_ffn_activation_patterns(x, 0)
    assert out["dead_fraction"] == pytest.approx(8 / 32) and list(out["dead_units"]) == list(range(8))
    with pytest.raises(ValueError, match="layer"):
        an.analyze_ffn_activation_patterns(x, 5)


# Learning rates --------------------------------------------------------------------------------------------------

def test_lr_range_test_on_a_quadratic_suggests_a_stable_rate():
    """f(x) = 1/2 sum a_i x_i^2: gradient descent is stable exactly for lr < 2 / L, L = max a_i."""
    a = np.linspace(0.1, 4.0, 20)
    L = a.max()

    def loss_and_grad(x):
        return 0.5 * float(np.sum(a * x * x)), a * x

    res = AL.lr_range_test(loss_and_grad, np.ones(20), lr_min=1e-4, lr_max=10.0, num_steps=100)
    assert 1e-4 < res["suggested_lr"] < 2 / L
    assert res["lr_diverged"] is not None and res["lr_diverged"] > 2 / L    # it blew up only past the limit
    assert res["losses"][int(np.argmin(np.abs(res["lrs"] - res["suggested_lr"])))] < res["losses"][0]


def test_lr_sensitivity_runs_on_a_copy():
    model = tiny()
    before = model.store.flat.copy()
    res = AL.analyze_learning_rate_sensitivity(model, batch_for(model), lr_range=(1e-5, 1.0), num_steps=25)
    np.testing.assert_array_equal(model.store.flat, before)
    assert 1e-5 <= res["suggested_lr"] <= 1.0 and np.all(np.isfinite(res["losses"]))
    assert res["losses"].min() < res["losses"][0]                    # some rate in the sweep made progress


def test_layer_wise_lr_scales():
    model = tiny(num_layers=3)
    from mini_bert.training.optimizer import layer_wise_lr_scales
    s = layer_wise_lr_scales(model, decay=0.5)
    sl = model.store.slices
    assert np.all(s[sl["W_cls"]] == 1.0) and np.all(s[sl["W_QKV_2"]] == 1.0)
    assert np.all(s[sl["W1_1"]] == 0.5) and np.all(s[sl["ln2_gamma_0"]] == 0.25)
    assert np.all(s[sl["E_token"]] == 0.125)
    assert np.all(layer_wise_lr_scales(model, 1.0) == 1.0)
    with pytest.raises(ValueError, match="decay"):
        layer_wise_lr_scales(model, 0.0)
    AdamW(model.store.flat, decay_mask(model.store), lr_scale=s)    # the optimizer accepts the vector


def test_layer_wise_learning_rates_equalise_relative_steps():
    model = tiny()
    loss, grads, _ = AI.mlm_loss_and_gradients(model, batch_for(model))
    out = AL.compute_layer_wise_learning_rates(grads, 1e-3, model)
    assert out["groups"] == ["embeddings", "layer_0", "layer_1", "head"]
    rel = []
    for g in out["groups"]:
        p = out["per_group"][g]
        assert p["step_norm"] == pytest.approx(1e-3 * p["grad_norm"])
        rel.append(p["suggested_lr"] * p["grad_norm"] / p["weight_norm"])
    np.testing.assert_allclose(rel, np.median([out["per_group"][g]["relative_step"] for g in out["groups"]]))


# Loss landscape --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("directions", [1, 2])
def test_loss_landscape_origin_is_the_model_loss(directions):
    model = tiny()
    batch = batch_for(model)
    before = model.store.flat.copy()
    land = AL.analyze_loss_landscape(model, batch, directions=directions, resolution=5, span=0.5)
    np.testing.assert_array_equal(model.store.flat, before)          # weights restored
    centre = land["losses"][2] if directions == 1 else land["losses"][2, 2]
    assert centre == AI.mlm_loss(model, batch) == land["origin_loss"]
    assert land["losses"].shape == (5,) * directions
    assert not np.allclose(land["losses"], centre)                   # the directions do move the loss


def test_filter_normalised_direction_scales_columns_and_restricts_to_one_parameter():
    model = tiny()
    d = AL.filter_normalized_direction(model, np.random.default_rng(0), ["W1_0"])
    from mini_bert.core.parameters import ParameterStore
    store = ParameterStore(model.store.specs, model.dtype)
    store.flat[:] = d
    np.testing.assert_allclose(np.linalg.norm(store.views["W1_0"], axis=0),
                               np.linalg.norm(model.params["W1_0"], axis=0), rtol=1e-5)
    assert np.count_nonzero(d) == model.params["W1_0"].size
    with pytest.raises(ValueError, match="unknown parameter"):
        AL.filter_normalized_direction(model, np.random.default_rng(0), ["W_nope"])


# Representations, forgetting, weights, gradients -----------------------------------------------------------------

def test_detect_mode_collapse():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(40, 8))
    direction = rng.normal(size=8)
    history = [base, 0.5 * base + np.outer(np.ones(40), 3 * direction), np.outer(rng.uniform(1, 2, 40), direction)]
    out = AD.detect_mode_collapse(history)
    assert out["collapsed"] and out["mean_cosine"][-1] > 0.9 and out["mean_cosine"][0] < 0.2
    assert not AD.detect_mode_collapse([base, base * 2])["collapsed"]


def test_catastrophic_forgetting():
    model = tiny()
    weight = lambda m: float(m.params["b_decoder"][5])                # noqa: E731
    other = lambda m: -float(m.params["b_decoder"][6])                # noqa: E731

    def train(m):
        m.params["b_decoder"][5] += 1.0                               # the new task improves ...
        m.params["b_decoder"][6] += 0.5                               # ... the old one gets worse by 0.5

    out = AD.measure_catastrophic_forgetting(model, {"old": other}, {"new": weight}, train=train)
    assert out["old"]["old"]["change"] == pytest.approx(-0.5) and out["forgetting"] == pytest.approx(0.5)
    assert out["gain"] == pytest.approx(1.0)
    after = tiny(seed=1)
    pair = AD.measure_catastrophic_forgetting((model, after), {"old": other}, {})
    assert pair["old"]["old"]["before"] == pytest.approx(other(model))
    with pytest.raises(ValueError, match="train"):
        AD.measure_catastrophic_forgetting(model, {"old": other}, {})


def test_weight_evolution_known_values():
    s0 = {"W1_0": np.array([[3.0, 4.0]]), "b1_0": np.zeros(2)}
    s1 = {"W1_0": np.array([[3.0, 4.0]]) * 2, "b1_0": np.ones(2)}
    s2 = {"W1_0": np.array([[3.0, 4.0]]) * 2, "b1_0": np.ones(2)}
    evo = AD.analyze_weight_evolution([s0, s1, s2], steps=[0, 10, 20])
    p = evo["parameters"]["W1_0"]
    np.testing.assert_allclose(p["norm"], [5, 10, 10])
    np.testing.assert_allclose(p["distance_from_init"], [0, 5, 5])
    np.testing.assert_allclose(p["relative_update"], [1.0, 0.0])
    assert list(evo["groups"]) == ["layer_0"]                         # biases are not in the group norms
    np.testing.assert_allclose(evo["groups"]["layer_0"]["relative_distance"], [0, 1, 1])


def test_gradient_magnitudes_flag_a_zeroed_layer():
    model = tiny()
    for k in ("W_QKV", "W_O", "W1", "W2"):
        model.store[f"{k}_1"][...] = 0.0
    _, grads, _ = AI.mlm_loss_and_gradients(model, batch_for(model))
    stats = AD.analyze_gradient_magnitudes_by_layer(grads, model)
    assert stats["groups"] == ["embeddings", "layer_0", "layer_1", "head"]
    assert stats["grad_norm"]["layer_1"] == 0.0 and stats["vanishing"] == ["layer_1"]
    assert stats["grad_norm_all"]["layer_1"] > 0                      # its biases and LayerNorms still learn


# Training issues: planted problems in short real trainings --------------------------------------------------------

def _templates_batch(rng, B=16, T=12):
    """Four fixed 12-token sequences: learnable from position and context within a few hundred steps."""
    templates = 5 + np.random.default_rng(123).integers(0, 45, size=(4, T))
    return templates[rng.integers(0, 4, size=B)]


def train_tiny(lr, steps=150, every=5, zero_layer=None, dead_layer=None, seed=0):
    model = tiny(seed)
    if zero_layer is not None:
        for k in ("W_QKV", "W_O", "W1", "W2"):
            model.store[f"{k}_{zero_layer}"][...] = 0.0
    if dead_layer is not None:
        model.params[f"b1_{dead_layer}"][...] = -10.0
    grads = MiniBERTGradients(model)
    opt = AdamW(model.store.flat, decay_mask(model.store), lr=lr)
    monitor = AS.TrainingMonitor(every=every)
    rng = np.random.default_rng(seed)
    losses = []
    for step in range(steps):
        inp, tgt, pos = mask_tokens(_templates_batch(rng), model.config.vocab_size, rng=rng)
        logits, cache = model.forward(inp, training=True, masked_positions=pos)
        loss, dlogits = mlm_cross_entropy(logits, tgt, pos)
        grads.zero_gradients()
        grads.backward_from_logits(dlogits, cache)
        logged = monitor.observe(step, model, grads, cache, lr, loss, grad_norm=grads.global_norm())
        assert (logged == {}) == (step % every != 0)
        assert "train_loss" not in logged and "grad_norm" not in logged   # the trainer logs those itself
        opt.step(grads.flat, lr)
        losses.append(loss)
    return monitor, losses


@pytest.fixture(scope="module")
def healthy_run():
    return train_tiny(HEALTHY_LR)


def test_monitor_logs_the_expected_metrics(healthy_run):
    monitor, _ = healthy_run
    assert len(monitor.history) == 150 and all("grad_norm" in e for e in monitor.history)
    observed = [e for e in monitor.history if "grad_norm/layer_0" in e]
    assert len(observed) == 30
    e = observed[3]
    for key in ("grad_norm/embeddings", "grad_norm/layer_0", "grad_norm/layer_1", "grad_norm/head",
                "update_ratio", "update_ratio/layer_1", "attention_entropy/layer_0", "attention_entropy_min/layer_1",
                "dead_units/layer_0", "train_loss", "lr"):
        assert key in e, key
    assert 0 < e["update_ratio"] < 1 and 0 <= e["dead_units/layer_0"] <= 1
    assert 0 < e["attention_entropy/layer_0"] <= math.log(12) + 1e-6
    assert "update_ratio" not in observed[0]                          # no previous step to compare with


def test_healthy_run_is_quiet(healthy_run):
    monitor, losses = healthy_run
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])        # it really learned
    assert monitor.issues() == []


def test_learning_rate_ten_times_too_high_is_flagged():
    monitor, losses = train_tiny(10 * HEALTHY_LR)
    kinds = {i.kind for i in monitor.issues()}
    assert "lr_too_high" in kinds, kinds
    issue = next(i for i in monitor.issues() if i.kind == "lr_too_high")
    assert "learning rate" in issue.explanation and issue.suggestion


def test_three_times_too_high_shows_loss_spikes():
    monitor, _ = train_tiny(3 * HEALTHY_LR, seed=1)
    kinds = {i.kind for i in monitor.issues()}
    assert {"loss_spike", "lr_too_high"} <= kinds, kinds


def test_zeroed_layer_has_vanishing_gradients():
    monitor, _ = train_tiny(HEALTHY_LR, zero_layer=1)
    issues = {i.kind: i for i in monitor.issues()}
    assert "vanishing_gradients" in issues
    assert list(issues["vanishing_gradients"].evidence["groups"]) == ["layer_1"]


def test_layer_with_dead_relus_is_flagged():
    monitor, _ = train_tiny(HEALTHY_LR, dead_layer=0)
    issues = {i.kind: i for i in monitor.issues()}
    assert "dead_relu" in issues and issues["dead_relu"].evidence["dead_fraction"] == {"layer_0": 1.0}
    assert "lr_too_high" not in issues                               # dead from the start: not the LR's doing


def test_issue_detector_on_synthetic_logs():
    steps = range(100)
    smooth = [{"step": s, "train_loss": 4.0 * 0.98 ** s + 0.5, "lr": 1e-3, "grad_norm": 1.0} for s in steps]
    assert AS.detect_training_issues(smooth) == []
    nan = [dict(e) for e in smooth]
    nan[60]["train_loss"] = float("nan")
    assert AS.detect_training_issues(nan)[0].kind == "divergence"
    spiky = [dict(e) for e in smooth]
    spiky[70]["train_loss"] = 5.0
    assert "loss_spike" in {i.kind for i in AS.detect_training_issues(spiky)}
    exploding = [dict(e) for e in smooth]
    exploding[80]["grad_norm"] = 50.0
    assert "exploding_gradients" in {i.kind for i in AS.detect_training_issues(exploding)}
    flat = [{"step": s, "train_loss": 3.9, "lr": 1e-3} for s in steps]
    assert {"loss_plateau", "lr_too_low"} <= {i.kind for i in AS.detect_training_issues(flat)}
    annealed = [{"step": s, "train_loss": 3.9, "lr": 1e-3 if s < 50 else 1e-6} for s in steps]
    assert "loss_plateau" not in {i.kind for i in AS.detect_training_issues(annealed)}
    collapsed = [dict(e, **{"attention_entropy/layer_0": 1.5, "attention_entropy/layer_1": 0.01}) for e in smooth]
    issue = next(i for i in AS.detect_training_issues(collapsed) if i.kind == "attention_collapse")
    assert list(issue.evidence["entropy"]) == ["layer_1"]
    tiny_steps = [dict(e, update_ratio=1e-7) for e in smooth]
    assert "lr_too_low" in {i.kind for i in AS.detect_training_issues(tiny_steps)}
    assert all(str(i).startswith("[") for i in AS.detect_training_issues(spiky))
