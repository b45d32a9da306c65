"""Pretraining corpora: names and weighted mixtures, the IMDB reviews (from the data root, or from the canonical
archive through a local HTTP server), packed rows that are cached and mixed in their weights, a vocabulary whose
every token occurs, and bad corpus settings refused before anything is written."""

from __future__ import annotations

import hashlib
import io
import tarfile

import numpy as np
import pytest

from mini_bert import cli
from mini_bert.config import ConfigError, load_config, parse_corpus
from mini_bert.data import corpora
from mini_bert.data.corpora import clean_review, corpus_lines, load_imdb
from mini_bert.errors import DataError
from mini_bert.data import batches as data_loader
from mini_bert.data.batches import mixture_rows, pack_corpus
from mini_bert.data.tokenizer import WordPieceTokenizer
from mini_bert.data.sources import data_root

LINES = ["the film was good .", "a bad film , really bad .", "good acting and a good story .",
         "the story was thin", "really good"] * 8


# ----------------------------------------------------------------------------------------------------------------
# data.corpus


def test_a_mixture_parses_into_corpora_and_shares():
    assert [(c.name, c.weight) for c in parse_corpus("imdb:0.7,brown:0.3")] == [("imdb", 0.7), ("brown", 0.3)]
    assert [(c.name, c.weight) for c in parse_corpus("ptb")] == [("ptb", None)]
    assert [(c.name, c.weight) for c in parse_corpus("/data/my:corpus.txt")] == [("/data/my:corpus.txt", None)]


@pytest.mark.parametrize("spec,words", [
    ("imdb:0,brown:1", ["weight of 'imdb'", "positive"]),
    ("imdb:-0.5,brown:1.5", ["weight of 'imdb'", "positive"]),
    ("imdb:nan,brown:0.5", ["weight of 'imdb'", "positive"]),
    ("imdb:0.5,brown:0.1", ["sum to 0.6", "must sum to 1"]),
    ("imdb:0.5,brown", ["every corpus of a mixture a weight"]),
    ("imdb:0.5,imdb:0.5", ["more than once"]),
    ("imdb,,brown", ["empty part"]),
])
def test_bad_mixtures_are_refused_with_the_setting_named(spec, words):
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"data.corpus={spec}"])
    assert "data.corpus" in str(err.value)
    for w in words:
        assert w in str(err.value)


@pytest.mark.parametrize("spec,words", [
    ("imdb:0.5,nosuchcorpus:0.5", ["unknown corpus 'nosuchcorpus'", "imdb", "does not exist"]),
    ("imdb:0,brown:1", ["data.corpus", "positive"]),
])
def test_train_refuses_a_bad_corpus_with_exit_2_and_writes_nothing(tmp_path, capsys, spec, words):
    out = tmp_path / "run"
    code = cli.main(["train", "--no-progress", "--config", "debugging", f"data.corpus={spec}",
                     f"training.output_dir={out}"])
    err = capsys.readouterr().err
    assert code == 2
    for w in words:
        assert w in err
    assert not out.exists()


def test_named_corpora_hold_out_lines_that_training_never_sees():
    from mini_bert.data.readers import load_sst2
    every = load_sst2("train")[0]
    train, valid = corpus_lines("sst2", "train"), corpus_lines("sst2", "valid")
    assert valid == every[corpora.HOLDOUT_EVERY - 1::corpora.HOLDOUT_EVERY]
    assert len(train) + len(valid) == len(every) and train[:corpora.HOLDOUT_EVERY - 1] == every[:19]
    ewt = corpus_lines("ewt", "train")
    assert ewt and all(isinstance(s, str) and s for s in ewt[:10])


# ----------------------------------------------------------------------------------------------------------------
# IMDB


def test_review_cleaning_removes_html_breaks():
    assert clean_review("Great.<br /><br />Really<br/>great <BR>film  ") == "Great. Really great film"


@pytest.mark.slow
@pytest.mark.skipif(not (data_root() / "imdb" / "unsup.part1.txt").is_file(), reason="needs the IMDB data folder")
def test_the_data_root_holds_all_50000_reviews_without_html():
    reviews = load_imdb()
    assert len(reviews) == corpora.IMDB_REVIEWS
    assert not any("<br" in r.lower() for r in reviews[:5000])
    assert len(corpus_lines("imdb", "valid")) == corpora.IMDB_REVIEWS // corpora.HOLDOUT_EVERY


