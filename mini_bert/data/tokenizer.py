"""WordPiece tokenizer (BERT-style), trained and run by Hugging Face `tokenizers` (Rust), saved as a BERT vocab.txt.

Pipeline for one text: BertNormalizer (clean control characters, optional lowercase + accent stripping) ->
BertPreTokenizer (split on whitespace and around every punctuation character) -> WordPiece (greedy longest match
from the left; pieces after the first carry the `##` prefix; a word with no complete cover becomes [UNK]).

Special tokens sit at fixed ids, [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4 (mini_bert.config), and are matched in the
raw text before normalisation, so a literal "[UNK]" (PTB's <unk>, rewritten by the loader) or "[MASK]" (cloze probes)
is one token. `encode` adds no [CLS]/[SEP]: packing into model rows is data_loader.pack_sequences' job.
"""

from __future__ import annotations

import json
import string
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from ..errors import DataError
from ..config import SPECIAL_TOKENS, UNK_ID
from .sources import atomic_write_text

CONTINUATION = "##"
VOCAB_FILE = "vocab.txt"
CONFIG_FILE = "tokenizer_config.json"
_UNK = SPECIAL_TOKENS[UNK_ID]


def _alphabet(lowercase: bool) -> list[str]:
    """Characters that get a word-initial and a `##` piece whatever the corpus, so text unlike the training corpus
    (PTB has no capitals, digits written as N, no punctuation) still splits into pieces instead of whole-word [UNK].
    Capitals only when the tokenizer is cased: a lowercasing normaliser never lets one reach the model."""
    letters = string.ascii_lowercase if lowercase else string.ascii_letters
    return list(letters + string.digits + string.punctuation)


def _build(vocab: dict[str, int] | None, lowercase: bool) -> Tokenizer:
    model = models.WordPiece(vocab, unk_token=_UNK, continuing_subword_prefix=CONTINUATION) if vocab is not None \
        else models.WordPiece(unk_token=_UNK, continuing_subword_prefix=CONTINUATION)
    tok = Tokenizer(model)
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix=CONTINUATION)
    # Special tokens are matched on the raw text, before the normaliser and pre-tokenizer split "[UNK]" apart.
    tok.add_special_tokens(SPECIAL_TOKENS)
    return tok


def _blank_specials(text: str) -> str:
    for special in SPECIAL_TOKENS:
        if special in text:
            text = text.replace(special, " ")
    return text


def _check_vocab(tokens: list[str], source: str) -> None:
    if not tokens:
        raise DataError(f"vocabulary {source} is empty; train a tokenizer with WordPieceTokenizer.train(...)")
    wrong = [f"{tok} should be id {i} but is {'id ' + str(tokens.index(tok)) if tok in tokens else 'missing'}"
             for i, tok in enumerate(SPECIAL_TOKENS) if i >= len(tokens) or tokens[i] != tok]
    if wrong:
        raise DataError(f"vocabulary {source}: special tokens must occupy ids 0-{len(SPECIAL_TOKENS) - 1} in the "
                         f"order {' '.join(SPECIAL_TOKENS)}; " + "; ".join(wrong) +
                         ". (Vocabularies such as bert-base's, with [UNK]=100, use other ids; retrain instead.)")
    if len(set(tokens)) != len(tokens):
        dup = sorted({t for t in tokens if tokens.count(t) > 1})[:5]
        raise DataError(f"vocabulary {source} lists tokens more than once: {dup}")


