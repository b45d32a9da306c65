"""Readers for the knowledge-probe datasets: BLiMP, word similarity, word analogy and LAMA.

Each reader takes `data_dir` (default: `mini_bert.data.sources.data_root()`), reads the files exactly as they are
in the data root (their SOURCES.md describes them) and returns plain Python records. A missing or malformed file
raises `DataError` (a ValueError) naming the file, the line and what to do. The probes themselves, which turn these
records into numbers, live in `knowledge.py`.

    load_blimp(data_dir, paradigms)        -> {paradigm UID: [BlimpPair]}      blimp/data/<UID>.jsonl
    load_word_similarity(name, data_dir)   -> [WordPair]                       word-similarity/...
    load_analogies(data_dir)               -> {section: [(a, b, c, d)]}        word-analogy/questions-words.txt
    load_lama_relations(data_dir)          -> {relation id: LamaRelation}       lama/relations.jsonl
    load_trex(data_dir, relations)         -> [LamaFact]                        lama/trex_facts.tsv
    load_google_re(data_dir)               -> [LamaFact]                        lama/google_re_facts.tsv
    load_lama_squad(data_dir)              -> [LamaCloze]                       lama/squad_test.jsonl
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..data.readers import DataError
from ..data.sources import data_root


# ----------------------------------------------------------------------------------------------------------------
# Records


@dataclass(frozen=True)
class BlimpPair:
    """One BLiMP minimal pair: `good` is acceptable, `bad` differs from it minimally and is not."""

    good: str
    bad: str
    paradigm: str          # the UID, e.g. "regular_plural_subject_verb_agreement_1"
    term: str              # linguistics_term, e.g. "subject_verb_agreement" (13 of them)
    field: str             # "syntax", "morphology", "semantics" or "syntax_semantics"
    pair_id: int


@dataclass(frozen=True)
class WordPair:
    """Two words and the human similarity (or relatedness) score of the pair."""

    word1: str
    word2: str
    score: float


@dataclass(frozen=True)
class LamaRelation:
    relation: str          # "P19", or a Google-RE name such as "place_of_birth"
    template: str          # "[X] was born in [Y] ." : [X] is the subject, [Y] the object to predict
    label: str


@dataclass(frozen=True)
class LamaFact:
    """A (subject, relation, object) triple; the probe fills the relation's template with subject and [MASK]."""

    relation: str
    subject: str
    obj: str


@dataclass(frozen=True)
class LamaCloze:
    """A sentence whose masked word (`[MASK]`, written literally) is `obj` (LAMA's SQuAD subset)."""

    sentence: str
    obj: str
    id: str


# Google-RE has no template file in LAMA: its run script fixes these three (LAMA's get_GoogleRE_parameters).
GOOGLE_RE_TEMPLATES = {
    "place_of_birth": "[X] was born in [Y] .",
    "date_of_birth": "[X] (born [Y]).",
    "place_of_death": "[X] died in [Y] .",
}

# Word-similarity sets: name -> (file under word-similarity/, column separator, has a header line,
# (word1, word2, score) column indices). Scores are on each set's own scale; Spearman only needs the ranks.
SIMILARITY_SETS = {
    "simlex999": ("simlex-999/SimLex-999.txt", "\t", True, (0, 1, 3)),       # 999 pairs, scores 0-10
    "men": ("men/MEN_dataset_natural_form_full", " ", True, (0, 1, 2)),       # 3,000 pairs, scores 0-50
    "wordsim353": ("wordsim353/combined.csv", ",", True, (0, 1, 2)),          # 353 rows (money,cash twice)
    "wordsim353-sim": ("wordsim353/similarity.tab", "\t", False, (0, 1, 2)),  # 203 (Agirre et al. 2009 split)
    "wordsim353-rel": ("wordsim353/relatedness.tab", "\t", False, (0, 1, 2)),  # 252
}


# ----------------------------------------------------------------------------------------------------------------
# Helpers


def _dataset_file(data_dir, *parts: str) -> Path:
    """data_root(data_dir)/parts..., or DataError saying where it was looked for and how to point elsewhere."""
    root = data_root(data_dir)
    path = root.joinpath(*parts)
    if not path.is_file():
        raise DataError(f"missing dataset file {path}: the knowledge probes read {'/'.join(parts)} under the data "
                        f"root {root}. Point --data-dir or $MINIBERT_DATA_DIR at the folder that holds it "
                        f"(see its SOURCES.md).")
    return path


