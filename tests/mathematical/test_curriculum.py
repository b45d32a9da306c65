"""Curriculum batches, adaptive and rarity-weighted masking, and sentence-order prediction as an auxiliary task."""

from __future__ import annotations

import json

import numpy as np
import pytest

from gradcheck import numeric_gradient, relative_error
from mini_bert import MiniBERT, MiniBERTGradients, ModelConfig, mask_tokens
from mini_bert.config import CLS_ID, MASK_ID, PAD_ID, SEP_ID
from mini_bert.training.curriculum import (AdaptiveMasking, CurriculumBatches, add_auxiliary_tasks,
                                           difficulty_mask_probabilities, difficulty_scores,
                                           implement_adaptive_masking, implement_curriculum_learning,
                                           linear_schedule, make_sop_batch, mask_tokens_by_difficulty,
                                           multitask_loss_and_gradients, segment_pairs, sqrt_schedule,
                                           unigram_surprisal)
from mini_bert.data.batches import Batch, pack_sequences
from mini_bert.training.optimizer import AdamW, decay_mask

V = 40


def _rows(n=40, T=12, seed=0):
    """Packed rows [CLS] ... [SEP] [PAD]..., tokens drawn from a Zipf-like distribution over ids 5..V-1, so rows
    differ in rarity; lengths vary, every row is distinct."""
    rng = np.random.default_rng(seed)
    weights = 1.0 / np.arange(1, V - 4)
    ids = np.full((n, T), PAD_ID, dtype=np.int32)
    for r in range(n):
        length = rng.integers(3, T - 1)
        ids[r, 0] = CLS_ID
        ids[r, 1:1 + length] = rng.choice(np.arange(5, V), size=length, p=weights / weights.sum())
        ids[r, 1 + length] = SEP_ID
    assert len({row.tobytes() for row in ids}) == n
    return ids, np.zeros_like(ids)


# --------------------------------------------------------------------------------------------------------------
# Difficulty and schedules


def test_unigram_surprisal_is_minus_log_smoothed_frequency():
    rows = np.array([[CLS_ID, 5, 5, 6, SEP_ID, PAD_ID], [CLS_ID, 5, 1, MASK_ID, SEP_ID, PAD_ID]])
    s = unigram_surprisal(rows, 8)
    # text-token counts + 1: [UNK]=1+1, id5=3+1, id6=1+1, id7=0+1; total 2+4+2+1 = 9
    np.testing.assert_allclose(s[[1, 5, 6, 7]], -np.log(np.array([2, 4, 2, 1]) / 9), rtol=1e-12)
    assert np.all(s[[PAD_ID, CLS_ID, SEP_ID, MASK_ID]] == 0)
    with pytest.raises(ValueError, match="vocab_size"):
        unigram_surprisal(rows, 6)


def test_difficulty_scores_rank_rare_rows_and_long_rows_higher():
    rows = np.array([[CLS_ID, 5, 5, 5, SEP_ID, PAD_ID],      # frequent token only
                     [CLS_ID, 5, 9, SEP_ID, PAD_ID, PAD_ID],   # one rare token
                     [CLS_ID, 9, 8, 7, 6, SEP_ID]])            # rare tokens only, and the longest
    rarity = difficulty_scores(rows, "rarity", unigram_surprisal(rows, 10))
    assert rarity[0] < rarity[1] < rarity[2]
    np.testing.assert_array_equal(difficulty_scores(rows, "length"), [5, 4, 6])
    with pytest.raises(ValueError, match="rarity"):
        difficulty_scores(rows, "entropy")


def test_schedules():
    lin = linear_schedule(0.3, 1.0, 10)
    assert [lin(s) for s in (0, 5, 10, 50)] == pytest.approx([0.3, 0.65, 1.0, 1.0])
    sq = sqrt_schedule(0.3, 10)
    values = [sq(s) for s in range(12)]
    assert values[0] == pytest.approx(0.3) and values[10] == pytest.approx(1.0) and values[11] == pytest.approx(1.0)
    assert np.all(np.diff(values[:11]) > 0) and np.all(np.diff(np.diff(values[:11])) < 0)   # rising, concave
    with pytest.raises(ValueError):
        linear_schedule(0.0, 1.0, 10)


