"""Activation checkpointing (training/checkpoint_utils.py): the same loss and gradients as the normal path with
dropout on, the same generator state afterwards, and less cache memory."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from mini_bert import MiniBERT, MiniBERTGradients, ModelConfig
from mini_bert.core.variants import AdvancedMiniBERT, AdvancedMiniBERTGradients
from mini_bert.training import checkpoint_utils as cu


def _model(dtype="float32", norm="post", layers=4, cls=MiniBERT, **kw):
    cfg = ModelConfig(vocab_size=50, hidden_size=16, num_layers=layers, num_heads=2, intermediate_size=32,
                      max_position_embeddings=24, dropout=0.2, attention_dropout=0.2, norm_position=norm,
                      dtype=dtype, activation="gelu")
    return cls(cfg, seed=3, **kw)


def _both_paths(model, G, batch, segments):
    """(loss, gradient buffers, generator state after) of the normal and of the checkpointed path."""
    out = []
    for checkpointed in (False, True):
        rng = np.random.default_rng(11)
        grads = G(model)
        if checkpointed:
            loss, report = cu.checkpointed_loss_and_gradients(model, grads, batch, segments=segments, rng=rng)
        else:
            loss, _ = cu.loss_and_gradients(model, grads, batch, rng=rng)
        flats = grads.flat_views() if hasattr(grads, "flat_views") else (grads.flat,)
        out.append((loss, [f.copy() for f in flats], rng.random(3)))
    return out, report


@pytest.mark.parametrize("dtype,norm,segments", [("float32", "post", None), ("float32", "pre", 2),
                                                 ("float64", "post", 1), ("float64", "pre", 3)])
def test_gradients_identical_to_normal_path_with_dropout(dtype, norm, segments):
    model = _model(dtype, norm)
    batch = cu.synthetic_batch(50, batch_size=3, seq_len=12, seed=1)
    (normal, ckpt), report = _both_paths(model, MiniBERTGradients, batch, segments)
    assert ckpt[0] == normal[0]
    np.testing.assert_array_equal(ckpt[1][0], normal[1][0])          # bit for bit, float32 included
    np.testing.assert_array_equal(ckpt[2], normal[2])                # the generator ends in the same state
    assert np.abs(normal[1][0]).max() > 0
    assert report["recomputed_layers"] == 4


def test_checkpointing_works_for_the_advanced_model():
    model = _model("float32", "post", layers=3, cls=AdvancedMiniBERT, rotary=True, relative_position=True,
                   gated_attention=True, absolute_positions=False, num_buckets=8, max_distance=6)
    batch = cu.synthetic_batch(50, batch_size=3, seq_len=12, seed=2)
    (normal, ckpt), _ = _both_paths(model, AdvancedMiniBERTGradients, batch, 2)
    assert ckpt[0] == normal[0]
    for a, b in zip(ckpt[1], normal[1]):
        np.testing.assert_array_equal(a, b)
    assert np.abs(normal[1][1]).max() > 0                            # the extra parameters received gradients


def test_default_rng_is_the_models_and_advances_like_forward():
    batch = cu.synthetic_batch(50, batch_size=2, seq_len=10, seed=3)
    a, b = _model(), _model()
    cu.loss_and_gradients(a, MiniBERTGradients(a), batch)
    cu.checkpointed_loss_and_gradients(b, MiniBERTGradients(b), batch)
    np.testing.assert_array_equal(a.rng.random(4), b.rng.random(4))


@pytest.mark.parametrize("segments", [4, 2, 1])
def test_cache_memory_drops_and_the_estimate_matches(segments):
    model = _model(layers=4)
    batch = cu.synthetic_batch(50, batch_size=4, seq_len=24, seed=4)
    grads = MiniBERTGradients(model)
    state = copy.deepcopy(model.rng)
    _, cache = cu.loss_and_gradients(model, grads, batch, rng=copy.deepcopy(state))
    full = cu.cache_nbytes(cache, exclude=cu.parameter_buffers(model))
    assert full < cu.cache_nbytes(cache)                              # LayerNorm caches hold gamma, a parameter view
    _, report = cu.checkpointed_loss_and_gradients(model, grads, batch, segments=segments, rng=copy.deepcopy(state))
    est = cu.memory_report(model, batch, segments=segments)
    assert est["full_cache_bytes"] == full
    assert report["peak_cache_bytes"] == est["checkpointed_peak_bytes"]
    if segments > 1:
        assert report["peak_cache_bytes"] < full
    # one segment per layer holds about one layer's cache instead of four
    if segments == 4:
        assert report["peak_cache_bytes"] < 0.5 * full
    assert report["saved_input_bytes"] == segments * 4 * 24 * 16 * 4


def test_cache_nbytes_counts_shared_buffers_once():
    a = np.zeros((10, 10), np.float32)
    assert cu.cache_nbytes({"a": a, "view": a[2:], "list": [a.T, (a[0],)]}) == 400
    assert cu.cache_nbytes({"a": a, "b": np.ones(5)}) == 440
    assert cu.cache_nbytes({"a": a[1], "b": np.ones(5)}, exclude=(a[3:],)) == 40


def test_bad_segments_and_batches_are_rejected():
    model = _model(layers=2)
    grads = MiniBERTGradients(model)
    batch = cu.synthetic_batch(50, batch_size=2, seq_len=8)
    for bad in (0, 3, 1.5):
        with pytest.raises(ValueError, match="segments"):
            cu.checkpointed_loss_and_gradients(model, grads, batch, segments=bad)
    with pytest.raises(ValueError, match="target_ids"):
        cu.checkpointed_loss_and_gradients(model, grads, {k: v for k, v in batch.items() if k != "target_ids"})
    assert [list(r) for r in cu.segment_bounds(5, 2)] == [[0, 1], [2, 3, 4]]
