"""The pretraining recipe's levers and the fine-tuning protocol's: whole-word and all-[MASK] masking, a schedule
fitted to the wall-clock budget (and kept on resume), task-adaptive MLM, mean pooling, and their bad values."""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from mini_bert import cli
from mini_bert.config import MASK_ID, ModelConfig, load_config
from mini_bert.core.model import MiniBERT
from mini_bert.data.masking import mask_tokens
from mini_bert.data.readers import load_sst2
from mini_bert.data.tokenizer import WordPieceTokenizer
from mini_bert.errors import MiniBertError
from mini_bert.training.adapt import adapt_to_texts
from mini_bert.training.trainer import Trainer, steps_for_budget


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    with threadpool_limits(1):
        yield


# ----------------------------------------------------------------------------------------------------------------
# Masking


def test_whole_word_masking_selects_every_piece_of_a_word_together():
    rng = np.random.default_rng(0)
    V = 50
    continuation = np.zeros(V, dtype=bool)
    continuation[30:] = True                               # ids 30..49 are "##" pieces
    batch = rng.integers(5, 50, size=(64, 40))
    batch[:, 0], batch[:, 1] = 2, 7                         # [CLS], then a word-initial piece
    batch[:4, 2:] = 40                                      # rows that are one long word: the fallback row rule
    _, _, selected = mask_tokens(batch, V, MASK_ID, 0.2, np.random.default_rng(1), continuation=continuation)
    word = np.cumsum(~continuation[batch], axis=1)         # the word each position belongs to
    for b in range(len(batch)):
        for w in np.unique(word[b, 1:]):
            pieces = selected[b][word[b] == w]
            assert pieces.all() or not pieces.any(), "a word was masked only in part"
    assert selected[:4].any(axis=1).all()                   # every row still has a selected word
    starts = ~continuation[batch[:, 1:]]
    assert 0.15 < selected[:, 1:][starts].mean() < 0.25     # about mask_prob of the words


def test_the_default_masking_draws_are_unchanged_by_the_new_options():
    batch = np.random.default_rng(3).integers(5, 100, size=(8, 16))
    a = mask_tokens(batch, 100, MASK_ID, 0.15, np.random.default_rng(4))
    b = mask_tokens(batch, 100, MASK_ID, 0.15, np.random.default_rng(4), continuation=None, mask_fraction=0.8,
                    random_fraction=0.1)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_all_mask_corruption_replaces_every_selected_token_with_mask():
    batch = np.random.default_rng(5).integers(5, 100, size=(32, 32))
    inp, _, sel = mask_tokens(batch, 100, MASK_ID, 0.3, np.random.default_rng(6), mask_fraction=1.0,
                              random_fraction=0.0)
    assert (inp[sel] == MASK_ID).all() and (inp[~sel] == batch[~sel]).all()


def test_the_held_out_batches_mask_at_bert_rate_whatever_the_training_rate(tmp_path):
    """Recipes that train with another mask rate are measured on the same held-out task: the same 15% masks."""
    base = Trainer(_tiny(tmp_path / "a"), log=lambda *a: None, progress=False)
    other = Trainer(_tiny(tmp_path / "b", "data.mask_prob=0.3"), log=lambda *a: None, progress=False)
    for a, b in zip(base.valid, other.valid, strict=True):
        np.testing.assert_array_equal(a.mask_positions, b.mask_positions)
        np.testing.assert_array_equal(a.input_ids, b.input_ids)
    selected = sum(int(b.mask_positions.sum()) for b in base.valid)
    tokens = sum(int((b.target_ids > 4).sum()) for b in base.valid)
    assert 0.12 < selected / tokens < 0.18
    rate = np.mean([int(b.mask_positions.sum()) for b in [other.stream.next_batch() for _ in range(5)]])
    assert rate > 1.5 * selected / len(base.valid)        # while its training batches do mask at 30%


# ----------------------------------------------------------------------------------------------------------------
# A schedule fitted to the budget


