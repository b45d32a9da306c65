"""Intrinsic evaluation: categories with known answers, agreement with the Level-1 metrics, bad input."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from mini_bert.config import SPECIAL_TOKENS, ModelConfig
from mini_bert.core.gradients import mlm_cross_entropy
from mini_bert.core.model import MiniBERT
from mini_bert.evaluation.intrinsic import (FREQUENCY_BANDS, WORD_TYPES, count_tokens, format_intrinsic_table,
                                            frequency_bands, intrinsic_evaluation, token_word_types)
from mini_bert.evaluation.metrics import masked_accuracy

VOCAB = SPECIAL_TOKENS + ["the", "of", "dog", "runs", "##s", ",", "42", "She", "table"]
#                         5      6     7      8       9      10   11    12     13


def make_batch(rng, V, B=3, T=10):
    ids = rng.integers(len(SPECIAL_TOKENS), V, size=(B, T))
    mask = rng.random((B, T)) < 0.4
    mask[:, 0] = True
    inp = np.where(mask, 4, ids)
    return SimpleNamespace(input_ids=inp, target_ids=ids, mask_positions=mask,
                           attention_mask=np.ones((B, T), dtype=np.int64), token_type_ids=np.zeros((B, T), np.int64))


def test_word_types_of_a_small_vocabulary():
    types = [WORD_TYPES[k] for k in token_word_types(VOCAB)]
    assert types[:5] == ["other"] * 5                               # special tokens
    assert types[5:] == ["function", "function", "content", "content", "word piece", "other", "other",
                         "function", "content"]                    # "She" is matched case-insensitively


def test_frequency_bands_follow_ranks():
    counts = np.zeros(1500, dtype=np.int64)
    counts[5:1205] = np.arange(1200, 0, -1)                        # id 5 most frequent, id 1204 least
    bands = frequency_bands(counts)
    assert (bands[5:105] == 0).all() and (bands[105:1005] == 1).all() and (bands[1005:1205] == 2).all()
    assert (bands[1205:] == len(FREQUENCY_BANDS) - 1).all()        # never seen: the rare band


def test_count_tokens_skips_special_tokens():
    counts = count_tokens([np.array([2, 5, 5, 7, 3]), np.array([[5, 0], [0, 9]])], 10)
    assert counts.tolist() == [0, 0, 0, 0, 0, 3, 0, 1, 0, 1]


def test_overall_numbers_agree_with_the_level1_metrics():
    rng = np.random.default_rng(0)
    cfg = ModelConfig(vocab_size=len(VOCAB), hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                      max_position_embeddings=16)
    model = MiniBERT(cfg, seed=0)
    batches = [make_batch(rng, len(VOCAB)) for _ in range(3)]
    result = intrinsic_evaluation(model, batches, vocab=VOCAB)
    losses, accs, ns = [], [], []
    for b in batches:
        logits, _ = model.forward(b.input_ids, b.attention_mask, masked_positions=b.mask_positions)
        loss, _ = mlm_cross_entropy(logits, b.target_ids, b.mask_positions)
        n = int(b.mask_positions.sum())
        losses.append(loss * n)
        accs.append(masked_accuracy(logits, b.target_ids[b.mask_positions]) * n)
        ns.append(n)
    assert result["masked_tokens"] == sum(ns)
    assert result["loss"] == pytest.approx(sum(losses) / sum(ns), rel=1e-5)
    assert result["accuracy"] == pytest.approx(sum(accs) / sum(ns))
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))
    for split in ("by_word_type", "by_frequency"):
        parts = result[split].values()
        assert sum(p["count"] for p in parts) == result["masked_tokens"]
        weighted = sum(p["accuracy"] * p["count"] for p in parts if p["count"])
        assert weighted / result["masked_tokens"] == pytest.approx(result["accuracy"])
    assert "masked" in format_intrinsic_table(result)


class FunctionWordOracle:
    """A stand-in model that predicts the target exactly when it is a function word, and [UNK] otherwise."""

    def __init__(self, vocab):
        self.config = SimpleNamespace(vocab_size=len(vocab))
        self.is_function = token_word_types(vocab) == 0

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, training=False, masked_positions=None):
        targets = self.targets[masked_positions]
        logits = np.zeros((len(targets), self.config.vocab_size), dtype=np.float32)
        logits[:, 1] = 1.0
        hit = self.is_function[targets]
        logits[np.flatnonzero(hit), targets[hit]] = 5.0
        return logits, {}


def test_function_word_oracle_scores_one_on_function_words_and_zero_elsewhere():
    rng = np.random.default_rng(1)
    model = FunctionWordOracle(VOCAB)
    batch = make_batch(rng, len(VOCAB), B=4, T=20)
    model.targets = batch.target_ids
    result = intrinsic_evaluation(model, [batch], vocab=VOCAB)
    by_type = result["by_word_type"]
    assert by_type["function"]["count"] > 0 and by_type["function"]["accuracy"] == 1.0
    assert by_type["content"]["count"] > 0 and by_type["content"]["accuracy"] == 0.0
    assert by_type["function"]["loss"] < by_type["content"]["loss"]


def test_bad_inputs_raise_clear_errors():
    cfg = ModelConfig(vocab_size=len(VOCAB), hidden_size=8, num_layers=1, num_heads=2, intermediate_size=8,
                      max_position_embeddings=16)
    model = MiniBERT(cfg)
    with pytest.raises(ValueError, match="no validation batches"):
        intrinsic_evaluation(model, [])
    batch = make_batch(np.random.default_rng(0), len(VOCAB))
    with pytest.raises(ValueError, match="vocab has 3 tokens"):
        intrinsic_evaluation(model, [batch], vocab=["a", "b", "c"])
    with pytest.raises(ValueError, match="token_counts has 2 entries"):
        intrinsic_evaluation(model, [batch], token_counts=np.array([1, 2]))
    batch.mask_positions[:] = False
    with pytest.raises(ValueError, match="no masked positions"):
        intrinsic_evaluation(model, [batch])
