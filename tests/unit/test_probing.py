"""The POS probe: the logistic-regression math, the baselines with known answers, word-vector extraction, and the
probe end to end on a tiny random model with a few real EWT sentences."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import scipy.sparse

from mini_bert.config import CLS_ID, SEP_ID, ModelConfig
from mini_bert.core.model import MiniBERT
from mini_bert.evaluation.linear_models import (fit_logistic_regression, fit_with_held_out_l2,
                                                softmax_regression_objective)
from mini_bert.evaluation.probing import (_windows, control_task_tags, extract_word_features,
                                          majority_tag_baseline, probe_pos_checkpoint, run_pos_probe)
from mini_bert.data.sources import data_root

SENTENCES = [
    "the cat sat on the mat .", "a dog runs in the park .", "she reads a long book about cats .",
    "they walked home quickly after the rain stopped .", "birds sing in the early morning .",
    "the old man gave his grandson a wooden toy .", "we will meet at noon tomorrow .",
    "unbelievably , the tiny kitten climbed the enormous tree .",
]


def tiny_tokenizer():
    from mini_bert.data.tokenizer import WordPieceTokenizer

    return WordPieceTokenizer.train(SENTENCES * 3, vocab_size=300, lowercase=True)


def tiny_model(vocab_size, max_pos=32, layers=2, seed=0):
    cfg = ModelConfig(vocab_size=vocab_size, hidden_size=16, num_layers=layers, num_heads=2, intermediate_size=32,
                      max_position_embeddings=max_pos)
    return MiniBERT(cfg, seed=seed)


# ----------------------------------------------------------------------------------------------------------------
# Logistic regression


@pytest.mark.parametrize("sparse", [False, True])
def test_objective_gradient_matches_finite_differences(sparse):
    rng = np.random.default_rng(0)
    N, F, C, l2 = 7, 5, 3, 0.3
    X = rng.normal(size=(N, F))
    if sparse:
        X[rng.random((N, F)) < 0.5] = 0.0
        X = scipy.sparse.csr_matrix(X)
    y = rng.integers(0, C, N)
    theta = rng.normal(size=(F + 1) * C)
    _, grad = softmax_regression_objective(theta, X, y, C, l2)
    eps = 1e-6
    numeric = np.empty_like(theta)
    for i in range(len(theta)):
        e = np.zeros_like(theta)
        e[i] = eps
        numeric[i] = (softmax_regression_objective(theta + e, X, y, C, l2)[0]
                      - softmax_regression_objective(theta - e, X, y, C, l2)[0]) / (2 * eps)
    rel = np.abs(grad - numeric).max() / np.abs(numeric).max()
    assert rel < 1e-7, f"relative gradient error {rel:.2e}"


def test_objective_of_zero_weights_is_log_num_classes():
    X = np.ones((4, 3))
    loss, _ = softmax_regression_objective(np.zeros(4 * 5), X, np.array([0, 1, 2, 4]), 5, 0.1)
    assert loss == pytest.approx(np.log(5))


def test_linearly_separable_toy_set_is_fitted_perfectly():
    rng = np.random.default_rng(1)
    centers = np.array([[4.0, 0.0], [-4.0, 0.0], [0.0, 4.0]])
    y = rng.integers(0, 3, 300)
    X = (centers[y] + rng.uniform(-1, 1, size=(300, 2))).astype(np.float32)
    labels = np.array([10, 20, 30])[y]                  # arbitrary label values come back as themselves
    clf = fit_logistic_regression(X[:200], labels[:200], l2=1e-4)
    assert clf.converged
    assert clf.accuracy(X[:200], labels[:200]) == 1.0
    assert clf.accuracy(X[200:], labels[200:]) == 1.0
    assert set(clf.predict(X)) == {10, 20, 30}


def test_stronger_l2_shrinks_the_weights():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(100, 4))
    y = (X[:, 0] + 0.5 * rng.normal(size=100) > 0).astype(int)
    weak = fit_logistic_regression(X, y, l2=1e-4)
    strong = fit_logistic_regression(X, y, l2=1.0)
    assert np.linalg.norm(strong.W) < 0.5 * np.linalg.norm(weak.W)


def test_held_out_selection_records_every_grid_value_and_picks_the_best():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(400, 6))
    y = (X @ rng.normal(size=6) > 0).astype(int)
    clf = fit_with_held_out_l2(X, y, grid=(10.0, 1e-3), rng=np.random.default_rng(0))
    assert set(clf.held_out_accuracy) == {10.0, 1e-3}
    best = max(clf.held_out_accuracy.values())
    assert clf.held_out_accuracy[clf.l2] == best
    assert clf.accuracy(X, y) > 0.9


def test_bad_classifier_inputs_raise_clear_errors():
    X = np.zeros((3, 2))
    with pytest.raises(ValueError, match="3 rows but y has 2"):
        fit_logistic_regression(X, np.array([0, 1]))
    with pytest.raises(ValueError, match="integers"):
        fit_logistic_regression(X, np.array([0.0, 1.0, 0.5]))
    with pytest.raises(ValueError, match="zero examples"):
        fit_logistic_regression(np.zeros((0, 2)), np.array([], dtype=int))


# ----------------------------------------------------------------------------------------------------------------
# Baselines with known answers


def test_majority_baseline_known_answers():
    train_words = ["the", "run", "run", "run", "dog", "the", "fast", "fast"]
    train_tags = ["DET", "VERB", "NOUN", "VERB", "NOUN", "DET", "ADJ", "ADV"]
    # NOUN, VERB and DET are the most frequent tags overall (2 each); ADJ/ADV tie for "fast" -> ADJ (alphabetical).
    preds = majority_tag_baseline(train_words, train_tags, ["run", "the", "dog", "fast", "cat"])
    assert preds[:4] == ["VERB", "DET", "NOUN", "ADJ"]
    assert preds[4] in ("DET", "NOUN", "VERB")          # unseen: a globally most frequent tag
    assert preds[4] == "DET"                            # ...the first of them alphabetically: deterministic


def test_majority_baseline_unseen_words_get_the_most_frequent_tag():
    preds = majority_tag_baseline(["a", "b", "c"], ["X", "Y", "Y"], ["zzz", "a"])
    assert preds == ["Y", "X"]
    with pytest.raises(ValueError, match="must match"):
        majority_tag_baseline(["a"], [], ["a"])


def test_control_task_gives_each_type_one_tag_everywhere():
    rng = np.random.default_rng(0)
    train = ["The", "the", "dog", "dog", "cat", "ran"]
    tags = ["DET", "DET", "NOUN", "NOUN", "NOUN", "VERB"]
    c_train, c_test = control_task_tags(train, ["dog", "THE", "new"], tags, rng, lowercase=True)
    assert c_train[0] == c_train[1] == c_test[1]         # The / the / THE: one type when lowercased
    assert c_train[2] == c_train[3] == c_test[0]         # dog
    assert set(c_train + c_test) <= set(tags)
    again, _ = control_task_tags(train, ["dog", "THE", "new"], tags, np.random.default_rng(0), lowercase=True)
    assert again == c_train                              # depends only on the generator


def test_control_task_tags_follow_the_tag_distribution():
    train = [f"w{i}" for i in range(4000)]
    tags = ["A"] * 3000 + ["B"] * 1000                   # 75% / 25%
    c_train, _ = control_task_tags(train, [], tags, np.random.default_rng(0))
    frac_a = np.mean([t == "A" for t in c_train])
    assert abs(frac_a - 0.75) < 0.03


# ----------------------------------------------------------------------------------------------------------------
# Word vectors


def test_windows_cut_between_words_only():
    ids = [10, 11, 12, 13, 14, 15, 16, 17, 18]
    words = [0, 0, 1, 2, 2, 2, 3, 4, 4]
    wins = _windows(ids, words, max_len=4)
    assert all(len(w_ids) <= 4 for w_ids, _ in wins)
    assert [i for w, _ in wins for i in w] == ids       # nothing lost, order kept
    for _, w_idx in wins[1:]:
        assert w_idx[0] not in wins[0][1]                # no word straddles two windows
    long = _windows([1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 1], max_len=3)
    assert long[0] == ([1, 2, 3], [0, 0, 0])           # an over-long word keeps its first max_len subwords


def test_word_features_match_the_cache_and_do_not_depend_on_batching():
    tok = tiny_tokenizer()
    model = tiny_model(tok.vocab_size)
    sents = [s.split() for s in SENTENCES] + ["zebras juggle xylophones .".split()]   # words the vocab lacks
    one = extract_word_features(model, tok, sents, batch_size=1)
    many = extract_word_features(model, tok, sents, batch_size=8)
    L, W, D = model.config.num_layers + 1, sum(len(s) for s in sents), model.config.hidden_size
    for p in ("first", "mean"):
        assert one[p].shape == (L, W, D) and one[p].dtype == np.float32
        np.testing.assert_allclose(one[p], many[p], atol=2e-5)   # padding must not change any vector
    # Recompute the last sentence by hand from the cache.
    words = sents[-1]
    ids, widx = tok.encode_words(words)
    _, cache = model.encode(np.array([[CLS_ID, *ids, SEP_ID]]))
    H = np.stack(cache["hidden_states"])[:, 0, 1:-1]             # (L+1, n_sub, D)
    widx = np.array(widx)
    assert len(widx) > len(words), "the test needs a word split into several subwords"
    first = np.stack([H[:, np.flatnonzero(widx == w)[0]] for w in range(len(words))], axis=1)
    mean = np.stack([H[:, widx == w].mean(axis=1) for w in range(len(words))], axis=1)
    np.testing.assert_allclose(one["first"][:, -len(words):], first, atol=1e-5)
    np.testing.assert_allclose(one["mean"][:, -len(words):], mean, atol=1e-5)


def test_long_sentences_are_split_into_windows():
    tok = tiny_tokenizer()
    model = tiny_model(tok.vocab_size, max_pos=8)
    long = (SENTENCES[2] + " " + SENTENCES[3]).split()       # far more than 6 subwords
    feats = extract_word_features(model, tok, [long], poolings=("first",))
    assert feats["first"].shape[1] == len(long)
    assert np.all(np.abs(feats["first"]).sum(axis=-1) > 0)   # every word got a vector


# ----------------------------------------------------------------------------------------------------------------
# End to end


@dataclass
class Tagged:
    words: list
    upos: list
    xpos: list


def test_probe_on_hand_made_data_returns_a_consistent_table():
    tok = tiny_tokenizer()
    model = tiny_model(tok.vocab_size)
    tag = {"the": "DET", "a": "DET", "his": "DET", ".": "PUNCT", ",": "PUNCT", "on": "ADP", "in": "ADP",
           "at": "ADP", "about": "ADP", "after": "ADP"}
    data = [Tagged(s.split(), [tag.get(w, "X") for w in s.split()], ["_"] * len(s.split())) for s in SENTENCES]
    result = run_pos_probe(model, tok, data[:6], data[6:], seed=0, log=None)
    assert len(result["layers"]) == model.config.num_layers + 1
    for row in result["layers"]:
        for p in ("first", "mean"):
            assert 0.0 <= row["trained"][p] <= 1.0
            assert row["selectivity"][p] == pytest.approx(row["trained"][p] - row["control_task"][p])
            assert 0.0 <= row["random_init"][p] <= 1.0
    import json
    json.dumps(result)                                   # JSON-serialisable


def test_max_sentences_must_be_positive(tmp_path):
    for bad in (0, -3):
        with pytest.raises(ValueError, match="--max-sentences must be a positive"):
            probe_pos_checkpoint(tmp_path, max_sentences=bad)
    from mini_bert.cli import main

    with pytest.raises(SystemExit) as exit_:              # the command refuses it as a usage error, exit 2
        main(["probe-pos", "--checkpoint", str(tmp_path), "--max-sentences", "0"])
    assert exit_.value.code == 2


def test_unknown_tagset_is_rejected():
    with pytest.raises(ValueError, match="upos or xpos"):
        probe_pos_checkpoint(None, tagset="ptb")


@pytest.mark.skipif(not (data_root() / "ud-english-ewt").is_dir(), reason="UD English-EWT not under data_root()")
def test_probe_end_to_end_on_real_ewt_sentences():
    from mini_bert.data.readers import load_ewt
    from mini_bert.data.tokenizer import WordPieceTokenizer

    train, dev = load_ewt("train")[:120], load_ewt("dev")[:40]
    tok = WordPieceTokenizer.train([" ".join(s.words) for s in train], vocab_size=400)
    model = tiny_model(tok.vocab_size, max_pos=64)
    result = run_pos_probe(model, tok, train, dev, tagset="upos", log=None)
    assert result["train"]["sentences"] == 120 and result["dev"]["sentences"] == 40
    assert 0.5 < result["majority_baseline"] < 1.0
    first = result["layers"][0]
    # Even a random model's embeddings identify frequent words, so a probe beats always answering NOUN.
    noun_rate = np.mean([t == "NOUN" for s in dev for t in s.upos])
    assert first["trained"]["mean"] > noun_rate + 0.1
    assert result["best"]["accuracy"] == max(max(r["trained"].values()) for r in result["layers"])
