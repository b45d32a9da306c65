"""ModelFactory: models from config names, from Mini-BERT checkpoints (folder or run folder) and from Hugging Face
folders, and tokenizers from a vocabulary file or a corpus (trained once, then reused)."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from mini_bert import ModelFactory
from mini_bert.config import CONFIG_DIR, ConfigError, ModelConfig, load_config, pretraining_model
from mini_bert.core.model import MiniBERT
from mini_bert.training.checkpointing import save_checkpoint
from mini_bert.data.tokenizer import WordPieceTokenizer

TINY = ModelConfig(vocab_size=64, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                   max_position_embeddings=16)


def test_create_model_from_default_names_and_configs():
    assert ModelFactory.create_model().config == ModelConfig()
    assert ModelFactory.create_model("base").config == pretraining_model()
    small = ModelFactory.create_model("small")
    assert small.config == ModelConfig(**yaml.safe_load((CONFIG_DIR / "model" / "small.yaml").read_text()))
    assert ModelFactory.create_model(CONFIG_DIR / "model" / "debug.yaml").config.hidden_size == 32
    model = ModelFactory.create_model(TINY, seed=3)
    assert isinstance(model, MiniBERT) and model.config == TINY
    # the seed decides the weights, as for MiniBERT itself
    assert np.array_equal(model.store.flat, MiniBERT(TINY, seed=3).store.flat)
    assert not np.array_equal(model.store.flat, ModelFactory.create_model(TINY, seed=4).store.flat)


def test_create_model_rejects_unknown_names_listing_the_known_ones():
    with pytest.raises(ConfigError, match=r"'huge' not found.*'small'"):
        ModelFactory.create_model("huge")
    with pytest.raises(TypeError, match="ModelConfig"):
        ModelFactory.create_model(3)


def _tokenizer(vocab_size=300) -> WordPieceTokenizer:
    lines = [f"the cat number {i} sat on the mat and the dog ran {i % 7} times" for i in range(200)]
    return WordPieceTokenizer.train(lines, vocab_size=vocab_size)


def test_load_model_round_trips_checkpoint_and_run_folders(tmp_path):
    model = ModelFactory.create_model(TINY, seed=1)
    model.store.flat[:] += np.float32(0.5)                  # not what a fresh model of this seed holds
    cfg = load_config(None).model_copy(update={"model": TINY})
    ck = save_checkpoint(tmp_path / "run" / "step_0000005", cfg, model, None, None, {"step": 5})
    for where in (ck, tmp_path / "run"):                    # the folder itself, or the run folder holding it
        loaded = ModelFactory.load_model(where)
        assert loaded.config == TINY
        assert np.array_equal(loaded.store.flat, model.store.flat)


def test_load_model_reads_a_hugging_face_folder(tmp_path):
    from mini_bert.core.pretrained import save_pretrained

    model = ModelFactory.create_model(TINY.model_copy(update={"activation": "gelu"}), seed=2)
    folder = save_pretrained(model, tmp_path / "hf")
    assert (folder / "config.json").exists() and not (folder / "config.yaml").exists()
    loaded = ModelFactory.load_model(folder)
    assert loaded.config.hidden_size == 16 and loaded.config.activation == "gelu"
    for name, value in model.params.items():
        assert np.array_equal(loaded.params[name], value), name


def test_load_model_missing_path():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ModelFactory.load_model("/nonexistent/run")


def test_create_tokenizer_loads_a_vocabulary(tmp_path):
    tok = _tokenizer()
    tok.save(tmp_path / "tok")
    for where in (tmp_path / "tok", tmp_path / "tok" / "vocab.txt"):
        loaded = ModelFactory.create_tokenizer(tok.vocab_size, vocab_path=where)
        assert loaded.encode("the cat sat") == tok.encode("the cat sat")
    with pytest.raises(ValueError, match=f"pass vocab_size={tok.vocab_size}"):
        ModelFactory.create_tokenizer(8192, vocab_path=tmp_path / "tok")
    assert ModelFactory.create_tokenizer(None, vocab_path=tmp_path / "tok").vocab_size == tok.vocab_size
    with pytest.raises(FileNotFoundError):
        ModelFactory.create_tokenizer(vocab_path=tmp_path / "missing")


def test_create_tokenizer_trains_on_a_corpus_once_then_reuses_it(tmp_path):
    from mini_bert.data.readers import load_ptb

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(load_ptb("train")[:1500]) + "\n")
    messages = []
    first = ModelFactory.create_tokenizer(300, corpus=str(corpus), log=messages.append)
    second = ModelFactory.create_tokenizer(300, corpus=str(corpus), log=messages.append)
    assert first.vocab_size == second.vocab_size == 300
    assert first.vocab == second.vocab
    assert "trained" in messages[0] and "reusing" in messages[1]