def _lines(path: Path) -> list[str]:
    """The file's lines without line endings (LF or CRLF); DataError if it is empty."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if not any(line.strip() for line in lines):
        raise DataError(f"{path} is empty; it should hold the dataset described in its folder's SOURCES.md")
    return lines


def _json_lines(path: Path, required: tuple[str, ...]) -> list[tuple[int, dict]]:
    """(line number, record) for each non-blank line; DataError on bad JSON or a missing field."""
    out = []
    for n, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: not valid JSON ({e}); the file should hold one JSON object per line")
        if not isinstance(rec, dict):
            raise DataError(f"{path}:{n}: expected a JSON object, got {type(rec).__name__}")
        missing = [k for k in required if k not in rec]
        if missing:
            raise DataError(f"{path}:{n}: record lacks field(s) {', '.join(missing)}; expected {', '.join(required)}")
        out.append((n, rec))
    return out


# ----------------------------------------------------------------------------------------------------------------
# BLiMP


def blimp_paradigms(data_dir=None) -> list[str]:
    """The paradigm UIDs available under blimp/data (file names without .jsonl), sorted; 67 in the full set."""
    folder = data_root(data_dir) / "blimp" / "data"
    names = sorted(p.stem for p in folder.glob("*.jsonl")) if folder.is_dir() else []
    if not names:
        raise DataError(f"no BLiMP paradigm files (*.jsonl) in {folder}. Point --data-dir or $MINIBERT_DATA_DIR at "
                        f"a data root whose blimp/data holds them (see blimp/SOURCES.md).")
    return names


def load_blimp(data_dir=None, paradigms: list[str] | None = None) -> dict[str, list[BlimpPair]]:
    """BLiMP minimal pairs by paradigm, in file order: {UID: [BlimpPair]} (1,000 pairs per paradigm).

    paradigms: UIDs to read (default: all). All pairs are returned, including the 7 whose two sentences are
    identical; the probe skips those.
    """
    available = blimp_paradigms(data_dir)
    if paradigms is None:
        paradigms = available
    unknown = [p for p in paradigms if p not in available]
    if unknown:
        raise DataError(f"unknown BLiMP paradigm(s) {', '.join(unknown)}; available ({len(available)}): "
                        f"{', '.join(available[:8])}, ...")
    required = ("sentence_good", "sentence_bad", "UID", "linguistics_term", "field", "pairID")
    out = {}
    for uid in paradigms:
        path = data_root(data_dir) / "blimp" / "data" / f"{uid}.jsonl"
        pairs = []
        for n, rec in _json_lines(path, required):
            try:
                pair_id = int(rec["pairID"])
            except (TypeError, ValueError):
                raise DataError(f"{path}:{n}: pairID {rec['pairID']!r} is not an integer")
            pairs.append(BlimpPair(str(rec["sentence_good"]), str(rec["sentence_bad"]), str(rec["UID"]),
                                   str(rec["linguistics_term"]), str(rec["field"]), pair_id))
        out[uid] = pairs
    return out


# ----------------------------------------------------------------------------------------------------------------
# Word similarity and analogy


def load_word_similarity(name: str, data_dir=None) -> list[WordPair]:
    """The pairs of one similarity set, in file order. name: one of SIMILARITY_SETS (simlex999, men, wordsim353,
    wordsim353-sim, wordsim353-rel). Words are returned as written (cased); the probe lowercases them if needed."""
    if name not in SIMILARITY_SETS:
        raise DataError(f"unknown word-similarity set {name!r}; choose one of {', '.join(SIMILARITY_SETS)}")
    rel, sep, header, (i1, i2, i_score) = SIMILARITY_SETS[name]
    path = _dataset_file(data_dir, "word-similarity", *rel.split("/"))
    lines = _lines(path)
    pairs = []
    for n, line in enumerate(lines, 1):
        if (header and n == 1) or not line.strip():
            continue
        cols = line.strip().split(sep)
        if len(cols) <= max(i1, i2, i_score):
            raise DataError(f"{path}:{n}: expected at least {max(i1, i2, i_score) + 1} {sep!r}-separated columns, "
                            f"got {len(cols)}: {line[:80]!r}")
        try:
            score = float(cols[i_score])
        except ValueError:
            raise DataError(f"{path}:{n}: score {cols[i_score]!r} is not a number")
        pairs.append(WordPair(cols[i1].strip(), cols[i2].strip(), score))
    if not pairs:
        raise DataError(f"{path} holds no word pairs")
    return pairs


def load_analogies(data_dir=None) -> dict[str, list[tuple[str, str, str, str]]]:
    """Mikolov's analogy questions "a b c d" (a : b :: c : d), by section in file order: 14 sections, 19,544
    questions; sections named gram* are syntactic, the others semantic. Words as written (cased)."""
    path = _dataset_file(data_dir, "word-analogy", "questions-words.txt")
    sections: dict[str, list[tuple[str, str, str, str]]] = {}
    current = None
    for n, line in enumerate(_lines(path), 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith(":"):
            current = line[1:].strip()
            sections.setdefault(current, [])
            continue
        words = line.split()
        if len(words) != 4:
            raise DataError(f"{path}:{n}: an analogy line has 4 words (a b c d), got {len(words)}: {line!r}")
        if current is None:
            raise DataError(f"{path}:{n}: question before the first ': section' header")
        sections[current].append((words[0], words[1], words[2], words[3]))
    return sections


# ----------------------------------------------------------------------------------------------------------------
# LAMA


def load_lama_relations(data_dir=None) -> dict[str, LamaRelation]:
    """LAMA's T-REx relation templates {id: LamaRelation} (46 relations; trex_facts.tsv uses 28 of them)."""
    path = _dataset_file(data_dir, "lama", "relations.jsonl")
    out = {}
    for n, rec in _json_lines(path, ("relation", "template")):
        template = str(rec["template"])
        if template.count("[X]") != 1 or template.count("[Y]") != 1:
            raise DataError(f"{path}:{n}: template {template!r} must hold [X] and [Y] exactly once each")
        out[str(rec["relation"])] = LamaRelation(str(rec["relation"]), template, str(rec.get("label", "")))
    return out