# --------------------------------------------------------------------------------------------------------------
# Curriculum batches


def _row_index(ids):
    return {row.tobytes(): i for i, row in enumerate(ids)}


def test_curriculum_draws_only_from_the_easiest_rows_until_competence_grows():
    ids, types = _rows()
    index = _row_index(ids)
    stream = implement_curriculum_learning(linear_schedule(0.25, 1.0, 20), ids, types, batch_size=4,
                                           vocab_size=V, difficulty="length", seed=3)
    lengths = (ids != PAD_ID).sum(1)
    easiest_10 = set(stream.order[:10].tolist())
    assert max(lengths[list(easiest_10)]) <= min(np.delete(lengths, list(easiest_10)))
    seen_late = set()
    for step in range(60):
        pool = set(stream.order[:stream.pool_size()].tolist())
        batch = stream.next_batch()
        assert isinstance(batch, Batch) and batch.input_ids.shape == (4, ids.shape[1])
        rows = [index[r.tobytes()] for r in batch.target_ids]
        assert len(set(rows)) == 4                              # distinct rows within a batch
        assert set(rows) <= pool, f"step {step}: a row outside the easiest {len(pool)}"
        if step == 0:
            assert pool == easiest_10
        if step >= 20:
            seen_late |= set(rows)
        assert batch.mask_positions.any(axis=1).all()
        np.testing.assert_array_equal(batch.attention_mask, batch.target_ids != PAD_ID)
    assert seen_late - easiest_10, "at full competence the hard rows must appear"


def test_curriculum_is_deterministic_and_resumes_exactly():
    ids, types = _rows()
    make = lambda seed: CurriculumBatches(ids, types, 5, V, linear_schedule(0.3, 1.0, 8), seed=seed)  # noqa: E731
    a, b, c = make(1), make(1), make(2)
    first_a = [a.next_batch() for _ in range(4)]
    first_b = [b.next_batch() for _ in range(4)]
    first_c = [c.next_batch() for _ in range(4)]
    for x, y in zip(first_a, first_b):
        np.testing.assert_array_equal(x.input_ids, y.input_ids)
    assert any(not np.array_equal(x.input_ids, z.input_ids) for x, z in zip(first_a, first_c))
    state = json.loads(json.dumps(a.state_dict()))           # survives a JSON checkpoint
    rest = [a.next_batch() for _ in range(10)]                # crosses the end of the schedule (step 8)
    resumed = make(99)
    resumed.load_state_dict(state)
    for x, y in zip(rest, [resumed.next_batch() for _ in range(10)]):
        for field in ("input_ids", "target_ids", "mask_positions", "attention_mask", "token_type_ids"):
            np.testing.assert_array_equal(getattr(x, field), getattr(y, field))
    other = CurriculumBatches(ids[::-1].copy(), types, 5, V, linear_schedule(0.3, 1.0, 8), difficulty="length")
    with pytest.raises(ValueError, match="other rows"):
        other.load_state_dict(state)


def test_curriculum_rejects_bad_difficulty_and_schedule():
    ids, types = _rows()
    with pytest.raises(ValueError, match="one score per row"):
        CurriculumBatches(ids, types, 4, V, difficulty=np.zeros(3))
    with pytest.raises(ValueError, match="fraction"):
        CurriculumBatches(ids, types, 4, V, schedule=lambda s: 1.5).next_batch()


# --------------------------------------------------------------------------------------------------------------
# Masking


