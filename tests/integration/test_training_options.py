"""The Phase 3 training options of `minibert train` (Lion, Lookahead, adaptive gradient clipping, layer-wise LR
decay, curriculum batches, adaptive masking): each one trains, each one changes what the trainer does, and a run
with all of them on resumes after a stop exactly as if it had never stopped. Also: the generalised optimizer
checkpoint (old AdamW-only checkpoints still resume), `corrupt_selected`, and Ctrl-C in the CLI.

Runs use the tiny model of tests/test_trainer.py (vocab 512, hidden 32, 2 layers) on 2,000 PTB lines, with one
WordPiece vocabulary built once for the module (data.tokenizer), so a run takes about a second.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import yaml
from threadpoolctl import threadpool_limits

from mini_bert import cli
from mini_bert.config import MASK_ID, SPECIAL_TOKENS, load_config
from mini_bert.core.model import MiniBERT
from mini_bert.training.advanced_optimizers import Lion, Lookahead
from mini_bert.training.checkpointing import list_step_checkpoints, load_checkpoint, save_checkpoint
from mini_bert.training.curriculum import CurriculumBatches
from mini_bert.data.masking import corrupt_selected, mask_tokens
from mini_bert.training.optimizer import AdamW
from mini_bert.data.tokenizer import WordPieceTokenizer
from mini_bert.training.trainer import Trainer, build_optimizer

STEPS = 30
QUIET = dict(log=lambda *a, **k: None, progress=False)


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """2,000 PTB training sentences as a text corpus, with a 512-token vocabulary (vocab.txt) beside it.

    The vocabulary is built by a fixed rule (the special tokens, every character word-initially and as `##c`, then
    the most frequent words, ties in alphabetical order) rather than by Hugging Face's trainer, which breaks ties
    between equally frequent pairs differently from one process to the next: these runs are short enough for a
    slightly different vocabulary to change whether, say, the adaptive mask rate moves within 30 steps."""
    from mini_bert.data.readers import load_ptb

    folder = tmp_path_factory.mktemp("corpus")
    lines = load_ptb("train")[:2000]
    (folder / "ptb_slice.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    WordPieceTokenizer.frequent_words(lines, vocab_size=512).save(folder)
    return folder / "ptb_slice.txt"


def tiny(corpus: Path, out: Path, *options: str, **training) -> list[str]:
    """key=value overrides for a tiny run into `out`, then `options` (e.g. "training.optimizer=lion")."""
    settings = {"max_steps": STEPS, "log_every": 1, "checkpoint_every": 100, "eval_every": 5, "batch_size": 8,
                "keep_last": 10, "threads": 2, "lr": 3e-3, "output_dir": str(out), **training}
    return ["model.vocab_size=512", "model.hidden_size=32", "model.num_layers=2", "model.num_heads=2",
            "model.intermediate_size=64", "model.max_position_embeddings=32",
            f"data.corpus={corpus}", f"data.tokenizer={corpus.parent / 'vocab.txt'}", "data.max_seq_len=32",
            "data.valid_batches=2", *(f"training.{k}={v}" for k, v in settings.items()), *options]


def train(*args: str) -> int:
    return cli.main(["train", "--no-progress", *args])


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def curve(run: Path) -> list[tuple]:
    """Everything a step decides, per metrics row, compared bit for bit (elapsed time and tokens/s excluded)."""
    skip = {"elapsed_s", "tokens_per_s"}
    return [tuple(sorted((k, v) for k, v in r.items() if k not in skip)) for r in metrics(run)]


@pytest.fixture(scope="module")
def baseline(corpus, tmp_path_factory) -> Path:
    """Plain AdamW, checkpoints every 10 steps (all kept): the curve every option must change."""
    run = tmp_path_factory.mktemp("baseline") / "run"
    assert train(*tiny(corpus, run, checkpoint_every=10)) == 0
    return run


# ----------------------------------------------------------------------------------------------------------------
# Each option trains, and does what it says


OPTIONS = {
    "lion": ("training.optimizer=lion", "training.lr=2e-3", "training.weight_decay=0.1"),
    "lookahead": ("training.lookahead_k=3", "training.lookahead_alpha=0.5"),
    "agc": ("training.agc_clip=0.05",),
    "layer_lr_decay": ("training.layer_lr_decay=0.7",),
    "curriculum_rarity": ("data.curriculum=rarity", "data.curriculum_start=0.2"),
    "curriculum_length": ("data.curriculum=length",),
    "adaptive_masking": ("data.adaptive_masking=true", "training.eval_every=2"),   # frequent accuracy feedback
}


@pytest.mark.parametrize("name", OPTIONS)
def test_each_option_trains_and_changes_the_run(corpus, baseline, tmp_path, name):
    run = tmp_path / "run"
    assert train(*tiny(corpus, run, *OPTIONS[name])) == 0
    rows = metrics(run)
    losses = [r["train_loss"] for r in rows]
    assert len(losses) == STEPS and np.isfinite(losses).all()
    first, last = np.mean(losses[:5]), np.mean(losses[-5:])
    assert last < first - 0.1, (name, first, last)
    # the option took effect: the run is not the plain AdamW run
    assert [r["train_loss"] for r in metrics(baseline)] != losses
    ck = load_checkpoint(run)
    if name == "lion":
        assert ck.optimizer_kind == "lion" and set(ck.optimizer_state) == {"m", "t"}
    elif name == "lookahead":
        assert ck.optimizer_kind == "lookahead(adamw)"
        assert {"slow", "inner.m", "inner.v"} <= set(ck.optimizer_state) and ck.optimizer_state["k"] == 3
    elif name == "agc":
        assert all(0.0 < r["agc_clipped"] <= 1.0 for r in rows)
    elif name.startswith("curriculum"):
        assert ck.trainer_state["data"]["step"] == STEPS and "order_digest" in ck.trainer_state["data"]
    elif name == "adaptive_masking":
        assert all(0.10 <= r["mask_prob"] <= 0.40 for r in rows)
        assert len({r["mask_prob"] for r in rows}) > 1        # the rate moved
        assert ck.trainer_state["adaptive_masking"]["loss_ema"] is not None
    else:
        assert ck.optimizer_kind == "adamw"


def _stream(cfg):
    trainer = Trainer(cfg, **QUIET)
    trainer.worker.close()
    return trainer.stream


def test_curriculum_settings_reach_the_stream(corpus, tmp_path):
    cfg = load_config(None, tiny(corpus, tmp_path / "run", "data.curriculum=rarity", "data.curriculum_start=0.25"))
    stream = _stream(cfg)
    assert isinstance(stream, CurriculumBatches)
    assert stream.competence(0) == 0.25
    # curriculum_steps=0: every row is available from half of max_steps on
    assert stream.competence(STEPS // 2 - 1) < 1.0
    assert stream.competence(STEPS // 2) == 1.0
    # the first batch comes from the easiest quarter of the rows
    easiest = {row.tobytes() for row in stream.sequences[stream.order[:stream.pool_size(0)]]}
    batch = stream.next_batch()
    assert all(row.astype(stream.sequences.dtype).tobytes() in easiest for row in batch.target_ids)
    cfg = load_config(None, tiny(corpus, tmp_path / "run2", "data.curriculum=length", "data.curriculum_steps=7"))
    assert _stream(cfg).competence(6) < 1.0 == _stream(cfg).competence(7)


def test_build_optimizer_composes_the_options():
    from mini_bert.training.optimizer import layer_wise_lr_scales

    model = MiniBERT(load_config(None, ["model.vocab_size=64", "model.hidden_size=16", "model.num_layers=3",
                                        "model.num_heads=2", "model.intermediate_size=32"]).model)
    cfg = lambda *o: load_config(None, ["model.vocab_size=64", *o])  # noqa: E731 (training section only matters)
    assert isinstance(build_optimizer(model, cfg()), AdamW) and build_optimizer(model, cfg()).lr_scale is None
    opt = build_optimizer(model, cfg("training.optimizer=lion", "training.lookahead_k=4",
                                     "training.lookahead_alpha=0.25", "training.layer_lr_decay=0.5"))
    assert isinstance(opt, Lookahead) and isinstance(opt.inner, Lion)
    assert (opt.k, opt.alpha, opt.kind) == (4, 0.25, "lookahead(lion)")
    assert opt.inner.params is model.store.flat
    np.testing.assert_array_equal(opt.inner.lr_scale, layer_wise_lr_scales(model, 0.5))
    assert opt.inner.lr_scale.min() == 0.5 ** 3       # the embeddings: decay^L


# ----------------------------------------------------------------------------------------------------------------
# Exact resume with every option on


ALL_ON = ("training.optimizer=lion", "training.lr=2e-3", "training.weight_decay=0.1", "training.lookahead_k=3",
          "training.agc_clip=0.05", "training.layer_lr_decay=0.8", "data.curriculum=rarity",
          "data.adaptive_masking=true")


def test_stop_and_resume_with_every_option_on_repeats_the_run_bit_for_bit(corpus, tmp_path, monkeypatch):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    # log every 2 steps and evaluate every 3: adaptive masking hears from both; eval_every=3 makes the accuracy
    # move often enough for the mask rate to change within the run
    settings = dict(log_every=2, eval_every=3, checkpoint_every=100)
    assert train(*tiny(corpus, whole, *ALL_ON, **settings)) == 0
    rates = {r["mask_prob"] for r in metrics(whole)}
    assert len(rates) > 1, "the mask rate never changed: the test would not cover the masking state"

    original = Trainer.apply_gradients

    def ctrl_c_at_step_7(self, batch, lr):     # mid Lookahead cycle (k=3), mid logging window, in the curriculum
        out = original(self, batch, lr)
        if self.state["step"] == 6:
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(Trainer, "apply_gradients", ctrl_c_at_step_7)
    args = tiny(corpus, parts, *ALL_ON, **settings)
    assert train(*args) == 130
    assert [p.name for p in list_step_checkpoints(parts)] == ["step_0000007"]
    monkeypatch.setattr(Trainer, "apply_gradients", original)
    assert train("--resume", *args) == 0

    assert curve(parts) == curve(whole)
    a, b = load_checkpoint(parts / "step_0000030"), load_checkpoint(whole / "step_0000030")
    assert np.array_equal(a.model.store.flat, b.model.store.flat)
    assert a.optimizer_kind == b.optimizer_kind == "lookahead(lion)"
    assert a.optimizer_state.keys() == b.optimizer_state.keys()
    for key, value in a.optimizer_state.items():
        assert np.array_equal(value, b.optimizer_state[key]), key
    assert a.trainer_state["adaptive_masking"] == b.trainer_state["adaptive_masking"]
    assert a.trainer_state["data"] == b.trainer_state["data"]


def test_resume_refuses_other_stateful_settings(corpus, baseline, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(baseline, run)
    assert train("--resume", *tiny(corpus, run, "training.optimizer=lion")) == 2
    err = capsys.readouterr().err
    assert "training.optimizer=adamw" in err and "lion" in err
    assert train("--resume", *tiny(corpus, run, "data.curriculum=length")) == 2
    assert "data.curriculum=none" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------------
# Optimizer checkpoints


def test_an_old_adamw_only_checkpoint_still_resumes_exactly(corpus, baseline, tmp_path):
    """A checkpoint written before this format (optimizer.safetensors with m, v and metadata {"t"}; no Phase 3 keys
    in config.yaml or trainer_state.json) resumes and repeats the rest of the run."""
    from safetensors.numpy import load_file, save_file

    run = tmp_path / "run"
    shutil.copytree(baseline, run)
    for p in list_step_checkpoints(run)[1:]:
        shutil.rmtree(p)
    shutil.rmtree(run / "best")
    ck = run / "step_0000010"
    state = load_checkpoint(ck).optimizer_state
    assert set(state) == {"m", "v", "t"}
    save_file({k: v for k, v in load_file(str(ck / "optimizer.safetensors")).items()},
              str(ck / "optimizer.safetensors"), metadata={"t": str(state["t"])})
    cfg = yaml.safe_load((ck / "config.yaml").read_text())
    for section, keys in (("data", ("curriculum", "curriculum_start", "curriculum_steps", "adaptive_masking")),
                          ("training", ("optimizer", "lookahead_k", "lookahead_alpha", "agc_clip",
                                        "layer_lr_decay"))):
        for key in keys:
            del cfg[section][key]
    (ck / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    trainer_state = json.loads((ck / "trainer_state.json").read_text())
    del trainer_state["optimizer"]
    (ck / "trainer_state.json").write_text(json.dumps(trainer_state))

    old = load_checkpoint(ck)
    assert old.optimizer_kind == "adamw" and old.optimizer_state["t"] == 10
    assert train("--resume", *tiny(corpus, run, checkpoint_every=10)) == 0
    assert curve(run) == curve(baseline)


def test_optimizer_state_round_trips_through_a_checkpoint(tmp_path):
    cfg = load_config(None, ["model.vocab_size=64", "model.hidden_size=16", "model.num_layers=1",
                             "model.num_heads=2", "model.intermediate_size=32"])
    model = MiniBERT(cfg.model)
    opt = build_optimizer(model, cfg.model_copy(update={"training": cfg.training.model_copy(
        update={"optimizer": "lion", "lookahead_k": 2})}))
    rng = np.random.default_rng(0)
    for _ in range(3):
        opt.step(rng.normal(size=model.store.flat.shape).astype(np.float32), 1e-3)
    first = save_checkpoint(tmp_path / "a", cfg, model, None, opt, {"step": 3})
    ck = load_checkpoint(first, need_tokenizer=False)
    assert ck.optimizer_kind == "lookahead(lion)"
    expected = opt.state_dict()
    assert ck.optimizer_state.keys() == expected.keys()
    for key, value in expected.items():
        assert np.array_equal(ck.optimizer_state[key], value), key
    # load -> save writes the same bytes (one metadata entry: safetensors orders several at random)
    again = build_optimizer(ck.model, cfg.model_copy(update={"training": cfg.training.model_copy(
        update={"optimizer": "lion", "lookahead_k": 2})}))
    again.load_state_dict(ck.optimizer_state)
    second = save_checkpoint(tmp_path / "b", cfg, ck.model, None, again, {"step": 3})
    assert (first / "optimizer.safetensors").read_bytes() == (second / "optimizer.safetensors").read_bytes()


# ----------------------------------------------------------------------------------------------------------------
# The 80/10/10 corruption


def test_corrupt_selected_statistics():
    rng = np.random.default_rng(0)
    V, n_special = 1000, len(SPECIAL_TOKENS)
    batch = rng.integers(n_special, V, size=(200, 100))
    selected = rng.random(batch.shape) < 0.5
    out = corrupt_selected(batch, selected, V, MASK_ID, np.random.default_rng(1))
    assert np.array_equal(out[~selected], batch[~selected])         # unselected positions are never touched
    s_in, s_out = batch[selected], out[selected]
    n = s_in.size                                                   # ~10,000 selected positions
    masked = s_out == MASK_ID
    kept = s_out == s_in
    randomised = ~masked & ~kept
    # binomial standard errors are <= 0.005: 4 of them either side
    assert abs(masked.mean() - 0.8) < 0.02
    assert abs(randomised.mean() - 0.1) < 0.015
    assert abs(kept.mean() - 0.1) < 0.015 + 1.0 / V                # a random draw may equal the original
    assert s_out[randomised].min() >= n_special and s_out[randomised].max() < V   # never a special token
    assert n > 9000


def test_mask_tokens_ends_with_corrupt_selected():
    """mask_tokens = selection draws, then corrupt_selected on the same Generator: the same ids, draw for draw."""
    batch = np.random.default_rng(3).integers(0, 300, size=(8, 40))
    inp, tgt, sel = mask_tokens(batch, 300, MASK_ID, 0.2, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    selected = (rng.random(batch.shape) < 0.2) & ~np.isin(batch, (0, 2, 3))
    assert np.array_equal(selected, sel)        # (every row has a selection here, so no extra draws)
    assert np.array_equal(corrupt_selected(batch, selected, 300, MASK_ID, rng), inp)
    with pytest.raises(ValueError, match="boolean array"):
        corrupt_selected(batch, selected[:, :5], 300, MASK_ID, rng)


# ----------------------------------------------------------------------------------------------------------------
# Ctrl-C outside the training loop


def test_ctrl_c_in_a_command_exits_130_without_a_traceback(monkeypatch, capsys):
    from mini_bert.cli import train as train_command

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_command, "run_train", interrupted)
    assert cli.main(["train", "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err