def _tsv(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """Rows of a TSV with a header line, as {column: value} for the named columns (which the header must have)."""
    lines = _lines(path)
    header = lines[0].split("\t")
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{path}: header lacks column(s) {', '.join(missing)}; it has {', '.join(header)}")
    idx = [header.index(c) for c in columns]
    rows = []
    for n, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) < len(header):
            raise DataError(f"{path}:{n}: expected {len(header)} tab-separated columns, got {len(cells)}")
        rows.append((n, {c: cells[i] for c, i in zip(columns, idx)}))
    return rows


def load_trex(data_dir=None, relations: list[str] | None = None) -> list[LamaFact]:
    """LAMA T-REx facts (22,881 over 28 relations), in file order; `relations` keeps only those ids."""
    path = _dataset_file(data_dir, "lama", "trex_facts.tsv")
    facts = [LamaFact(r["predicate_id"], r["sub_label"], r["obj_label"])
             for _, r in _tsv(path, ("predicate_id", "sub_label", "obj_label"))]
    if relations is not None:
        have = {f.relation for f in facts}
        unknown = [r for r in relations if r not in have]
        if unknown:
            raise DataError(f"no T-REx facts for relation(s) {', '.join(unknown)}; present: "
                            f"{', '.join(sorted(have))}")
        keep = set(relations)
        facts = [f for f in facts if f.relation in keep]
    return facts


def load_google_re(data_dir=None) -> list[LamaFact]:
    """LAMA Google-RE facts (5,528: place_of_birth 2,937, date_of_birth 1,825, place_of_death 766)."""
    path = _dataset_file(data_dir, "lama", "google_re_facts.tsv")
    facts = []
    for n, r in _tsv(path, ("relation", "sub_label", "obj_label")):
        if r["relation"] not in GOOGLE_RE_TEMPLATES:
            raise DataError(f"{path}:{n}: unknown Google-RE relation {r['relation']!r}; expected one of "
                            f"{', '.join(GOOGLE_RE_TEMPLATES)}")
        facts.append(LamaFact(r["relation"], r["sub_label"], r["obj_label"]))
    return facts


def load_lama_squad(data_dir=None) -> list[LamaCloze]:
    """LAMA's SQuAD cloze sentences (305): the first masked sentence of each item and its object word."""
    path = _dataset_file(data_dir, "lama", "squad_test.jsonl")
    out = []
    for n, rec in _json_lines(path, ("masked_sentences", "obj_label")):
        sentences = rec["masked_sentences"]
        if not isinstance(sentences, list) or not sentences:
            raise DataError(f"{path}:{n}: masked_sentences must be a non-empty list of strings")
        out.append(LamaCloze(str(sentences[0]), str(rec["obj_label"]), str(rec.get("id", n))))
    return out
