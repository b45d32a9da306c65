"""SST-2 fine-tuning: batching, the fine-tuning loop on a tiny model, the bag-of-words baseline, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mini_bert.config import CLS_ID, PAD_ID, SEP_ID, ModelConfig, RunConfig
from mini_bert.core.model import MiniBERT
from mini_bert.cli.finetune import parse_seeds
from mini_bert.evaluation.downstream import (bag_of_words_baseline, encode_for_classification, finetune_classifier,
                                             finetune_sst2_checkpoint, format_sst2_table, ngram_features,
                                             predict_labels, run_sst2)
from mini_bert.data.batches import length_grouped_batches, pad_batch
from mini_bert.data.sources import data_root

POSITIVE = ["a wonderful , moving film", "great acting and a lovely story", "i loved every minute of it",
            "a delightful and funny ride", "beautiful , warm and wise", "the best film of the year"]
NEGATIVE = ["a dull , tedious mess", "boring and far too long", "i hated every minute of it",
            "a clumsy and lifeless film", "awful , cheap and stupid", "the worst film of the year"]
TEXTS = POSITIVE + NEGATIVE
LABELS = np.array([1] * len(POSITIVE) + [0] * len(NEGATIVE))


@pytest.fixture(scope="module")
def tok():
    from mini_bert.data.tokenizer import WordPieceTokenizer

    return WordPieceTokenizer.train(TEXTS * 3, vocab_size=300)


def tiny_model(vocab_size, seed=0, dropout=0.1):
    cfg = ModelConfig(vocab_size=vocab_size, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                      max_position_embeddings=16, dropout=dropout, attention_dropout=dropout)
    return MiniBERT(cfg, seed=seed)


def test_encoding_adds_cls_sep_and_truncates(tok):
    seqs = encode_for_classification(tok, ["a wonderful film", " ".join(["great"] * 40)], max_len=8)
    assert seqs[0][0] == CLS_ID and seqs[0][-1] == SEP_ID
    assert list(seqs[0][1:-1]) == tok.encode("a wonderful film")
    assert len(seqs[1]) == 8 and seqs[1][-1] == SEP_ID
    ids, mask = pad_batch(seqs)
    assert ids.shape == (2, 8) and ids[0, len(seqs[0]):].tolist() == [PAD_ID] * (8 - len(seqs[0]))
    assert mask.sum(axis=1).tolist() == [len(seqs[0]), 8]
    with pytest.raises(ValueError, match="max_len"):
        encode_for_classification(tok, ["x"], max_len=2)


def test_length_grouped_batches_cover_every_sentence_once_with_less_padding():
    lengths = np.random.default_rng(1).integers(3, 60, size=1_000)

    def padded(batches):
        return sum(len(b) * lengths[b].max() for b in batches)

    grouped = length_grouped_batches(lengths, 32, np.random.default_rng(0), pool_batches=10)
    assert len(grouped) == -(-1_000 // 32)
    assert sorted(np.concatenate(grouped).tolist()) == list(range(1_000))
    assert sorted(len(b) for b in grouped)[1:] == [32] * (len(grouped) - 1)     # one short batch at most
    order = np.random.default_rng(0).permutation(1_000)
    plain = [order[k:k + 32] for k in range(0, 1_000, 32)]
    assert padded(grouped) < 0.7 * padded(plain)
    # Each pool is sorted by length before it is cut: inside a batch, lengths span little of the range.
    assert np.median([np.ptp(lengths[b]) for b in grouped]) < 10
    # Pools of one batch are plain shuffling: the same batches as the permutation's consecutive slices.
    single = length_grouped_batches(lengths, 32, np.random.default_rng(0), pool_batches=1)
    assert sorted(tuple(sorted(b)) for b in single) == sorted(tuple(sorted(b)) for b in plain)
    with pytest.raises(ValueError, match="batch_size"):
        length_grouped_batches(lengths, 0, np.random.default_rng(0))


def test_finetuning_with_length_grouping_learns_and_differs_only_in_batch_order(tok):
    seqs = encode_for_classification(tok, TEXTS, 16)
    runs = {}
    for grouped in (False, True):
        model = tiny_model(tok.vocab_size, dropout=0.0)
        runs[grouped] = finetune_classifier(model, seqs, LABELS, seqs, LABELS, epochs=40, batch_size=4, lr=3e-3,
                                            evals_per_epoch=1, patience=100, seed=0, group_by_length=grouped,
                                            log=None)
    assert runs[True]["dev_accuracy"] == 1.0
    assert runs[True]["steps"] == runs[False]["steps"] == 40 * 3
    assert [h["train_loss"] for h in runs[True]["history"]] != [h["train_loss"] for h in runs[False]["history"]]


def test_finetuning_loss_decreases_and_best_weights_are_kept(tok):
    model = tiny_model(tok.vocab_size, dropout=0.0)
    seqs = encode_for_classification(tok, TEXTS, 16)
    result = finetune_classifier(model, seqs, LABELS, seqs, LABELS, epochs=40, batch_size=4, lr=3e-3,
                                 evals_per_epoch=1, patience=100, seed=0, log=None)
    losses = [h["train_loss"] for h in result["history"]]
    assert losses[-1] < 0.5 * losses[0], f"training loss did not fall: {losses[0]:.3f} -> {losses[-1]:.3f}"
    assert result["dev_accuracy"] == 1.0                # 12 sentences are easy to memorise
    # The model ends with the weights of its best evaluation.
    assert np.mean(predict_labels(model, seqs) == LABELS) == result["dev_accuracy"]


def test_layer_wise_lr_decay_moves_lower_layers_by_decay_powers(tok):
    """One step of the protocol's layer-wise decay: Adam's first step is the same for every element up to its rate,
    so the encoder layer moves decay^0 as far, and the embeddings decay^L, as without it; the head as far."""
    seqs = encode_for_classification(tok, TEXTS, 16)
    moved = {}
    for decay in (1.0, 0.5):
        model = tiny_model(tok.vocab_size, dropout=0.0)
        start = {k: v.copy() for k, v in model.params.items()}
        finetune_classifier(model, seqs, LABELS, seqs, LABELS, epochs=1, batch_size=len(seqs), lr=1e-2,
                            warmup_ratio=0.0, layer_lr_decay=decay, log=None)
        moved[decay] = {k: np.abs(model.params[k] - start[k]).sum() for k in ("E_token", "W1_0", "W_cls")}
    assert moved[0.5]["E_token"] == pytest.approx(0.5 * moved[1.0]["E_token"], rel=1e-4)   # embeddings: 0.5^L, L=1
    assert moved[0.5]["W1_0"] == pytest.approx(moved[1.0]["W1_0"], rel=1e-4)            # the top layer: 0.5^0
    assert moved[0.5]["W_cls"] == pytest.approx(moved[1.0]["W_cls"], rel=1e-4)          # the head: full rate
    assert moved[1.0]["E_token"] > 0 and moved[1.0]["W_cls"] > 0


def test_early_stopping_stops_after_patience_evaluations(tok):
    model = tiny_model(tok.vocab_size)
    seqs = encode_for_classification(tok, TEXTS, 16)
    result = finetune_classifier(model, seqs, LABELS, seqs, LABELS, epochs=50, batch_size=12, lr=0.0,
                                 evals_per_epoch=1, patience=2, log=None)
    # lr=0 never improves after the first evaluation: stop at the third.
    assert result["stopped_early"] and len(result["history"]) == 3 and result["best_step"] == 1


def test_run_sst2_restores_the_model_and_reports_seeds(tok):
    model = tiny_model(tok.vocab_size)
    before = model.store.flat.copy()
    result = run_sst2(model, tok, TEXTS, LABELS, TEXTS, LABELS, epochs=1, seeds=[0, 1], log=None, batch_size=4)
    np.testing.assert_array_equal(model.store.flat, before)
    for key in ("pretrained", "random_init"):
        accs = [r["dev_accuracy"] for r in result[key]["runs"]]
        assert [r["seed"] for r in result[key]["runs"]] == [0, 1]
        assert result[key]["mean"] == pytest.approx(np.mean(accs))
        assert result[key]["std"] == pytest.approx(np.std(accs, ddof=1))
    assert result["majority_class"] == 0.5
    json.dumps(result)


def test_skipped_arms_leave_the_others_unchanged(tok):
    model = tiny_model(tok.vocab_size)
    kwargs = dict(epochs=1, seeds=[0, 1], log=None, batch_size=4, adapt_steps=3)
    full = run_sst2(model, tok, TEXTS, LABELS, TEXTS, LABELS, **kwargs)
    adapted_only = run_sst2(model, tok, TEXTS, LABELS, TEXTS, LABELS, pretrained=False, random_init=False,
                            bag_of_words=False, **kwargs)
    assert {"pretrained", "random_init", "bag_of_words"}.isdisjoint(adapted_only)
    assert adapted_only["adapted"] == full["adapted"]
    assert "task-adaptive" in format_sst2_table(adapted_only) and "random init" not in format_sst2_table(adapted_only)
    with pytest.raises(ValueError, match="every fine-tuning arm is left out"):
        run_sst2(model, tok, TEXTS, LABELS, TEXTS, LABELS, pretrained=False, random_init=False, epochs=1, log=None)


def test_parallel_fine_tuning_gives_the_same_numbers(tok):
    model = tiny_model(tok.vocab_size)
    kwargs = dict(epochs=1, seeds=[0, 1], log=None, batch_size=4, bag_of_words=False)
    serial = run_sst2(model, tok, TEXTS, LABELS, TEXTS, LABELS, **kwargs)
    before = model.store.flat.copy()
    parallel = run_sst2(model, tok, TEXTS, LABELS, TEXTS, LABELS, n_jobs=2, **kwargs)
    np.testing.assert_array_equal(model.store.flat, before)
    for key in ("pretrained", "random_init"):
        assert [r["history"] for r in parallel[key]["runs"]] == [r["history"] for r in serial[key]["runs"]]


def test_reinit_draws_only_the_top_layers_afresh_and_leaves_random_init_alone(tok, monkeypatch):
    from mini_bert.evaluation import downstream
    from mini_bert.evaluation.downstream import reinit_top_layers
    cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=16, num_layers=3, num_heads=2, intermediate_size=32,
                      max_position_embeddings=16, norm_position="pre")
    model = MiniBERT(cfg, seed=0)
    model.store.flat[...] += 1.0                                   # "pretrained": far from any fresh draw
    before = model.store.flat.copy()
    reinit_top_layers(model, 1, seed=3)
    fresh = MiniBERT(cfg, seed=20_003)
    for spec in model.store.specs:
        now, was = model.store.blocks[spec.name], before[model.store.slices[spec.name]]
        if spec.name.endswith("_2"):
            np.testing.assert_array_equal(now, fresh.store.blocks[spec.name])
        else:
            np.testing.assert_array_equal(now.ravel(), was)
    assert any(spec.name == "ln_f_gamma" for spec in model.store.specs)   # the loop kept the final norm too
    model.store.flat[...] = before

    started = []                                 # what each arm starts fine-tuning from, per seed
    monkeypatch.setattr(downstream, "finetune_classifier", lambda m, *a, **k: started.append(
        m.store.blocks["W1_2"].copy()) or {"dev_accuracy": 0.5, "best_step": 0, "steps": 0, "history": []})
    kwargs = dict(epochs=1, seeds=[0, 1], log=None, bag_of_words=False)
    run_sst2(model, tok, TEXTS, LABELS, TEXTS, LABELS, reinit_layers=0, **kwargs)
    kept = started[:]
    started.clear()
    run_sst2(model, tok, TEXTS, LABELS, TEXTS, LABELS, reinit_layers=1, **kwargs)
    pretrained, random_init = started[:2], started[2:]
    for seed, w in enumerate(pretrained):
        np.testing.assert_array_equal(w, MiniBERT(cfg, seed=20_000 + seed).store.blocks["W1_2"])
    np.testing.assert_array_equal(kept[0], before[model.store.slices["W1_2"]].reshape(kept[0].shape))
    for a, b in zip(random_init, kept[2:]):
        np.testing.assert_array_equal(a, b)                        # random init is the same draw either way
    with pytest.raises(ValueError, match=r"--reinit-layers must lie in \[0, 3\]"):
        run_sst2(model, tok, TEXTS, LABELS, TEXTS, LABELS, reinit_layers=4, **kwargs)
    with pytest.raises(ValueError, match="--reinit-layers must be >= 0"):
        finetune_sst2_checkpoint(None, reinit_layers=-1)


def test_labels_outside_the_model_classes_are_rejected(tok):
    model = tiny_model(tok.vocab_size)
    seqs = encode_for_classification(tok, TEXTS[:2], 16)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\]"):
        finetune_classifier(model, seqs, np.array([0, 2]), seqs, np.array([0, 1]), log=None)
    with pytest.raises(ValueError, match="2 sequences but 1 labels"):
        finetune_classifier(model, seqs, np.array([0]), seqs, np.array([0, 1]), log=None)


def test_ngram_features_are_binary_uni_and_bigrams():
    X, (Y,), names = ngram_features(["good good film", "bad film"], [["good film", "unseen words"]])
    assert set(names) == {"good", "film", "bad", "good good", "good film", "bad film"}
    col = {n: i for i, n in enumerate(names)}
    assert X[0, col["good"]] == 1.0                     # present, not counted twice
    assert X[0].sum() == 4 and X[1].sum() == 3
    assert Y[0].sum() == 3 and Y[1].sum() == 0          # unseen n-grams are dropped


def test_seed_and_size_arguments_are_checked():
    assert parse_seeds("0, 1,2") == [0, 1, 2]
    with pytest.raises(ValueError, match="comma-separated integers"):
        parse_seeds("0,one")
    with pytest.raises(ValueError, match="at least one"):
        parse_seeds(",")
    with pytest.raises(ValueError, match="--max-samples must be a positive"):
        finetune_sst2_checkpoint(None, max_samples=0)
    with pytest.raises(ValueError, match="--jobs must be >= 1"):
        finetune_sst2_checkpoint(None, n_jobs=0)


def test_bad_sst2_label_is_caught_by_the_loader(tmp_path, tok):
    from mini_bert.data.readers import DataError

    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "stsa.binary.train").write_text("1 a fine film\n2 a strange label\n", encoding="utf-8")
    (tmp_path / "sst2" / "stsa.binary.dev").write_text("0 a dull film\n", encoding="utf-8")
    with pytest.raises(DataError, match="not 0 or 1"):
        finetune_sst2_checkpoint(None, data_dir=tmp_path, model=tiny_model(tok.vocab_size), tokenizer=tok, log=None)


def test_protocol_spells_treebank_tokens_as_raw_text_for_every_arm(tmp_path, tok, monkeypatch):
    """raw_text=True hands the tokenizer `don't` where SST-2's file says `do n't`, for train and dev and for the bag
    of words alike; the protocol's default hands it the file's text. The JSON records the setting."""
    (tmp_path / "sst2").mkdir()
    (tmp_path / "sst2" / "stsa.binary.train").write_text("1 i do n't hate it -lrb- at all -rrb-\n0 it 's dull\n")
    (tmp_path / "sst2" / "stsa.binary.dev").write_text("0 i ca n't stand it\n")

    class Spy:
        vocab_size = tok.vocab_size

        def __init__(self):
            self.seen = []

        def encode_batch(self, texts):
            self.seen += texts
            return tok.encode_batch(texts)

    bow_seen = []
    monkeypatch.setattr("mini_bert.evaluation.downstream.bag_of_words_baseline",
                        lambda train, y_train, dev, y_dev: bow_seen.extend(train + dev) or {"dev_accuracy": 0.5})
    for raw, expected in ((True, ["i don't hate it ( at all )", "it's dull", "i can't stand it"]),
                          (None, ["i do n't hate it -lrb- at all -rrb-", "it 's dull", "i ca n't stand it"])):
        spy, bow_seen[:] = Spy(), []
        finetune_sst2_checkpoint(None, data_dir=tmp_path, model=tiny_model(tok.vocab_size), tokenizer=spy,
                                 log=None, epochs=1, seeds=(0,), random_init=False, output=tmp_path / "r.json",
                                 **({} if raw is None else {"raw_text": raw}))
        assert spy.seen == expected and bow_seen == expected
        assert json.loads((tmp_path / "r.json").read_text())["protocol"]["raw_text"] is bool(raw)


def test_task_adaptive_mlm_masks_as_the_checkpoint_was_pretrained(tmp_path, tok):
    """A checkpoint pretrained with data.masking=whole_word adapts with whole-word masks, a token-level one with
    token masks; an explicit adapt setting wins over the checkpoint's."""
    from mini_bert.training.checkpointing import save_checkpoint

    (tmp_path / "sst2").mkdir()
    for split in ("train", "dev"):
        (tmp_path / "sst2" / f"stsa.binary.{split}").write_text(
            "".join(f"{y} {t}\n" for t, y in zip(TEXTS, LABELS)))
    kwargs = dict(data_dir=tmp_path, epochs=1, seeds=(0,), log=None, adapt_steps=2, pretrained=False,
                  random_init=False, bag_of_words=False, batch_size=4)
    for masking in ("whole_word", "token"):
        model = tiny_model(tok.vocab_size)
        cfg = RunConfig.model_validate({"model": model.config.model_dump(), "data": {"masking": masking}})
        save_checkpoint(tmp_path / masking, cfg, model, tok)
        result = finetune_sst2_checkpoint(tmp_path / masking, **kwargs)
        assert result["adaptation"]["whole_word"] is (masking == "whole_word")
    forced = finetune_sst2_checkpoint(tmp_path / "whole_word", adapt={"whole_word": False}, **kwargs)
    assert forced["adaptation"]["whole_word"] is False


def test_checkpoint_without_tokenizer_is_a_clear_error(tmp_path, tok, capsys):
    from mini_bert.cli import main
    from mini_bert.training.checkpointing import save_checkpoint

    model = tiny_model(tok.vocab_size)
    cfg = RunConfig(model=model.config)
    save_checkpoint(tmp_path / "ck", cfg, model, tokenizer=None)
    assert main(["finetune-sst2", "--checkpoint", str(tmp_path / "ck"), "--epochs", "1"]) == 2
    assert "no tokenizer" in capsys.readouterr().err


@pytest.mark.skipif(not (data_root() / "sst2").is_dir(), reason="SST-2 not under data_root()")
def test_bag_of_words_baseline_on_real_sst2():
    from mini_bert.data.readers import load_sst2

    train, y_train = load_sst2("train")
    dev, y_dev = load_sst2("dev")
    assert len(dev) == 872
    result = bag_of_words_baseline(train, y_train, dev, y_dev)
    assert result["dev_accuracy"] > 0.7                 # typically ~0.78-0.82
    assert result["features"] > 10_000