def test_adaptive_masking_rule():
    m = AdaptiveMasking(start=0.15, min_ratio=0.10, max_ratio=0.20, step_up=0.01, step_down=0.02,
                        fast_gain=0.005, rise_tolerance=0.02, smoothing=0.0)
    assert m.update(valid_masked_acc=0.30) == 0.15           # the first evaluation only records
    assert m.update(valid_masked_acc=0.302) == 0.15          # slow gain: unchanged
    assert m.update(valid_masked_acc=0.32) == pytest.approx(0.16)   # fast gain: harder
    for acc in (0.34, 0.36, 0.38, 0.40, 0.42, 0.44, 0.46):
        m.update(valid_masked_acc=acc)
    assert m.ratio == pytest.approx(0.20)                    # capped at max_ratio
    assert m.update(train_loss=3.0) == pytest.approx(0.20)
    assert m.update(train_loss=3.05) == pytest.approx(0.20)  # +1.7%: within the tolerance
    assert m.update(train_loss=3.1) == pytest.approx(0.18)   # +3.3% over the best: easier
    assert m.update(train_loss=3.1) == pytest.approx(0.18)   # judged against the loss since the change
    # both at once: the drop wins
    assert m.update(train_loss=3.3, valid_masked_acc=0.60) == pytest.approx(0.16)
    for loss in (4, 5, 6, 7, 8):
        m.update(train_loss=loss)
    assert m.ratio == pytest.approx(0.10)                    # floored at min_ratio
    clone = AdaptiveMasking()
    clone.load_state_dict(json.loads(json.dumps(m.state_dict())))
    assert clone.update(train_loss=9.0, valid_masked_acc=0.7) == m.update(train_loss=9.0, valid_masked_acc=0.7)
    with pytest.raises(ValueError):
        AdaptiveMasking(start=0.5, max_ratio=0.4)


def test_adaptive_masking_replays_metrics_and_drives_the_stream():
    records = [{"train_loss": 3.0}, {"train_loss": 2.9, "valid_masked_acc": 0.1},
               {"train_loss": 2.8, "valid_masked_acc": 0.2}, {"step": 4}]
    ratios = implement_adaptive_masking(records, AdaptiveMasking(smoothing=0.0))
    assert ratios == pytest.approx([0.15, 0.15, 0.16, 0.16])
    ids, types = _rows(n=200, T=24)
    stream = CurriculumBatches(ids, types, 200, V, linear_schedule(1.0, 1.0, 1))
    low = stream.next_batch().mask_positions.sum()
    stream.mask_prob = 0.4                                    # what a trainer does with masking.ratio
    high = stream.next_batch().mask_positions.sum()
    assert high > 2 * low


def test_difficulty_mask_probabilities_preserve_the_expected_rate():
    ids, _ = _rows(n=30, T=16)
    s = unigram_surprisal(ids, V)
    candidates = ~np.isin(ids, (PAD_ID, CLS_ID, SEP_ID))
    for strength in (0.0, 1.0, 3.0, 12.0):                   # 12: strong enough to cap some tokens at 1
        p = difficulty_mask_probabilities(ids, s, 0.3, strength)
        assert np.all((p >= 0) & (p <= 1 + 1e-12)) and np.all(p[~candidates] == 0)
        np.testing.assert_allclose(p.sum(1), 0.3 * candidates.sum(1), rtol=1e-12)
        if strength == 0:
            np.testing.assert_allclose(p[candidates], 0.3)
        else:                                                 # rarer -> at least as likely, within each row
            for r in range(len(ids)):
                c = candidates[r]
                order = np.argsort(s[ids[r][c]], kind="stable")
                assert np.all(np.diff(p[r][c][order]) >= -1e-12)
    assert (difficulty_mask_probabilities(ids, s, 0.3, 12.0) >= 1 - 1e-12).any()