def _tiny(tmp_path, *extra):
    return load_config("debugging", ["data.corpus=sst2", f"training.output_dir={tmp_path / 'run'}",
                                     "training.threads=1", *extra])


def test_the_fitted_schedule_is_kept_in_the_checkpoint_and_reused_on_resume(tmp_path, monkeypatch):
    cfg = _tiny(tmp_path, "training.max_minutes=5", "training.schedule_to_budget=true", "training.max_steps=500")
    fitted = []
    monkeypatch.setattr(Trainer, "fit_schedule", lambda self: fitted.append(1) or 12)
    trainer = Trainer(cfg, log=lambda *a: None, progress=False)
    assert trainer.max_steps == 12
    summary = trainer.train()
    assert summary["step"] == 12 and summary["max_steps"] == 12 and len(fitted) == 1
    resumed = Trainer(cfg.model_copy(update={"training": cfg.training.model_copy(update={"max_steps": 40})}),
                      resume=True, log=lambda *a: None, progress=False)
    assert resumed.max_steps == 12 and len(fitted) == 1        # not fitted again: the checkpoint's length


def test_fitting_measures_steps_without_changing_the_run(tmp_path):
    cfg = _tiny(tmp_path, "training.max_minutes=0.05", "training.schedule_to_budget=true",
                "training.max_steps=100000")
    trainer = Trainer(cfg, log=lambda *a: None, progress=False)
    fresh = Trainer(_tiny(tmp_path / "b"), log=lambda *a: None, progress=False)
    np.testing.assert_array_equal(trainer.model.store.flat, fresh.model.store.flat)
    assert 1 <= trainer.max_steps < 100000
    assert trainer.stream.state_dict()["position"] == 0


def test_steps_for_budget_divides_the_remaining_budget_by_the_measured_step():
    assert steps_for_budget(100, 30.0, 10.0, 100_000) == 2000        # 0.3 s a step, 600 s
    assert steps_for_budget(100, 30.0, 10.0, 1500) == 1500           # at most the configured max_steps
    assert steps_for_budget(100, 700.0, 10.0, 100_000) == 100        # over budget already: end the schedule now


def test_the_schedule_is_fitted_again_at_every_evaluation_and_kept(tmp_path, monkeypatch):
    """A start-up estimate that is wrong (here: 12 steps for a budget that holds many more) is corrected at the first
    evaluation from the real steps, and again at every later one; the length is checkpointed and a resumed run keeps
    it."""
    cfg = _tiny(tmp_path, "training.max_minutes=0.5", "training.schedule_to_budget=true", "training.max_steps=40",
                "training.eval_every=5", "training.checkpoint_every=5")
    monkeypatch.setattr(Trainer, "fit_schedule", lambda self: 12)
    seen, refit = [], Trainer.refit_schedule

    def spy(self, step, seconds):
        seen.append(step)
        refit(self, step, seconds)
    monkeypatch.setattr(Trainer, "refit_schedule", spy)
    logs = []
    trainer = Trainer(cfg, log=logs.append, progress=False)
    summary = trainer.train()
    assert seen == [5, 10, 15, 20, 25, 30, 35]           # every evaluation before the last step
    assert summary["schedule_refitted"] and summary["max_steps"] == 40 == summary["step"]   # capped by max_steps
    assert sum("fitted again" in line for line in logs) == 1, logs        # logged when the length moved
    assert any("40 steps (was 12" in line for line in logs), logs
    resumed = Trainer(cfg.model_copy(update={"training": cfg.training.model_copy(update={"max_steps": 60})}),
                      resume=True, log=lambda *a: None, progress=False)
    assert resumed.max_steps == 40                       # the checkpoint's refitted length


