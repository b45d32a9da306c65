"""The NumPy MiniBERT against its PyTorch twin: same weights -> same logits and the same gradient for every tensor.

Forward: max |logits_np - logits_torch| <= 1e-5 in float32. Backward: per tensor, ||g_np - g_t|| / ||g_t|| <= 1e-4.
The observed maxima are printed (`pytest -s`) and appear in every assertion message.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mini_bert.config import ModelConfig  # noqa: E402
from mini_bert.core.gradients import MiniBERTGradients  # noqa: E402
from mini_bert.core.model import MiniBERT  # noqa: E402
from mini_bert.reference.torch_bert import TorchMiniBERT  # noqa: E402

LOGIT_ATOL = 1e-5
GRAD_RTOL = 1e-4

SMALL = dict(vocab_size=61, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
             max_position_embeddings=16, dropout=0.0, attention_dropout=0.0,
             # Larger than BERT's 0.02, so that attention is far from uniform and the activations leave their
             # near-linear range: a mismatch in either would show.
             initializer_range=0.1)


@pytest.fixture(autouse=True)
def _one_thread():
    # The suite shares two cores; and one thread makes torch's reductions deterministic.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def make_batch(cfg: ModelConfig, B=3, T=12, seed=0):
    """Random ids with [CLS]-like first tokens, mixed token types, and padding of different lengths per row."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, cfg.vocab_size, size=(B, T))
    types = (np.arange(T) >= T // 2).astype(np.int64)[None].repeat(B, 0) % cfg.type_vocab_size
    mask = np.ones((B, T), dtype=np.int64)
    for b in range(1, B):
        mask[b, T - 3 * b:] = 0                                    # rows of length T, T-3, T-6, ...
    ids[mask == 0] = 0
    selected = (rng.random((B, T)) < 0.4) & (mask == 1)
    selected[:, 1] = True                                          # every row has a masked position
    targets = rng.integers(5, cfg.vocab_size, size=(B, T))
    return ids, mask, types, selected, targets


def grad_errors(np_grads, torch_grads) -> dict[str, float]:
    """||g_np - g_t|| / ||g_t|| for every tensor whose true gradient is not identically zero.

    The key bias b_K gets exactly zero gradient: adding q.b_K to every score of a softmax row changes nothing. Both
    frameworks then return float noise of ~1e-12, whose relative error means nothing; those are checked to be
    negligible against the largest gradient instead.
    """
    scale = max(float(np.linalg.norm(g)) for g in torch_grads.values())
    errors = {}
    for name, g_t in torch_grads.items():
        g_np = np_grads[name]
        assert g_np.shape == g_t.shape, f"{name}: numpy {g_np.shape} vs torch {g_t.shape}"
        if name.startswith("b_K_"):
            assert np.linalg.norm(g_np) <= 1e-6 * scale and np.linalg.norm(g_t) <= 1e-6 * scale, name
            continue
        norm = float(np.linalg.norm(g_t))
        diff = float(np.linalg.norm(g_np.astype(np.float64) - g_t))
        errors[name] = diff / norm if norm > 0 else diff
    return errors


def report(label, logit_diff, errors):
    worst = max(errors, key=errors.get) if errors else None
    msg = (f"{label}: max |dlogits| = {logit_diff:.2e}; max grad rel. error = "
           f"{errors[worst]:.2e} ({worst})" if worst else f"{label}: max |dlogits| = {logit_diff:.2e}")
    print(msg)
    return msg


def mlm_parity(cfg: ModelConfig, masked_path=True, B=3, T=12, attention="eager"):
    """One MLM step in both frameworks; returns (max |logit diff| on the full (B, T, V) logits, grad errors)."""
    model = MiniBERT(cfg, seed=3)
    twin = TorchMiniBERT.from_numpy(model, attention=attention).eval()
    ids, mask, types, selected, targets = make_batch(cfg, B, T)

    full_np, _ = model.forward(ids, mask, types)
    with torch.no_grad():
        full_t = twin(ids, mask, types).numpy()
    logit_diff = float(np.abs(full_np - full_t).max())

    grads = MiniBERTGradients(model)
    logits, cache = model.forward(ids, mask, types, masked_positions=selected if masked_path else None)
    loss, dlogits = grads.compute_mlm_loss_and_gradients(logits, targets, selected)
    grads.backward_from_logits(dlogits, cache)

    logits_t = twin(ids, mask, types, masked_positions=selected if masked_path else None)
    rows = logits_t if masked_path else logits_t[torch.as_tensor(selected)]
    loss_t = torch.nn.functional.cross_entropy(rows, torch.as_tensor(targets[selected]))
    loss_t.backward()
    assert abs(loss - loss_t.item()) <= 1e-5 * max(1.0, abs(loss)), (loss, loss_t.item())
    return logit_diff, grad_errors(grads.gradients, twin.numpy_grads())


@pytest.mark.parametrize("norm_position", ["post", "pre"])
@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_tanh"])
def test_mlm_logits_and_gradients_match(activation, norm_position):
    cfg = ModelConfig(**SMALL, activation=activation, norm_position=norm_position)
    logit_diff, errors = mlm_parity(cfg)
    msg = report(f"{activation}/{norm_position}-LN", logit_diff, errors)
    assert logit_diff <= LOGIT_ATOL, msg
    assert max(errors.values()) <= GRAD_RTOL, msg


def test_full_logits_path_gradients_match():
    """The (B, T, V) logits path (no masked_positions) backpropagates the same gradients."""
    cfg = ModelConfig(**SMALL, activation="gelu")
    logit_diff, errors = mlm_parity(cfg, masked_path=False)
    msg = report("full-logits path", logit_diff, errors)
    assert logit_diff <= LOGIT_ATOL and max(errors.values()) <= GRAD_RTOL, msg


def test_untied_decoder_without_embedding_layer_norm():
    cfg = ModelConfig(**SMALL, tie_word_embeddings=False, embedding_layer_norm=False, norm_position="pre")
    logit_diff, errors = mlm_parity(cfg)
    msg = report("untied decoder, no embedding LN", logit_diff, errors)
    assert "W_decoder" in errors
    assert logit_diff <= LOGIT_ATOL and max(errors.values()) <= GRAD_RTOL, msg


def test_default_size_model():
    """The default config (V=8192, D=192, 3 layers, 4 heads) on a longer padded batch."""
    cfg = ModelConfig(dropout=0.0, attention_dropout=0.0)
    logit_diff, errors = mlm_parity(cfg, B=2, T=48)
    msg = report("default size", logit_diff, errors)
    assert logit_diff <= LOGIT_ATOL, msg
    assert max(errors.values()) <= GRAD_RTOL, msg


def test_float64_agrees_to_round_off():
    """In float64 the two derivations agree far below the float32 tolerance: the differences above are rounding."""
    cfg = ModelConfig(**SMALL, activation="gelu_tanh", dtype="float64")
    logit_diff, errors = mlm_parity(cfg)
    msg = report("float64", logit_diff, errors)
    assert logit_diff <= 1e-12 and max(errors.values()) <= 1e-9, msg


def test_sdpa_attention_matches_eager():
    cfg = ModelConfig(**SMALL, activation="gelu")
    logit_diff, errors = mlm_parity(cfg, attention="sdpa")
    msg = report("sdpa attention", logit_diff, errors)
    assert logit_diff <= LOGIT_ATOL and max(errors.values()) <= GRAD_RTOL, msg


@pytest.mark.parametrize("norm_position", ["post", "pre"])
def test_classifier_logits_and_gradients_match(norm_position):
    cfg = ModelConfig(**SMALL, activation="gelu", norm_position=norm_position, num_labels=3)
    model = MiniBERT(cfg, seed=5)
    twin = TorchMiniBERT.from_numpy(model).eval()
    ids, mask, types, _, _ = make_batch(cfg)
    labels = np.array([0, 2, 1])

    grads = MiniBERTGradients(model)
    logits, cache = model.forward_classifier(ids, mask, types)
    loss, dlogits = grads.compute_classification_loss_and_gradients(logits, labels)
    grads.backward_from_class_logits(dlogits, cache)

    logits_t = twin.forward_classifier(ids, mask, types)
    torch.nn.functional.cross_entropy(logits_t, torch.as_tensor(labels)).backward()
    logit_diff = float(np.abs(logits - logits_t.detach().numpy()).max())
    errors = grad_errors(grads.gradients, twin.numpy_grads())
    msg = report(f"classifier/{norm_position}-LN", logit_diff, errors)
    assert logit_diff <= LOGIT_ATOL and max(errors.values()) <= GRAD_RTOL, msg


def test_dropout_models_agree_with_dropout_disabled():
    """Dropout masks come from different generators, so a dropout config is compared (a) in inference mode and
    (b) in training mode with p set to 0; (c) with p > 0, training mode really drops units in both frameworks."""
    cfg = ModelConfig(**{**SMALL, "dropout": 0.2, "attention_dropout": 0.2})
    model = MiniBERT(cfg, seed=7)
    twin = TorchMiniBERT.from_numpy(model)
    ids, mask, types, _, _ = make_batch(cfg)

    eval_np, _ = model.forward(ids, mask, types, training=False)
    with torch.no_grad():
        eval_t = twin.eval()(ids, mask, types).numpy()
    assert np.abs(eval_np - eval_t).max() <= LOGIT_ATOL

    no_drop = cfg.model_copy(update={"dropout": 0.0, "attention_dropout": 0.0})
    model0 = MiniBERT(no_drop, seed=7)
    model0.load_state_dict(model.state_dict())
    train_np, _ = model0.forward(ids, mask, types, training=True)
    twin0 = TorchMiniBERT.from_numpy(model0).train()
    with torch.no_grad():
        train_t = twin0(ids, mask, types).numpy()
    diff = float(np.abs(train_np - train_t).max())
    print(f"dropout p=0 in training mode: max |dlogits| = {diff:.2e}")
    assert diff <= LOGIT_ATOL, diff

    drop_np, _ = model.forward(ids, mask, types, training=True, rng=np.random.default_rng(0))
    torch.manual_seed(0)
    with torch.no_grad():
        drop_t = twin.train()(ids, mask, types).numpy()
    assert np.abs(drop_np - eval_np).max() > 1e-3 and np.abs(drop_t - eval_t).max() > 1e-3


def test_weights_round_trip_between_frameworks():
    cfg = ModelConfig(**SMALL, tie_word_embeddings=False, norm_position="pre")
    model = MiniBERT(cfg, seed=11)
    twin = TorchMiniBERT(cfg)                                      # its own (different) initialisation
    twin.load_numpy_state(model.state_dict())
    back = twin.numpy_state()
    assert set(back) == set(model.params)
    for name, value in model.params.items():
        np.testing.assert_array_equal(back[name], value, err_msg=name)


def test_load_numpy_state_names_a_wrong_shape():
    cfg = ModelConfig(**SMALL)
    state = MiniBERT(cfg).state_dict()
    state["W1_1"] = state["W1_1"][:, :-1]
    with pytest.raises(ValueError, match="W1_1"):
        TorchMiniBERT(cfg).load_numpy_state(state)