def test_mask_tokens_by_difficulty_rate_and_preference():
    rng = np.random.default_rng(0)
    ids = np.full((400, 64), 5, dtype=np.int32)               # id 5 frequent, id 6 rare (1 in 8)
    ids[:, ::8] = 6
    ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
    s = unigram_surprisal(ids, V)
    inp, tgt, sel = mask_tokens_by_difficulty(ids, V, s, mask_prob=0.15, strength=2.0, rng=rng)
    candidates = ~np.isin(ids, (PAD_ID, CLS_ID, SEP_ID))
    rate = sel[candidates].mean()
    assert abs(rate - 0.15) < 0.005, rate                     # 25,000 candidates: sd of the rate ~0.002
    assert not sel[~candidates].any()
    assert sel[ids == 6].mean() > 2 * sel[ids == 5].mean()
    np.testing.assert_array_equal(tgt, ids)
    assert (inp[sel] == MASK_ID).mean() == pytest.approx(0.8, abs=0.03)
    assert np.array_equal(inp[~sel], ids[~sel])
    # strength 0 selects like BERT's rule
    _, _, sel0 = mask_tokens_by_difficulty(ids, V, s, 0.15, strength=0.0, rng=rng)
    assert abs(sel0[ids == 6].mean() - sel0[ids == 5].mean()) < 0.02


# --------------------------------------------------------------------------------------------------------------
# Sentence-order prediction


def test_sop_batch_layout_labels_and_truncation():
    pairs = [(np.array([10, 11, 12]), np.array([20, 21])), (np.array([13]), np.array([22, 23, 24, 25]))]
    batch = make_sop_batch(pairs * 200, np.random.default_rng(0))
    assert 0.4 < batch.labels.mean() < 0.6
    for row, types, label, (a, b) in zip(batch.input_ids, batch.token_type_ids, batch.labels, pairs * 200):
        x, y = (b, a) if label == 1 else (a, b)
        expected = np.concatenate([[CLS_ID], x, [SEP_ID], y, [SEP_ID]])
        np.testing.assert_array_equal(row[:len(expected)], expected)
        assert np.all(row[len(expected):] == PAD_ID)
        np.testing.assert_array_equal(types[:len(expected)], [0] * (len(x) + 2) + [1] * (len(y) + 1))
    np.testing.assert_array_equal(batch.attention_mask, batch.input_ids != PAD_ID)
    # cut to 8 tokens (5 of text), always from the longer segment (A on ties), A from its start, B from its end:
    # A 6 -> 3 tokens, tie, A -> 2; B keeps 3
    long = [(np.arange(10, 16), np.arange(20, 23))]
    cut = make_sop_batch(long, np.random.default_rng(1), max_len=8, swap_prob=0.0)
    np.testing.assert_array_equal(cut.input_ids[0], [CLS_ID, 14, 15, SEP_ID, 20, 21, 22, SEP_ID])
    cut = make_sop_batch([(np.arange(10, 12), np.arange(20, 27))], np.random.default_rng(1), max_len=8,
                         swap_prob=1.0)                       # B 7 -> 3 from its end; swapped: [CLS] B [SEP] A [SEP]
    np.testing.assert_array_equal(cut.input_ids[0], [CLS_ID, 20, 21, 22, SEP_ID, 10, 11, SEP_ID])
    with pytest.raises(ValueError, match="empty segment"):
        make_sop_batch([(np.array([5]), np.array([], dtype=int))], np.random.default_rng(0))


def test_segment_pairs_recovers_packed_pairs():
    sentences = [np.array([5, 6, 7]), np.array([8, 9]), np.array([10, 11, 12, 13]), np.array([14])]
    ids, types = pack_sequences(sentences, max_len=16, pairs=True)
    pairs = segment_pairs(ids, types)
    assert len(pairs) == len(ids)
    for (a, b), row in zip(pairs, ids):
        np.testing.assert_array_equal(np.concatenate([a, b]), row[(row > SEP_ID)])


def _tiny_float64_model():
    cfg = ModelConfig(vocab_size=19, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=12,
                      max_position_embeddings=10, dtype="float64", dropout=0.0, attention_dropout=0.0,
                      layer_norm_eps=1e-5)
    model = MiniBERT(cfg, seed=1)
    model.store.flat += np.random.default_rng(5).normal(0, 0.1, model.store.flat.shape)  # off the special init
    return model