def test_refits_keep_the_rate_continuous_and_a_resume_follows_the_same_curve(tmp_path, monkeypatch, cut_back):
    """The budget's estimate moves (30 steps, then 24 from step 15 on): the rate never jumps, reaches 0 on the last
    step, and a run resumed from step 10 repeats every rate and loss of the uninterrupted run."""
    import json

    from mini_bert.training import trainer as trainer_module

    cfg = _tiny(tmp_path, "training.max_minutes=5", "training.schedule_to_budget=true", "training.max_steps=100",
                "training.eval_every=5", "training.checkpoint_every=5", "training.log_every=1",
                "training.keep_last=10", "training.warmup_ratio=0.1")
    monkeypatch.setattr(Trainer, "fit_schedule", lambda self: 40)
    monkeypatch.setattr(trainer_module, "steps_for_budget", lambda done, seconds, minutes, cap: 30 if done < 15 else 24)
    summary = Trainer(cfg, log=lambda *a: None, progress=False).train()
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if "train_loss" in r]
    assert summary["step"] == 24 == len(lrs)
    peak = cfg.training.lr
    assert max(lrs) == pytest.approx(peak)
    decay = lrs[4:]                                              # warmup: 4 steps (10% of the start-up 40)
    steps = [a - b for a, b in zip(decay, decay[1:])]
    assert all(d >= 0 for d in steps) and max(steps) < 0.1 * peak     # falling, no jump
    assert decay[-1] == pytest.approx(decay[-2] - decay[-1])          # one more step would reach 0: on time

    again = cut_back(run, tmp_path / "again", 10)
    resumed_cfg = cfg.model_copy(update={"training": cfg.training.model_copy(update={"output_dir": str(again)})})
    Trainer(resumed_cfg, resume=True, log=lambda *a: None, progress=False).train()
    rows_again = [json.loads(line) for line in (again / "metrics.jsonl").read_text().splitlines()]
    curve = lambda rs: [(r["step"], r["lr"], r["train_loss"]) for r in rs if "train_loss" in r]     # noqa: E731
    assert curve(rows_again) == curve(rows)


def test_schedule_to_budget_without_a_budget_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", "--no-progress", "--config", "debugging", "training.schedule_to_budget=true",
                     "training.max_minutes=null",
                     f"training.output_dir={out}"])
    assert code == 2 and "max_minutes" in capsys.readouterr().err and not out.exists()


# ----------------------------------------------------------------------------------------------------------------
# Fine-tuning: task-adaptive MLM and pooling


@pytest.fixture(scope="module")
def sst2_tiny():
    texts = load_sst2("train")[0][:400]
    tok = WordPieceTokenizer.train(texts, vocab_size=300)
    model = MiniBERT(ModelConfig(vocab_size=300, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                                 max_position_embeddings=64, dropout=0.0, attention_dropout=0.0), seed=0)
    return texts, tok, model


def test_task_adaptive_mlm_lowers_the_masked_loss_on_the_task_text(sst2_tiny):
    texts, tok, model = sst2_tiny
    before = model.store.flat.copy()
    result = adapt_to_texts(model, tok, texts, steps=60, lr=3e-3, batch_size=16, threads=1, log=None)
    assert result["last_loss"] < result["first_loss"] - 0.3
    assert not np.array_equal(model.store.flat, before)
    assert adapt_to_texts(model, tok, texts, steps=0, log=None) == {"steps": 0}


def test_task_adaptive_mlm_with_whole_word_masking_masks_whole_words(sst2_tiny, monkeypatch):
    """whole_word=True: every batch the adaptation trains on masks all of a word's pieces or none of them."""
    texts, tok, model = sst2_tiny
    from mini_bert.training import step

    seen = []
    real = step.GradientWorker.loss_and_gradients
    monkeypatch.setattr(step.GradientWorker, "loss_and_gradients",
                        lambda self, batch: seen.append(batch) or real(self, batch))
    saved = model.store.flat.copy()
    result = adapt_to_texts(model, tok, texts, steps=3, batch_size=16, threads=1, whole_word=True, log=None)
    model.store.flat[...] = saved
    assert result["whole_word"] is True and len(seen) == 3
    continuation = tok.continuation_mask()
    assert continuation.sum() > 0 and not continuation[:5].any()       # some ## pieces; no special token
    split_words = 0
    for batch in seen:
        starts = ~continuation[batch.target_ids]
        starts[:, 1] = True                  # a row cut inside a word starts with its pieces, right after [CLS]
        word = np.cumsum(starts, axis=1)                                  # the word each position belongs to
        for b in range(len(word)):
            for w in np.unique(word[b][~starts[b]]):
                pieces = batch.mask_positions[b][word[b] == w]
                split_words += 1
                assert pieces.all() or not pieces.any(), "a word was masked only in part"
    assert split_words > 50                  # the check saw many words of several pieces


