"""What the integration tests share: a tiny trained run (`tiny_run`: a 2-layer pre-LN model, hidden 32, 2 heads,
trained by the Trainer for 60 steps on a templated corpus with held-out evaluations every 20 steps, so the run
folder has curves, checkpoints and best/ like a real one; a few seconds on one core), the trainer that makes it
(`train_tiny_run`, for runs of another length), a PTB slice with its vocabulary (`corpus`), and a copy of a run
cut back to an earlier step (`cut_back`), the folder a resumed run must continue exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
from threadpoolctl import threadpool_limits

SENTENCES = ["alice likes red apples and sings", "bob eats green pears and runs", "carol buys yellow lemons and reads",
             "dave sells purple plums and swims", "erin cooks orange carrots and dances",
             "frank grows white onions and sleeps"]


@pytest.fixture(scope="session")
def tiny_sentences() -> list[str]:
    """The sentences the tiny run was trained on."""
    return list(SENTENCES)


def copy_cut_back(run: Path, dest: Path, step: int) -> Path:
    """A copy of run folder `run` at `dest` without best/ and the step checkpoints after `step`: what a run stopped
    at `step` would have left."""
    import shutil

    from mini_bert.training.checkpointing import list_step_checkpoints

    shutil.copytree(run, dest)
    for p in list_step_checkpoints(dest):
        if int(p.name[5:]) > step:
            shutil.rmtree(p)
    shutil.rmtree(dest / "best")
    return dest


@pytest.fixture(scope="session")
def cut_back():
    """copy_cut_back, for tests that resume a run from an earlier step."""
    return copy_cut_back


def train_tiny_run(folder: Path, max_steps: int, checkpoint_every: int, eval_every: int) -> Path:
    """Train the tiny model on the templated corpus into folder/run (vocabulary trained once, in folder)."""
    from mini_bert.config import load_config
    from mini_bert.data.tokenizer import WordPieceTokenizer
    from mini_bert.training.trainer import Trainer

    lines = [SENTENCES[i % len(SENTENCES)] for i in range(600)]
    (folder / "corpus.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    tokenizer = WordPieceTokenizer.train(lines, vocab_size=256)
    tokenizer.save(folder)
    run = folder / "run"
    overrides = [
        f"model.vocab_size={tokenizer.vocab_size}", "model.hidden_size=32", "model.num_layers=2", "model.num_heads=2",
        "model.intermediate_size=64", "model.max_position_embeddings=32", "model.norm_position=pre",
        "model.activation=gelu", "model.dropout=0.0", "model.attention_dropout=0.0",
        f"data.corpus={folder / 'corpus.txt'}", f"data.tokenizer={folder / 'vocab.txt'}", "data.max_seq_len=32",
        "data.valid_batches=2", f"training.max_steps={max_steps}", f"training.checkpoint_every={checkpoint_every}",
        f"training.eval_every={eval_every}", "training.batch_size=8", "training.keep_last=5", "training.threads=1",
        "training.lr=1e-2", "training.log_every=5", f"training.output_dir={run}"]
    with threadpool_limits(1):
        Trainer(load_config(None, overrides), progress=False, log=lambda *a: None).train()
    return run


@pytest.fixture(scope="session")
def make_tiny_run():
    """train_tiny_run, for modules that need a run of another length."""
    return train_tiny_run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    return train_tiny_run(tmp_path_factory.mktemp("tiny-run"), max_steps=60, checkpoint_every=30, eval_every=20)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """3,000 PTB training sentences as a plain text corpus (train = 95% of lines, valid = every 20th), with a
    512-token WordPiece vocabulary trained on it in the same folder (vocab.txt): the trainer and MPI tests' runs
    share it through data.tokenizer, so that runs compared with each other see one vocabulary."""
    from mini_bert.data.readers import load_ptb
    from mini_bert.data.tokenizer import WordPieceTokenizer

    folder = tmp_path_factory.mktemp("corpus")
    lines = load_ptb("train")[:3000]
    (folder / "ptb_slice.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    WordPieceTokenizer.train(lines, vocab_size=512).save(folder)
    return folder / "ptb_slice.txt"