def _archive(reviews: dict[int, str]) -> bytes:
    """A tar.gz in the layout of aclImdb_v1.tar.gz: unlabelled reviews plus a labelled one that must be ignored."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        members = {f"aclImdb/train/unsup/{i}_0.txt": text for i, text in reviews.items()}
        members["aclImdb/train/pos/0_9.txt"] = "a labelled review, not used"
        for name, text in members.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def imdb_server(server, tmp_path, monkeypatch):
    """The local HTTP server holding a small IMDB archive; the registry points at it; an empty data root."""
    data = _archive({2: "Third review.", 0: "First<br /><br />review.", 1: "Second review."})
    (server.root / "aclImdb_v1.tar.gz").write_bytes(data)
    url = f"{server.url}/aclImdb_v1.tar.gz"
    monkeypatch.setattr(corpora, "IMDB_ARCHIVE", corpora.RemoteFile(url, md5=hashlib.md5(data).hexdigest()))
    monkeypatch.setenv("MINIBERT_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "empty-root").mkdir()
    return {"root": tmp_path / "empty-root", "requests": server.requests, "www": server.root,
            "cache": tmp_path / "cache"}


def test_imdb_is_downloaded_once_checked_and_read_in_id_order(imdb_server):
    reviews = load_imdb(imdb_server["root"], progress=False)
    assert reviews == ["First review.", "Second review.", "Third review."]
    assert imdb_server["requests"] == ["/aclImdb_v1.tar.gz"]
    assert load_imdb(imdb_server["root"], progress=False) == reviews      # from the cache: no second request
    assert imdb_server["requests"] == ["/aclImdb_v1.tar.gz"]


def test_an_imdb_archive_with_the_wrong_checksum_is_refused_and_not_kept(imdb_server, monkeypatch):
    monkeypatch.setattr(corpora, "IMDB_ARCHIVE", corpora.RemoteFile(corpora.IMDB_ARCHIVE.url, md5="0" * 32))
    with pytest.raises(ValueError, match="checksum mismatch"):
        load_imdb(imdb_server["root"], progress=False)
    assert not any(p.is_file() for p in imdb_server["cache"].rglob("*"))


def test_imdb_missing_with_no_way_to_fetch_it_says_where_to_put_it(imdb_server, tmp_path, capsys):
    (imdb_server["www"] / "aclImdb_v1.tar.gz").unlink()
    with pytest.raises(DataError, match="MINIBERT_DATA_DIR"):
        load_imdb(imdb_server["root"], progress=False)
    out = tmp_path / "run"
    code = cli.main(["train", "--no-progress", "--config", "debugging", "data.corpus=imdb",
                     f"data.data_dir={imdb_server['root']}", f"training.output_dir={out}"])
    assert code == 2 and "IMDB" in capsys.readouterr().err and not out.exists()


# ----------------------------------------------------------------------------------------------------------------
# Packed rows, mixtures, the vocabulary


@pytest.fixture(scope="module")
def tokenizer():
    return WordPieceTokenizer.train(LINES, vocab_size=200)


def test_packed_rows_are_compact_and_cached(tokenizer, monkeypatch):
    ids, types = pack_corpus(LINES, tokenizer, 16)
    assert ids.dtype == np.uint16 and types.dtype == np.uint8 and ids.shape[1] == 16
    expected, _ = data_loader.pack_sequences(data_loader.encode_corpus(LINES, tokenizer), 16)
    np.testing.assert_array_equal(ids, expected)

    def no_encoding(*args):
        raise AssertionError("a cached corpus must not be encoded again")
    monkeypatch.setattr(data_loader, "encode_corpus", no_encoding)
    again, _ = pack_corpus(LINES, tokenizer, 16)
    np.testing.assert_array_equal(again, ids)


def test_a_mixture_holds_each_corpus_in_its_share_and_drops_no_row():
    a = (np.arange(100, dtype=np.uint16)[:, None] + np.zeros((1, 4), np.uint16), np.zeros((100, 4), np.uint8))
    b = (1000 + np.arange(10, dtype=np.uint16)[:, None] + np.zeros((1, 4), np.uint16), np.zeros((10, 4), np.uint8))
    ids, types = mixture_rows([a, b], [0.7, 0.3])
    from_a, from_b = ids[:, 0] < 1000, ids[:, 0] >= 1000
    assert from_a.sum() == 100 and set(ids[from_a, 0]) == set(range(100))          # a appears once, whole
    assert abs(from_b.sum() / len(ids) - 0.3) < 0.01                                 # b repeated to its share
    assert set(ids[from_b, 0]) == set(range(1000, 1010)) and types.shape == ids.shape


def test_the_fitted_vocabulary_has_exactly_its_size_and_no_unused_token():
    from mini_bert.data.corpora import corpus_lines
    lines = corpus_lines("sst2", "train")[:3000]
    plain = WordPieceTokenizer.train(lines, vocab_size=1500)
    words = plain.word_counts(lines)
    assert (plain.piece_counts(words)[5:] == 0).sum() > 0         # the plain trainer leaves unused tokens
    fitted = WordPieceTokenizer.train_fitted(lines, vocab_size=1500)
    assert fitted.vocab_size == 1500
    counts = np.zeros(1500, dtype=np.int64)
    for ids in fitted.encode_batch(lines):                        # encode the text itself, not the word counts
        np.add.at(counts, ids, 1)
    assert (counts[5:] == 0).sum() == 0


# ----------------------------------------------------------------------------------------------------------------
# Rows that start where a sentence starts (data.rows=sentences)


@pytest.mark.parametrize("text, sentences", [
    ("It was fine. Then it ended!", ["It was fine.", "Then it ended!"]),
    ("circa 1931).So I went", ["circa 1931).", "So I went"]),                  # IMDB's lost space after <br />
    ('He said "Wow!" Then left... Why?! "Yes." End', ['He said "Wow!"', "Then left...", "Why?!", '"Yes."', "End"]),
    ("The U.S. POWs met Mr. Smith and J. R. Ewing. It ends.", ["The U.S. POWs met Mr. Smith and J. R. Ewing.",
                                                               "It ends."]),
    ("it costs 3.50 dollars. and runs on", ["it costs 3.50 dollars. and runs on"]),   # no capital: one sentence
    ("  ", []),
])
def test_sentences_are_split_at_their_end_marks_and_not_at_initials_or_titles(text, sentences):
    from mini_bert.data.readers import split_sentences
    assert split_sentences(text) == sentences


def test_sentence_rows_start_at_a_sentence_and_held_out_rows_stay_packed(tmp_path):
    from mini_bert.config import CLS_ID, PAD_ID, SEP_ID
    from mini_bert.training.trainer import prepare_data
    reviews = ["The film was good. A bad film, really bad. Good acting and a good story.",
               "The story was thin. Really good. The film was bad."] * 12
    (tmp_path / "reviews.txt").write_text("\n".join(reviews) + "\n")
    tok = WordPieceTokenizer.train(reviews, vocab_size=300)
    firsts = {tok.encode(s)[0] for r in reviews for s in r.split(". ")}            # each sentence's first piece

    def rows(mode):
        cfg = load_config(None, [f"data.corpus={tmp_path / 'reviews.txt'}", f"model.vocab_size={tok.vocab_size}",
                                 "data.max_seq_len=16", "training.batch_size=4", "data.valid_batches=1",
                                 f"data.rows={mode}"])
        _, stream, valid = prepare_data(cfg, tokenizer=tok, log=lambda *a: None)
        return stream.sequences, valid
    packed, packed_valid = rows("packed")
    sentences, sentences_valid = rows("sentences")
    assert (sentences[:, 0] == CLS_ID).all() and set(sentences[:, 1]) <= firsts
    assert not set(packed[:, 1]) <= firsts                       # packed rows also start inside sentences
    ends = np.argmax(sentences == SEP_ID, axis=1)                 # every row ends with a whole sentence
    assert (sentences[np.arange(len(sentences)), ends - 1] == tok.vocab.index(".")).all()
    text = lambda ids: ((ids != PAD_ID) & (ids != CLS_ID) & (ids != SEP_ID)).sum()
    assert text(sentences) == text(packed)                        # the same text, cut differently
    for a, b in zip(packed_valid, sentences_valid):
        np.testing.assert_array_equal(a.input_ids, b.input_ids)