def test_finetune_refuses_negative_adapt_steps_before_loading_anything(tmp_path, capsys):
    out = tmp_path / "r.json"
    with pytest.raises(SystemExit) as exit_:           # argparse's usage error: the flag's value is out of range
        cli.main(["finetune-sst2", "--checkpoint", str(tmp_path / "nowhere"), "--adapt-steps", "-1",
                  "--output", str(out)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--adapt-steps" in err and ">= 0" in err and not out.exists()
    from mini_bert.evaluation.downstream import finetune_sst2_checkpoint

    with pytest.raises(MiniBertError, match="--adapt-steps must be >= 0"):   # the library checks it too
        finetune_sst2_checkpoint(tmp_path / "nowhere", adapt_steps=-1)


def test_the_adapted_arm_is_its_own_row(sst2_tiny):
    from mini_bert.evaluation.downstream import format_sst2_table, run_sst2

    texts, tok, model = sst2_tiny
    labels = load_sst2("train")[1][:400]
    dev, dev_labels = load_sst2("dev")
    before = model.store.flat.copy()
    result = run_sst2(model, tok, texts[:200], labels[:200], dev[:100], dev_labels[:100], epochs=1, seeds=(0,),
                      bag_of_words=False, random_init=True, log=None, adapt_steps=5, pooling="mean")
    assert {"pretrained", "adapted", "random_init"} <= set(result) and result["adaptation"]["steps"] == 5
    np.testing.assert_array_equal(model.store.flat, before)    # the model is given back as it came
    assert model.config.classifier_pooling == "cls"
    assert "task-adaptive MLM (5 steps)" in format_sst2_table(result)


def test_task_adaptive_mlm_can_read_one_sentence_a_row_as_the_classifier_does(sst2_tiny, monkeypatch):
    """packing="single" (the default): every row the adaptation trains on is [CLS] one sentence [SEP] [PAD]..."""
    texts, tok, model = sst2_tiny
    from mini_bert.config import CLS_ID, SEP_ID
    from mini_bert.training import step
    texts = [t for t, ids in zip(texts, tok.encode_batch(texts)) if len(ids) <= 62]    # each fits one row of 64

    seen = []
    real = step.GradientWorker.loss_and_gradients
    monkeypatch.setattr(step.GradientWorker, "loss_and_gradients",
                        lambda self, batch: seen.append(batch) or real(self, batch))
    saved = model.store.flat.copy()
    single = adapt_to_texts(model, tok, texts, steps=2, batch_size=16, threads=1, log=None)
    model.store.flat[...] = saved
    packed = adapt_to_texts(model, tok, texts, steps=1, batch_size=16, threads=1, packing="packed", log=None)
    model.store.flat[...] = saved
    assert single["packing"] == "single" and single["rows"] == len(texts) > packed["rows"]
    sentences = {tuple(ids) for ids in tok.encode_batch(texts)}
    for row in np.concatenate([b.target_ids for b in seen[:2]]):
        end = int(np.argmax(row == SEP_ID))
        assert row[0] == CLS_ID and tuple(row[1:end]) in sentences and not row[end + 1:].any()
    with pytest.raises(MiniBertError, match="packing must be 'packed'.*'single'.*got 'rows'"):
        adapt_to_texts(model, tok, texts, steps=1, packing="rows", log=None)