def test_multitask_gradient_is_the_gradient_of_the_weighted_sum():
    model = _tiny_float64_model()
    grads = MiniBERTGradients(model)
    rng = np.random.default_rng(2)
    ids = rng.integers(5, 19, (2, 8))
    ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
    inp, tgt, pos = mask_tokens(ids, 19, MASK_ID, 0.3, rng)
    mlm = Batch(inp, tgt, pos, np.ones_like(ids), np.zeros_like(ids))
    sop = make_sop_batch([(rng.integers(5, 19, 3), rng.integers(5, 19, 2)) for _ in range(3)], rng)
    w = 0.7
    loss, parts = multitask_loss_and_gradients(model, grads, mlm, sop, sop_weight=w)
    assert loss == pytest.approx(parts["mlm_loss"] + w * parts["sop_loss"], rel=1e-12)
    analytic = grads.flat.copy()
    numeric = numeric_gradient(lambda: multitask_loss_and_gradients(model, grads, mlm, sop, w)[0], model.store.flat)
    err = relative_error(analytic, numeric)
    print(f"multitask MLM + {w} SOP: relative error {err:.2e}")
    assert err < 1e-6
    # both tasks really contribute: the pooler only through SOP, the MLM head only through MLM
    sl_pool, sl_mlm = model.store.slices["W_pool"], model.store.slices["W_mlm"]
    assert np.abs(analytic[sl_pool]).max() > 0 and np.abs(analytic[sl_mlm]).max() > 0
    multitask_loss_and_gradients(model, grads, mlm, sop, sop_weight=0.0)
    assert np.all(grads.flat[sl_pool] == 0)


def test_sop_is_learnable_on_a_toy_set():
    """A's tokens come from 5..13 and B's from 14..23: the order is visible, and the model must learn to read it
    from [CLS] through the pooler while also doing MLM. (initializer_range 0.1: from BERT's 0.02 a model this
    small sits on a plateau for a variable number of steps before SOP takes off; measured over seeds 0-3, 0.1
    reaches 95% held-out accuracy within 60 steps.)"""
    cfg = ModelConfig(vocab_size=24, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                      max_position_embeddings=16, dropout=0.0, attention_dropout=0.0, initializer_range=0.1)
    model = MiniBERT(cfg, seed=0)
    grads = MiniBERTGradients(model)
    opt = AdamW(model.store.flat, decay_mask(model.store), lr=1e-2)
    tasks = add_auxiliary_tasks(model, sop_weight=1.0)
    rng = np.random.default_rng(0)

    def pairs(n):
        return [(rng.integers(5, 14, rng.integers(2, 5)), rng.integers(14, 24, rng.integers(2, 5))) for _ in range(n)]

    held_out = make_sop_batch(pairs(200), np.random.default_rng(9))
    for _ in range(150):
        sop = make_sop_batch(pairs(32), rng)
        inp, tgt, pos = mask_tokens(sop.input_ids, 24, MASK_ID, 0.15, rng)
        mlm = Batch(inp, tgt, pos, sop.attention_mask, sop.token_type_ids)
        loss, parts = tasks(grads, mlm, sop, rng)
        assert np.isfinite(loss)
        opt.step(grads.flat)
    logits, _ = model.forward_classifier(held_out.input_ids, held_out.attention_mask, held_out.token_type_ids)
    acc = (logits.argmax(-1) == held_out.labels).mean()
    print(f"SOP held-out accuracy after 150 steps: {acc:.3f}")
    assert acc > 0.9


def test_auxiliary_tasks_need_a_two_way_head():
    model = MiniBERT(ModelConfig(vocab_size=24, hidden_size=8, num_layers=1, num_heads=2, intermediate_size=8,
                                 max_position_embeddings=8, num_labels=3), seed=0)
    with pytest.raises(ValueError, match="num_labels"):
        add_auxiliary_tasks(model)