class WordPieceTokenizer:
    """A trained WordPiece vocabulary and the Rust tokenizer that applies it. Ids are plain Python ints."""

    def __init__(self, vocab: list[str], lowercase: bool = True):
        """vocab: the tokens in id order (specials first, as `_check_vocab` requires)."""
        _check_vocab(vocab, "given")
        self._vocab = list(vocab)
        self._lowercase = bool(lowercase)
        self._tok = _build({t: i for i, t in enumerate(self._vocab)}, self._lowercase)

    # -- construction ---------------------------------------------------------------------------------------------

    @classmethod
    def train(cls, sentences: Iterable[str], vocab_size: int = 8192, lowercase: bool = True,
              min_frequency: int = 2) -> "WordPieceTokenizer":
        """Learn a WordPiece vocabulary of at most `vocab_size` tokens (fewer if the corpus runs out of pairs).

        The vocabulary is the 5 special tokens, then every alphabet character both word-initially and as `##c`
        (the corpus' own characters plus `_alphabet`), then the learned pieces, most useful first. Pieces whose
        pairs occur fewer than `min_frequency` times are not learned.
        """
        alphabet = _alphabet(lowercase)
        n_reserved = len(SPECIAL_TOKENS) + 2 * len(alphabet)
        if vocab_size < n_reserved:
            raise DataError(f"vocab_size={vocab_size} is too small: the special tokens and the base alphabet "
                             f"(with ## forms) alone take {n_reserved}; use at least {n_reserved + 100}")
        tok = _build(None, lowercase)
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
            special_tokens=SPECIAL_TOKENS, initial_alphabet=alphabet, continuing_subword_prefix=CONTINUATION)
        # The trainer would count a literal "[UNK]" in the text as the characters "[", "U", "N", "K", "]" and spend
        # vocabulary on them; special tokens are fixed entries already, so they are blanked out of the training text.
        tok.train_from_iterator((_blank_specials(s) for s in sentences), trainer=trainer)
        learned = [t for t, _ in sorted(tok.get_vocab(with_added_tokens=True).items(), key=lambda kv: kv[1])]
        # The trainer adds `##c` only for characters it saw inside words. Add the missing ones (a cased word from a
        # digit-free corpus, e.g. "A4", must still split into pieces) and drop as many of the last-learned pieces,
        # the least frequent ones, to keep the size; WordPiece needs no merge history, so any piece can go.
        have = set(learned)
        missing = [p for c in alphabet for p in (c, CONTINUATION + c) if p not in have]
        vocab = learned + missing
        if len(vocab) > vocab_size:
            base = set(SPECIAL_TOKENS) | {p for c in alphabet for p in (c, CONTINUATION + c)}
            single = {t for t in learned if len(t) == 1 or (t.startswith(CONTINUATION) and len(t) == 3)}
            excess = len(vocab) - vocab_size
            drop = set()
            for t in reversed(learned):
                if len(drop) == excess:
                    break
                if t not in base and t not in single:
                    drop.add(t)
            vocab = [t for t in vocab if t not in drop]
        return cls(vocab, lowercase)

    @classmethod
    def frequent_words(cls, sentences: Iterable[str], vocab_size: int, lowercase: bool = True
                       ) -> "WordPieceTokenizer":
        """A vocabulary by a fixed rule, the same on every run: the special tokens, every alphabet character both
        word-initially and as `##c`, then the most frequent words of two or more characters (ties in alphabetical
        order). Hugging Face's trainer breaks ties between equally frequent pairs differently from one process to
        the next; where two runs must see the same vocabulary without sharing a file, this one does."""
        from collections import Counter

        vocab = list(SPECIAL_TOKENS) + [p for c in _alphabet(lowercase) for p in (c, CONTINUATION + c)]
        if vocab_size < len(vocab):
            raise DataError(f"vocab_size={vocab_size} is too small: the special tokens and the base alphabet "
                            f"(with ## forms) alone take {len(vocab)}")
        have = set(vocab)
        counts = Counter(w for s in sentences for w in (s.lower() if lowercase else s).split()
                         if w not in have and len(w) > 1)
        words = [w for w, _ in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0]))]
        return cls(vocab + words[:vocab_size - len(vocab)], lowercase)

    @classmethod
    def train_fitted(cls, sentences: Iterable[str], vocab_size: int = 8192, lowercase: bool = True,
                     log=None) -> "WordPieceTokenizer":
        """A WordPiece vocabulary of exactly `vocab_size` tokens every one of which occurs when `sentences` are
        encoded (special tokens aside).

        Hugging Face's trainer keeps the intermediate pieces it merged on the way to longer ones, and `train` adds
        the whole base alphabet, so a plain vocabulary holds tokens that its own corpus never produces (about one in
        six for PTB at 8,192); their embeddings receive no gradient but weight decay. Here the vocabulary is trained
        larger, the unused tokens are dropped (WordPiece's greedy longest match never chose them, so no encoding
        changes), and the least frequent learned pieces are cut to reach `vocab_size`; repeated until every token
        is used. Characters the corpus lacks then have no piece (a word containing one becomes [UNK]).
        """
        sentences = list(sentences)
        words = cls([*SPECIAL_TOKENS], lowercase).word_counts(sentences)
        if not words:
            raise DataError("no words to train a vocabulary on: the corpus is empty")
        request = vocab_size
        for _ in range(6):
            candidates = cls.train(sentences, request, lowercase)._vocab
            while True:
                vocab = candidates[:vocab_size]
                used = cls(vocab, lowercase).piece_counts(words) > 0
                used[:len(SPECIAL_TOKENS)] = True
                if used.all():
                    if log is not None:
                        log(f"WordPiece vocabulary of {len(vocab)}: every token occurs in the training text")
                    return cls(vocab, lowercase)
                unused = {t for t, u in zip(vocab, used) if not u}
                candidates = [t for t in candidates if t not in unused]
                if len(candidates) < vocab_size:
                    break
            request += vocab_size - len(candidates) + vocab_size // 20
        raise DataError(f"could not fit a vocabulary of {vocab_size} tokens that all occur in the corpus (it has "
                         f"{len(words):,} distinct words); use a smaller model.vocab_size")

    def word_counts(self, sentences: Iterable[str]) -> Counter[str]:
        """How often each word occurs, words as this tokenizer's normaliser and pre-tokenizer cut them (special
        tokens left out)."""
        normalizer, pre_tokenizer = self._tok.normalizer, self._tok.pre_tokenizer
        counts: Counter[str] = Counter()
        for s in sentences:
            counts.update(w for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(_blank_specials(s))))
        return counts

    def piece_counts(self, words: Counter[str]):
        """(vocab_size,) int64: how often each token occurs when words with these counts are encoded."""
        import numpy as np

        items = list(words.items())
        encodings = self._tok.encode_batch([[w] for w, _ in items], is_pretokenized=True, add_special_tokens=False)
        ids = np.fromiter((i for enc in encodings for i in enc.ids), dtype=np.int64)
        weights = np.fromiter((n for (_, n), enc in zip(items, encodings) for _ in enc.ids), dtype=np.float64)
        return np.bincount(ids, weights, minlength=self.vocab_size).astype(np.int64)

    def save(self, directory: str | Path) -> Path:
        """Write `vocab.txt` (one token per line, id = line number) and `tokenizer_config.json`; returns the folder."""
        directory = Path(directory)
        atomic_write_text(directory / VOCAB_FILE, "\n".join(self._vocab) + "\n")
        atomic_write_text(directory / CONFIG_FILE,
                          json.dumps({"lowercase": self._lowercase, "vocab_size": self.vocab_size}, indent=2) + "\n")
        return directory

    @classmethod
    def load(cls, path: str | Path) -> "WordPieceTokenizer":
        """Load from a folder written by `save` (or a Hugging Face BERT folder), or from a vocab.txt.

        Casing comes from tokenizer_config.json next to the vocab: "lowercase" (ours) or "do_lower_case" (Hugging
        Face); without either, lowercase=True.
        """
        path = Path(path)
        vocab_path = path / VOCAB_FILE if path.is_dir() else path
        if not vocab_path.is_file():
            raise DataError(f"no vocabulary at {vocab_path}: pass a folder written by WordPieceTokenizer.save "
                             f"or the path of a vocab.txt")
        tokens = vocab_path.read_text(encoding="utf-8").splitlines()
        while tokens and tokens[-1] == "":
            tokens.pop()
        _check_vocab(tokens, str(vocab_path))
        lowercase = True
        config_path = vocab_path.parent / CONFIG_FILE
        if config_path.is_file():
            config = json.loads(config_path.read_text(encoding="utf-8"))
            lowercase = bool(config.get("lowercase", config.get("do_lower_case", True)))
        return cls(tokens, lowercase)

    # -- properties -----------------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(self._vocab)

    @property
    def lowercase(self) -> bool:
        return self._lowercase

    @property
    def vocab(self) -> list[str]:
        """The tokens in id order (a copy)."""
        return list(self._vocab)

    def continuation_mask(self) -> np.ndarray:
        """(V,) bool: True for the pieces that continue a word (`##...`), as whole-word masking needs them."""
        return np.array([t.startswith(CONTINUATION) for t in self._vocab])

    # -- encoding -------------------------------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """Subword ids of `text`, without [CLS]/[SEP]."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """`encode` for many texts at once (Rust, parallel)."""
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def encode_words(self, words: list[str]) -> tuple[list[int], list[int]]:
        """Encode pre-split words (a tagged sentence) and say which word each subword came from.

        Returns (ids, word_index) of equal length: word_index[k] is the position in `words` of the word that
        subword k belongs to, non-decreasing, so first-subword or mean pooling maps subwords back to tags. Every
        word gets at least one subword: a word the normaliser erases entirely (control characters) becomes [UNK].
        """
        words = list(words)
        if not words:
            return [], []
        enc = self._tok.encode(words, is_pretokenized=True, add_special_tokens=False)
        ids, word_index = [], []
        k = 0
        n = len(enc.ids)
        for w in range(len(words)):
            start = len(ids)
            while k < n and enc.word_ids[k] == w:
                ids.append(enc.ids[k])
                word_index.append(w)
                k += 1
            if len(ids) == start:
                ids.append(UNK_ID)
                word_index.append(w)
        return ids, word_index

    # -- decoding -------------------------------------------------------------------------------------------------

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text from ids: `##` pieces glued to the previous piece, words joined with spaces."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self._vocab):
                raise DataError(f"token id {i} is outside the vocabulary (0..{len(self._vocab) - 1})")
            out.append(self._vocab[i])
        return out

    def token_to_id(self, token: str) -> int | None:
        """Id of a vocabulary entry (e.g. "##ing"), or None when it is not one."""
        return self._tok.token_to_id(token)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"WordPieceTokenizer(vocab_size={self.vocab_size}, lowercase={self._lowercase})"
