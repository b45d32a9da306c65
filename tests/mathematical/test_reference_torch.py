"""The PyTorch reference run (benchmarks/reference_torch.py) against the NumPy trainer, and compare_curves.

The equal-wall-time comparison is only fair if the two runs differ in nothing but the framework: with dropout 0
they must compute the same training losses step for step, from the same data, masks, init, optimizer and schedule.
The tiny config below makes every one of those matter within 3 steps (a large learning rate and weight decay, a
one-step warmup, clipping active), so a mismatch in any of them moves the losses far beyond the 1e-4 tolerance.
"""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from mini_bert.config import SPECIAL_TOKENS, load_config  # noqa: E402
from mini_bert.training.trainer import Trainer  # noqa: E402

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
LOSS_ATOL = 1e-4
STEPS = 3


def load_benchmark(name: str):
    """Import benchmarks/<name>.py (a script folder, not a package)."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ref():
    return load_benchmark("reference_torch")


@pytest.fixture(scope="module")
def curves():
    return load_benchmark("compare_curves")


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    old = torch.get_num_threads()
    yield
    torch.set_num_threads(old)


def write_tiny_corpus(folder: Path) -> tuple[Path, Path]:
    """A 300-line corpus over 200 words, and a 512-token vocab.txt holding every word whole (no training)."""
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(200)]
    weights = 1.0 / np.arange(1, len(words) + 1)                # Zipf-like, so there is something to learn
    lines = [" ".join(rng.choice(words, size=rng.integers(5, 16), p=weights / weights.sum())) for _ in range(300)]
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    chars = list("abcdefghijklmnopqrstuvwxyz0123456789")
    vocab = SPECIAL_TOKENS + words + chars + ["##" + c for c in chars]
    vocab += [f"filler{i}" for i in range(512 - len(vocab))]
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return corpus, vocab_file


def tiny_config(tmp_path: Path, output: str):
    corpus, vocab = write_tiny_corpus(tmp_path)
    return load_config(None, [
        "model.vocab_size=512", "model.hidden_size=32", "model.num_layers=1", "model.num_heads=2",
        "model.intermediate_size=64", "model.max_position_embeddings=32", "model.dropout=0",
        "model.attention_dropout=0", "model.initializer_range=0.1",
        f"data.corpus={corpus}", f"data.tokenizer={vocab}", "data.max_seq_len=32", "data.valid_batches=2",
        "training.batch_size=8", f"training.max_steps={STEPS}", f"training.eval_every={STEPS}",
        "training.log_every=1", "training.threads=1", "training.lr=1e-2", "training.weight_decay=0.5",
        "training.warmup_ratio=0.34", "training.grad_clip=0.5", f"training.output_dir={tmp_path / output}"])


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_torch_reference_matches_numpy_trainer_step_for_step(tmp_path, ref):
    cfg = tiny_config(tmp_path, "numpy")
    quiet = lambda *a, **k: None  # noqa: E731
    Trainer(cfg, log=quiet, progress=False).train()
    # the route the lead uses: the config and tokenizer read back from the NumPy run's checkpoint
    cfg_t, tokenizer = ref.config_from_numpy_run(tmp_path / "numpy")
    assert cfg_t == cfg
    summary = ref.train_reference(cfg_t, tmp_path / "torch", threads=1, log=quiet, tokenizer=tokenizer)
    assert summary["stop_reason"] == "max_steps" and summary["steps"] == STEPS

    np_rec, t_rec = read_jsonl(tmp_path / "numpy" / "metrics.jsonl"), read_jsonl(tmp_path / "torch" / "metrics.jsonl")
    assert [r["step"] for r in t_rec] == [r["step"] for r in np_rec] == list(range(1, STEPS + 1))
    # the same record format: every key the NumPy trainer writes, nothing else
    assert [sorted(r) for r in t_rec] == [sorted(r) for r in np_rec]
    np_loss, t_loss = [r["train_loss"] for r in np_rec], [r["train_loss"] for r in t_rec]
    print(f"\nper-step loss numpy {np_loss}\n              torch {t_loss}")
    assert np.allclose(t_loss, np_loss, rtol=0, atol=LOSS_ATOL), f"numpy {np_loss} vs torch {t_loss}"
    # the losses must move, or agreeing on them would prove nothing about the optimizer and schedule
    assert abs(np_loss[-1] - np_loss[0]) > 100 * LOSS_ATOL
    assert [r["lr"] for r in t_rec] == pytest.approx([r["lr"] for r in np_rec], rel=1e-12)
    # clipping is active (norm above grad_clip) and sees the same gradients
    norms_np, norms_t = [r["grad_norm"] for r in np_rec], [r["grad_norm"] for r in t_rec]
    assert min(norms_np) > cfg.training.grad_clip
    assert norms_t == pytest.approx(norms_np, rel=1e-4)
    # the same held-out evaluation after the last step: same fixed batches, same metric code
    e_np, e_t = np_rec[-1], t_rec[-1]
    assert e_t["valid_masked_tokens"] == e_np["valid_masked_tokens"] > 0
    assert e_t["valid_loss"] == pytest.approx(e_np["valid_loss"], abs=LOSS_ATOL)
    assert e_t["valid_perplexity"] == pytest.approx(np.exp(e_t["valid_loss"]), rel=1e-9)
    assert abs(e_t["valid_masked_acc"] - e_np["valid_masked_acc"]) <= 1.0 / e_np["valid_masked_tokens"]

    info = json.loads((tmp_path / "torch" / "run_info.json").read_text())
    assert info["threads"] == 1 and info["summary"]["steps"] == STEPS
    assert info["vocab_sha1"] == ref.vocab_fingerprint(tokenizer)


def test_config_from_numpy_run_applies_overrides(tmp_path, ref):
    cfg = tiny_config(tmp_path, "numpy").model_copy()
    cfg.training.max_steps = 1
    Trainer(cfg, log=lambda *a, **k: None, progress=False).train()
    cfg_t, tok = ref.config_from_numpy_run(tmp_path / "numpy", ["training.max_minutes=40", "training.max_steps=7"])
    assert (cfg_t.training.max_minutes, cfg_t.training.max_steps) == (40, 7)
    assert cfg_t.model == cfg.model and tok.vocab_size == 512
    with pytest.raises(ValueError, match="max_steps"):
        ref.config_from_numpy_run(tmp_path / "numpy", ["training.max_steps=0"])


def test_decay_groups_follow_the_numpy_decay_mask(ref):
    """Decayed torch tensors hold exactly the elements the NumPy decay_mask decays."""
    from mini_bert.config import ModelConfig
    from mini_bert.core.model import MiniBERT
    from mini_bert.training.optimizer import decay_mask

    cfg = ModelConfig(vocab_size=40, hidden_size=8, num_layers=2, num_heads=2, intermediate_size=16,
                      max_position_embeddings=8, norm_position="pre", tie_word_embeddings=False)
    model = ref.TorchMiniBERT.from_numpy(MiniBERT(cfg, seed=0))
    decay, no_decay = ref.decay_groups(model)
    assert len(decay) + len(no_decay) == len(list(model.parameters()))
    n_decayed = sum(p.numel() for p in decay)
    assert n_decayed == int(decay_mask(MiniBERT(cfg, seed=0).store).sum())
    names = {id(p): n for n, p in model.named_parameters()}
    assert not any("layer_norm" in names[id(p)] or names[id(p)].endswith("bias") or ".ln" in names[id(p)]
                   for p in decay)


def test_reference_refuses_to_overwrite_a_run(tmp_path, ref):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "elapsed_s": 0.1}\n')
    with pytest.raises(ref.ReferenceRunError, match="already exists"):
        ref.train_reference(load_config(), tmp_path, threads=1)


# ----------------------------------------------------------------------------------------------------------------
# compare_curves


def write_run(path: Path, rows: list[tuple]) -> Path:
    """rows: (step, elapsed_s) or (step, elapsed_s, acc, perplexity)."""
    with open(path, "w") as f:
        for row in rows:
            rec = {"step": row[0], "elapsed_s": row[1], "train_loss": 5.0, "lr": 1e-3}
            if len(row) == 4:
                rec.update(valid_loss=float(np.log(row[3])), valid_masked_acc=row[2], valid_perplexity=row[3])
            f.write(json.dumps(rec) + "\n")
    return path


@pytest.fixture
def two_runs(tmp_path):
    a = write_run(tmp_path / "a.jsonl", [(10, 60.0), (20, 120.0, 0.10, 500.0), (50, 300.0, 0.20, 300.0),
                                         (100, 610.0, 0.30, 200.0)])
    b = write_run(tmp_path / "b.jsonl", [(30, 100.0, 0.15, 400.0), (75, 250.0, 0.25, 250.0),
                                         (120, 400.0, 0.35, 150.0)])
    return a, b


def test_compare_picks_the_last_evaluation_at_or_before_each_time(two_runs, curves):
    a, b = two_runs
    table = curves.compare({"numpy": curves.read_metrics(a), "torch": curves.read_metrics(b)}, [1, 2, 5, 10])
    acc = {label: {m: (v and v["valid_masked_acc"]) for m, v in r["at"].items()} for label, r in table["runs"].items()}
    # numpy: no evaluation yet at 1 min; at 10 min the step-100 evaluation (10.17 min) is still in the future
    assert acc["numpy"] == {"1": None, "2": 0.10, "5": 0.20, "10": 0.20}
    # torch: first evaluation at 1.67 min; the run ended at 6.67 min, so 10 min is n/a
    assert acc["torch"] == {"1": None, "2": 0.15, "5": 0.25, "10": None}
    assert table["runs"]["numpy"]["at"]["5"] == {"step": 50, "minutes": 5.0, "valid_masked_acc": 0.20,
                                                 "valid_perplexity": 300.0}
    assert table["runs"]["torch"]["steps_reached"] == 120
    assert table["runs"]["numpy"]["last_evaluation"]["step"] == 100


def test_a_run_stopped_by_max_minutes_counts_as_reaching_it(tmp_path, curves):
    """Records every 5 s: a run whose last record is at 597 s reached 10 minutes (it stopped within one logging
    interval after), one whose last record is at 500 s did not."""
    rows = [(10 * i, 5.0 * i) for i in range(1, 120)] + [(1200, 597.0, 0.3, 100.0)]
    stopped = curves.read_metrics(write_run(tmp_path / "stopped.jsonl", rows))
    assert curves.value_at(stopped, 10)["step"] == 1200
    early = curves.read_metrics(write_run(tmp_path / "early.jsonl", rows[:99] + [(1000, 500.0, 0.3, 100.0)]))
    assert curves.value_at(early, 10) is None and curves.value_at(early, 8.4)["step"] == 1000
    # a run that finished its schedule early keeps its final evaluation when asked to
    assert curves.value_at(early, 10, hold_final=True) == {"step": 1000, "minutes": 500.0 / 60,
                                                           "valid_masked_acc": 0.3, "valid_perplexity": 100.0,
                                                           "final": True}
    assert "final" not in curves.value_at(early, 8.4, hold_final=True)


def test_compare_curves_command_writes_table_and_figure(two_runs, curves, tmp_path, capsys):
    a, b = two_runs
    out = tmp_path / "figs" / "cmp.png"
    assert curves.main([str(a), str(b), "--at", "5,10", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = {tuple(line.split()[:2]): line.split()[2:] for line in printed.splitlines() if line[:5].strip() in ("5", "10")}
    assert rows[("5", "numpy")] == ["50", "0.2000", "300.00"]
    assert rows[("10", "torch")] == ["n/a", "n/a", "n/a"]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["runs"]["torch"]["at"]["5"]["step"] == 75 and saved["runs"]["torch"]["at"]["10"] is None


def test_compare_at_equal_steps_takes_the_last_evaluation_at_or_before(two_runs, curves):
    a, b = two_runs
    table = curves.compare({"a": curves.read_metrics(a), "b": curves.read_metrics(b)}, [5], [20, 60, 110])
    at = {label: {n: (v and v["step"]) for n, v in r["at_step"].items()} for label, r in table["runs"].items()}
    # a evaluated at steps 20, 50, 100: nothing at or past 110; b at 30, 75, 120: nothing at or before 20
    assert at == {"a": {"20": 20, "60": 50, "110": None}, "b": {"20": None, "60": 30, "110": 75}}


def test_compare_curves_takes_more_than_two_runs(two_runs, curves, tmp_path, capsys):
    a, b = two_runs
    c = write_run(tmp_path / "c.jsonl", [(40, 200.0, 0.22, 320.0)])
    out = tmp_path / "three.png"
    assert curves.main([str(a), str(b), str(c), "--labels", "x,y,z", "--at-steps", "40",
                        "--output", str(out)]) == 0
    saved = json.loads(out.with_suffix(".json").read_text())
    assert set(saved["runs"]) == {"x", "y", "z"}
    assert saved["runs"]["z"]["at_step"]["40"]["valid_masked_acc"] == 0.22
    assert curves.run_labels(None, ["runs/r1", "runs/s1/metrics.jsonl", "runs/s2"]) == ["r1", "s1", "s2"]
    capsys.readouterr()
    assert curves.main([str(a), str(b), str(c), "--labels", "x,y"]) == 2
    assert "give 3 different names" in capsys.readouterr().err
    with pytest.raises(curves.CurvesError, match="positive"):
        curves.parse_steps("10,0")


def test_mean_of_seeds_averages_each_group_and_subtracts(two_runs, curves, tmp_path, capsys):
    a, b = two_runs
    c = write_run(tmp_path / "c.jsonl", [(20, 110.0, 0.30, 100.0), (60, 320.0, 0.40, 90.0), (100, 620.0, 0.5, 80.0)])
    out = tmp_path / "means.png"
    assert curves.main([str(a), str(c), str(b), "--labels", "np-s0,np-s1,torch-s0", "--at", "2,5,10",
                        "--at-steps", "50", "--mean-of", "np,torch", "--output", str(out)]) == 0
    means = json.loads(out.with_suffix(".json").read_text())["means"]
    assert means["groups"] == {"np": ["np-s0", "np-s1"], "torch": ["torch-s0"]}
    # at 5 minutes: np-s0 0.20 (step 50) and np-s1 0.30 (step 20): mean 0.25; torch-s0 0.25: difference 0
    assert means["at"]["5"]["np"]["valid_masked_acc"] == pytest.approx(0.25)
    assert means["at"]["5"]["np"]["valid_perplexity"] == pytest.approx(200.0)
    assert means["at"]["2"]["difference"] == pytest.approx((0.10 + 0.30) / 2 - 0.15)
    assert means["at"]["10"]["torch"] is None and means["at"]["10"]["difference"] is None   # torch ended at 6.7
    assert means["at_step"]["50"]["np"]["valid_masked_acc"] == pytest.approx(0.25)
    printed = capsys.readouterr().out
    assert "np - torch: +5.00 points" in printed and "np = 2 run(s)" in printed
    assert curves.main([str(a), str(b), "--labels", "np-s0,x", "--mean-of", "np"]) == 2
    assert "'x' starts none of the groups np" in capsys.readouterr().err
    with pytest.raises(curves.CurvesError, match="no run's label starts with torch"):
        curves.group_runs(["np-s0"], ["np", "torch"])


def test_compare_curves_rejects_bad_input(tmp_path, curves, two_runs):
    a, _ = two_runs
    assert curves.main([str(a), str(tmp_path / "missing")]) == 2
    with pytest.raises(curves.CurvesError, match="positive"):
        curves.parse_minutes("5,-1")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 1, "elapsed_s": 1.0}\n{"step": 2, "elap')
    with pytest.raises(curves.CurvesError, match="line 2"):
        curves.read_metrics(bad)


def test_ctrl_c_stops_the_reference_even_when_sigint_was_ignored(tmp_path, ref):
    """A script started in the background of a shell inherits SIGINT ignored; Ctrl-C (here: SIGINT sent to itself
    during the run) must still end it as interrupted, with its records kept, and the old handler comes back."""
    import os
    import signal

    cfg = tiny_config(tmp_path, "numpy")
    sent = []

    def log(msg, *a, **k):
        if msg.startswith("step") and not sent:
            sent.append(msg)
            os.kill(os.getpid(), signal.SIGINT)

    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        summary = ref.train_reference(cfg, tmp_path / "torch", threads=1, log=log)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
    assert sent and summary["stop_reason"] == "interrupted"
    assert read_jsonl(tmp_path / "torch" / "metrics.jsonl")
