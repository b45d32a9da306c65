"""Linguistic probes: what a masked LM knows of syntax (BLiMP), word meaning (similarity, analogy) and facts (LAMA).

`minibert knowledge --checkpoint DIR [--what blimp,similarity,analogy,lama|all] [--quick] [--data-dir D] [--output F]`

Shapes: R rows in one forward pass, T tokens per row, D hidden, V vocab, S sentences, W words, P word pairs,
C analogy candidates, Q analogy questions.

Syntax (`probe_syntactic_knowledge`): each BLiMP minimal pair is scored by the pseudo-log-likelihood of its two
sentences (Salazar et al. 2020),
    PLL(w_1..w_n) = sum_i log p(w_i | [CLS] w_1 .. w_{i-1} [MASK] w_{i+1} .. w_n [SEP]),
one masked copy of the sentence per token, all copies in the same forward pass. A pair counts as correct when
PLL(good) > PLL(bad) (a tie counts half); chance is 0.5.

Semantics (`probe_semantic_knowledge`): a word's vector is the mean of its subwords' input embeddings (rows of
E_token), or ("contextual") the mean of the last hidden states over its subwords when "[CLS] word [SEP]" is encoded
alone. Word similarity = Spearman's rho between human scores and cosine similarities. Analogies a : b :: c : ?
use 3CosAdd, argmax over candidates x != a, b, c of cos(x, b^ - a^ + c^) (x^ = x / |x|), over the vocabulary's
whole-word tokens, on the questions whose four words are each one such token.

Facts (`probe_factual_knowledge`): LAMA's cloze queries ("Dante was born in [MASK] .") scored by the rank of the
gold object among the vocabulary's non-special tokens at the [MASK]: precision@1, @10 and mean reciprocal rank over
the facts whose object is a single vocabulary token, next to a frequency baseline (always answer the relation's
most common object).

Text for a lowercasing (PTB-style) tokenizer: the tokenizer lowercases; the final ".", "?" or "!" is stripped as
well, since PTB text has no punctuation (`ptb_style`, default = tokenizer.lowercase).
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict

import numpy as np
from scipy.stats import spearmanr

from ..data.batches import pad_batch
from ..errors import MiniBertError
from ..config import CLS_ID, MASK_ID, SEP_ID, SPECIAL_TOKENS, UNK_ID
from ..data.sources import atomic_write_text
from . import knowledge_data as kd

WHAT = ("blimp", "similarity", "analogy", "lama")
REPRESENTATIONS = ("embedding", "contextual")
SIMILARITY_DEFAULT = ("simlex999", "men", "wordsim353")
LAMA_PARTS = ("trex", "google_re", "squad")
SPECIAL_IDS = tuple(range(len(SPECIAL_TOKENS)))     # [PAD] [UNK] [CLS] [SEP] [MASK] = 0..4
# --quick: small random subsets that keep every paradigm, section and relation (the whole run takes < 2 min).
QUICK = {"max_pairs_per_paradigm": 12, "max_pairs": 300, "max_questions_per_section": 300,
         "max_facts_per_relation": 40}
# One forward pass holds at most this many tokens (rows x T): ~256 rows of BLiMP length, a size at which the
# MLM head's (R, D) @ (D, V) product stays in cache and throughput per row is highest on 2 cores.
TOKENS_PER_PASS = 4096


# ----------------------------------------------------------------------------------------------------------------
# Small helpers


def _check_max(name: str, value: int | None) -> None:
    if value is not None and (not isinstance(value, (int, np.integer)) or value <= 0):
        raise MiniBertError(f"{name} must be a positive integer; got {value!r} (omit it, or pass None, to use all)")


def _subset(items: list, max_items: int | None, rng: np.random.Generator) -> list:
    """A seeded random subset of at most max_items, in the original order (None: all of them)."""
    if max_items is None or max_items >= len(items):
        return list(items)
    keep = np.sort(rng.choice(len(items), size=max_items, replace=False))
    return [items[i] for i in keep]


def prepare_text(text: str, ptb_style: bool) -> str:
    """The text as the model should see it: for a PTB-style model, without its final ".", "?" or "!".
    (Lowercasing is the tokenizer's normaliser's job; doing it here would also break a literal "[MASK]".)"""
    text = text.strip()
    if ptb_style:
        while text and text[-1] in ".?!":
            text = text[:-1].rstrip()
    return text


def _ptb_style(tokenizer, ptb_style: bool | None) -> bool:
    return bool(tokenizer.lowercase) if ptb_style is None else bool(ptb_style)


def _max_tokens(model) -> int:
    """Longest text (in subwords) that fits a row with [CLS] and [SEP]."""
    return model.config.max_position_embeddings - 2


def _log_softmax_at(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """log softmax(logits)[r, targets[r]] for each row r, in float64. logits: (R, V), targets: (R,)."""
    m = logits.max(-1, keepdims=True)                                       # (R, 1) for a stable exp
    lse = m[:, 0].astype(np.float64) + np.log(np.exp(logits - m).sum(-1, dtype=np.float64))
    return logits[np.arange(len(targets)), targets].astype(np.float64) - lse


def _chunks_by_tokens(lengths: list[int], rows_per_item: list[int], budget: int) -> list[list[int]]:
    """Group item indices, sorted by length, so that each group's rows x (longest length) <= budget.

    Items are never split across groups (an item alone over budget gets its own group). Sorting by length keeps
    the padding small."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups, cur, cur_rows, cur_T = [], [], 0, 0
    for i in order:
        T, r = lengths[i], rows_per_item[i]
        if cur and (cur_rows + r) * max(cur_T, T) > budget:
            groups.append(cur)
            cur, cur_rows, cur_T = [], 0, 0
        cur.append(i)
        cur_rows += r
        cur_T = max(cur_T, T)
    if cur:
        groups.append(cur)
    return groups


def _spearman(x, y) -> float | None:
    """Spearman's rho, or None when it is undefined (fewer than 2 pairs, or a constant input)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return None
    return float(spearmanr(x, y).statistic)


# ----------------------------------------------------------------------------------------------------------------
# Pseudo-log-likelihood and BLiMP


def pseudo_log_likelihoods(model, sentences: list[list[int]], tokens_per_pass: int = TOKENS_PER_PASS
                           ) -> np.ndarray:
    """PLL of each sentence (subword ids without [CLS]/[SEP]) under the masked LM: (S,) float64.

    A sentence of n tokens becomes n rows [CLS] w [SEP], row j with w_j replaced by [MASK]; the MLM head is run
    only at the masked position of each row, and log p(w_j) is summed over j. All rows of a sentence share one
    forward pass (several short sentences share it too, up to `tokens_per_pass` tokens). Identical sentences are
    scored once, so they get bit-identical scores. An empty sentence scores 0.
    """
    limit = _max_tokens(model)
    unique: dict[tuple[int, ...], int] = {}
    index = np.array([unique.setdefault(tuple(int(t) for t in s), len(unique)) for s in sentences], dtype=np.int64)
    uniq = list(unique)
    too_long = [len(s) for s in uniq if len(s) > limit]
    if too_long:
        raise MiniBertError(f"a sentence has {max(too_long)} subwords but the model takes at most {limit} "
                         f"(max_position_embeddings - 2); drop or truncate long sentences first")
    pll = np.zeros(len(uniq), dtype=np.float64)
    scored = [i for i, s in enumerate(uniq) if len(s) > 0]
    groups = _chunks_by_tokens([len(uniq[i]) + 2 for i in scored], [len(uniq[i]) for i in scored], tokens_per_pass)
    for group in groups:
        members = [scored[g] for g in group]
        rows, owner, targets, pos = [], [], [], []
        for u in members:
            s = list(uniq[u])
            for j, tok in enumerate(s):
                rows.append([CLS_ID] + s + [SEP_ID])
                owner.append(u)
                targets.append(tok)
                pos.append(j + 1)                       # +1: [CLS] is position 0
        ids, attn = pad_batch(rows)                     # (R, T)
        r = np.arange(len(rows))
        pos = np.asarray(pos)
        ids[r, pos] = MASK_ID
        masked = np.zeros(ids.shape, dtype=bool)
        masked[r, pos] = True                           # exactly one per row: logits row r <-> row r
        logits, _ = model.forward(ids, attn, masked_positions=masked)        # (R, V)
        logp = _log_softmax_at(logits, np.asarray(targets))                   # (R,)
        np.add.at(pll, np.asarray(owner), logp)
    return pll[index]


def score_minimal_pairs(model, tokenizer, pairs: list[kd.BlimpPair], ptb_style: bool | None = None,
                        tokens_per_pass: int = TOKENS_PER_PASS) -> dict:
    """PLL of both sentences of every pair. Returns {"good": (P,), "bad": (P,), "scored": (P,) bool}; a pair whose
    sentences do not fit the model (too many subwords) is not scored."""
    ptb = _ptb_style(tokenizer, ptb_style)
    texts = [prepare_text(t, ptb) for p in pairs for t in (p.good, p.bad)]
    ids = tokenizer.encode_batch(texts) if texts else []
    limit = _max_tokens(model)
    fits = np.array([len(ids[2 * i]) <= limit and len(ids[2 * i + 1]) <= limit for i in range(len(pairs))], bool)
    keep = [s for i in range(len(pairs)) if fits[i] for s in (ids[2 * i], ids[2 * i + 1])]
    good = np.full(len(pairs), np.nan)
    bad = np.full(len(pairs), np.nan)
    if keep:
        pll = pseudo_log_likelihoods(model, keep, tokens_per_pass).reshape(-1, 2)
        good[fits], bad[fits] = pll[:, 0], pll[:, 1]
    return {"good": good, "bad": bad, "scored": fits}


def pair_credit(good: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """1 where PLL(good) > PLL(bad), 0.5 on a tie, 0 otherwise."""
    return np.where(good > bad, 1.0, np.where(good == bad, 0.5, 0.0))


def _accuracy_row(credit: np.ndarray) -> dict:
    return {"pairs": int(len(credit)), "accuracy": float(credit.mean()) if len(credit) else None,
            "ties": int((credit == 0.5).sum())}


def probe_syntactic_knowledge(model, tokenizer, data_dir=None, paradigms: list[str] | None = None,
                              max_pairs_per_paradigm: int | None = None, ptb_style: bool | None = None,
                              seed: int = 0, log=None) -> dict:
    """BLiMP accuracy: the fraction of minimal pairs with PLL(good) > PLL(bad) (ties count half).

    Pairs whose two sentences are identical (7 in BLiMP) are skipped; `max_pairs_per_paradigm` takes a seeded
    random subset of each paradigm's remaining pairs. Returns {"paradigms": {UID: row}, "terms": {term: row},
    "fields": {field: row}, "overall": row, "macro_accuracy": mean over paradigms, ...}, each row
    {"pairs", "accuracy", "ties"}.
    """
    _check_max("max_pairs_per_paradigm", max_pairs_per_paradigm)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    data = kd.load_blimp(data_dir, paradigms)
    chosen, identical = [], 0
    for uid, pairs in data.items():
        distinct = [p for p in pairs if p.good != p.bad]
        identical += len(pairs) - len(distinct)
        chosen += _subset(distinct, max_pairs_per_paradigm, rng)
    if log:
        log(f"BLiMP: {len(chosen)} pairs from {len(data)} paradigms ...")
    scores = score_minimal_pairs(model, tokenizer, chosen, ptb_style)
    credit = pair_credit(scores["good"], scores["bad"])
    by = {"paradigms": defaultdict(list), "terms": defaultdict(list), "fields": defaultdict(list)}
    for p, c, ok in zip(chosen, credit, scores["scored"]):
        if ok:
            by["paradigms"][p.paradigm].append(c)
            by["terms"][p.term].append(c)
            by["fields"][p.field].append(c)
    result = {key: {k: _accuracy_row(np.asarray(v)) for k, v in sorted(groups.items())} for key, groups in by.items()}
    for uid, row in result["paradigms"].items():
        row["term"] = data[uid][0].term
    for term, row in result["terms"].items():
        row["paradigms"] = sum(1 for r in result["paradigms"].values() if r["term"] == term)
    scored = credit[scores["scored"]]
    result["overall"] = _accuracy_row(scored)
    accs = [r["accuracy"] for r in result["paradigms"].values()]
    result["macro_accuracy"] = float(np.mean(accs)) if accs else None
    result.update(skipped_identical=identical, skipped_too_long=int((~scores["scored"]).sum()),
                  ptb_style=_ptb_style(tokenizer, ptb_style), max_pairs_per_paradigm=max_pairs_per_paradigm,
                  seconds=round(time.perf_counter() - t0, 2))
    return result


# ----------------------------------------------------------------------------------------------------------------
# Word vectors, similarity and analogy


def _word_ids(tokenizer, words: list[str]) -> list[list[int]]:
    """Subword ids of each word; a word the normaliser erases entirely becomes [UNK]."""
    return [s if s else [UNK_ID] for s in (tokenizer.encode_batch(list(words)) if len(words) else [])]


def _all_unk(tokenizer, words: list[str]) -> np.ndarray:
    """(W,) bool: True where every subword of the word is [UNK] (the model knows nothing of it)."""
    return np.array([all(t == UNK_ID for t in s) for s in _word_ids(tokenizer, words)], dtype=bool)


def word_vectors(model, tokenizer, words: list[str], representation: str = "embedding",
                 tokens_per_pass: int = TOKENS_PER_PASS) -> tuple[np.ndarray, np.ndarray]:
    """One vector per word and whether the word is all [UNK]. Returns (vectors (W, D) float32, all_unk (W,) bool).
    See `subword_vectors` for the two representations."""
    ids = _word_ids(tokenizer, words)
    all_unk = np.array([all(t == UNK_ID for t in s) for s in ids], dtype=bool)
    return subword_vectors(model, ids, representation, tokens_per_pass), all_unk


def subword_vectors(model, ids: list[list[int]], representation: str = "embedding",
                    tokens_per_pass: int = TOKENS_PER_PASS) -> np.ndarray:
    """A vector for each word given as its subword ids: (W, D) float32.

    "embedding": mean of E_token over the word's subwords. "contextual": the word encoded alone as
    "[CLS] word [SEP]", the last hidden states averaged over its subword positions (not [CLS]/[SEP]).
    """
    if representation not in REPRESENTATIONS:
        raise MiniBertError(f"unknown representation {representation!r}; choose one of {', '.join(REPRESENTATIONS)}")
    if any(len(s) == 0 for s in ids):
        raise MiniBertError("every word needs at least one subword id (map an empty word to [UNK])")
    ids = [list(s)[:_max_tokens(model)] for s in ids]
    E = model.params["E_token"]                                         # (V, D)
    out = np.zeros((len(ids), E.shape[1]), dtype=np.float32)
    if representation == "embedding":
        for i, s in enumerate(ids):
            out[i] = E[s].mean(0)
        return out
    for group in _chunks_by_tokens([len(s) + 2 for s in ids], [1] * len(ids), tokens_per_pass):
        x, attn = pad_batch([[CLS_ID] + ids[i] + [SEP_ID] for i in group])   # (R, T)
        h, _ = model.encode(x, attn)                                    # (R, T, D)
        weight = np.zeros(x.shape, dtype=np.float32)                    # 1/n on the word's n subwords
        for r, i in enumerate(group):
            weight[r, 1:1 + len(ids[i])] = 1.0 / len(ids[i])
        out[group] = np.einsum("rt,rtd->rd", weight, h)
    return out


def _unit(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero, so its cosines are 0)."""
    n = np.linalg.norm(X, axis=-1, keepdims=True)
    return X / np.maximum(n, 1e-12)


def single_token_id(tokenizer, word: str) -> int | None:
    """The id of `word` when the tokenizer maps it to exactly one non-special token, else None."""
    ids = tokenizer.encode(word)
    return ids[0] if len(ids) == 1 and ids[0] >= len(SPECIAL_TOKENS) else None


def word_similarity(model, tokenizer, pairs: list[kd.WordPair],
                    representations: tuple[str, ...] = REPRESENTATIONS) -> dict:
    """Spearman's rho between human scores and cosine similarities, per representation.

    Covered pairs: neither word is all [UNK]; rho is computed on them ("spearman"). In-vocabulary pairs: both words
    are single vocabulary tokens, where the vectors are learned whole-word ("spearman_in_vocab").
    """
    words = sorted({w for p in pairs for w in (p.word1, p.word2)})
    where = {w: i for i, w in enumerate(words)}
    a = np.array([where[p.word1] for p in pairs], dtype=np.int64)
    b = np.array([where[p.word2] for p in pairs], dtype=np.int64)
    human = np.array([p.score for p in pairs], dtype=np.float64)
    single = np.array([single_token_id(tokenizer, w) is not None for w in words], dtype=bool)
    all_unk = _all_unk(tokenizer, words)
    covered = ~(all_unk[a] | all_unk[b])                                # (P,) bool
    in_vocab = single[a] & single[b]
    result = {"pairs": len(pairs), "covered": int(covered.sum()),
              "coverage": float(covered.mean()) if len(pairs) else 0.0, "in_vocab": int(in_vocab.sum()),
              "in_vocab_fraction": float(in_vocab.mean()) if len(pairs) else 0.0,
              "spearman": {}, "spearman_in_vocab": {}}
    for rep in representations:
        U = _unit(word_vectors(model, tokenizer, words, rep)[0])        # (W, D)
        cos = np.einsum("pd,pd->p", U[a], U[b])                         # (P,) cosine of each pair
        result["spearman"][rep] = _spearman(human[covered], cos[covered])
        result["spearman_in_vocab"][rep] = _spearman(human[in_vocab], cos[in_vocab])
    return result


def analogy_candidates(tokenizer) -> np.ndarray:
    """Ids of the vocabulary's whole-word tokens: alphabetic, not special, not a `##` continuation. (C,) int64."""
    vocab = tokenizer.vocab
    return np.array([i for i, t in enumerate(vocab) if i >= len(SPECIAL_TOKENS) and t.isalpha()], dtype=np.int64)


def solve_analogies(vectors: np.ndarray, questions: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """3CosAdd answers: for each question (a, b, c) of candidate indices, argmax_x cos(x, b^ - a^ + c^) over the
    rows x of `vectors` (C, D), excluding a, b and c. questions: (Q, 3) int. Returns (Q,) candidate indices."""
    U = _unit(np.asarray(vectors, dtype=np.float32))                    # (C, D)
    answers = np.empty(len(questions), dtype=np.int64)
    for s in range(0, len(questions), chunk):
        q = questions[s:s + chunk]
        target = U[q[:, 1]] - U[q[:, 0]] + U[q[:, 2]]                   # (Q', D); its norm does not move argmax
        scores = target @ U.T                                           # (Q', C)
        r = np.arange(len(q))[:, None]
        scores[r, q] = -np.inf                                          # the question's own words are not answers
        answers[s:s + chunk] = scores.argmax(1)
    return answers


def analogy_accuracy(model, tokenizer, sections: dict[str, list[tuple[str, str, str, str]]],
                     representations: tuple[str, ...] = REPRESENTATIONS,
                     max_questions_per_section: int | None = None, seed: int = 0) -> dict:
    """3CosAdd accuracy per section, semantic / syntactic (sections named gram*) and overall, per representation,
    on the covered questions (all four words single whole-word tokens). `max_questions_per_section` takes a seeded
    random subset of each section's covered questions; coverage is always counted on all of them."""
    _check_max("max_questions_per_section", max_questions_per_section)
    rng = np.random.default_rng(seed)
    cand = analogy_candidates(tokenizer)                                # (C,) vocabulary ids
    slot = {int(v): k for k, v in enumerate(cand)}                      # vocabulary id -> candidate index
    words = sorted({w for qs in sections.values() for q in qs for w in q})
    ids = tokenizer.encode_batch(words) if words else []
    index = {w: slot.get(s[0]) if len(s) == 1 else None for w, s in zip(words, ids)}
    chosen, rows = {}, {}
    for name, qs in sections.items():
        covered = [[index[w] for w in q] for q in qs if all(index[w] is not None for w in q)]
        chosen[name] = np.array(_subset(covered, max_questions_per_section, rng), dtype=np.int64).reshape(-1, 4)
        rows[name] = {"questions": len(qs), "covered": len(covered),
                      "coverage": len(covered) / len(qs) if qs else 0.0, "scored": len(chosen[name]),
                      "accuracy": {}}
    groups = {"semantic": [n for n in sections if not n.startswith("gram")],
              "syntactic": [n for n in sections if n.startswith("gram")], "overall": list(sections)}
    totals = {g: {"questions": sum(rows[n]["questions"] for n in ns), "covered": sum(rows[n]["covered"] for n in ns),
                  "scored": sum(rows[n]["scored"] for n in ns), "accuracy": {}} for g, ns in groups.items()}
    for g in totals.values():
        g["coverage"] = g["covered"] / g["questions"] if g["questions"] else 0.0
    all_q = np.concatenate([chosen[n] for n in sections]) if sections else np.zeros((0, 4), np.int64)
    for rep in representations:
        vecs = subword_vectors(model, [[int(c)] for c in cand], rep)     # (C, D)
        correct = solve_analogies(vecs, all_q[:, :3]) == all_q[:, 3] if len(all_q) else np.zeros(0, bool)
        start = 0
        per = {}
        for n in sections:
            k = len(chosen[n])
            per[n] = correct[start:start + k]
            start += k
            rows[n]["accuracy"][rep] = float(per[n].mean()) if k else None
        for g, ns in groups.items():
            hits = np.concatenate([per[n] for n in ns]) if ns else np.zeros(0, bool)
            totals[g]["accuracy"][rep] = float(hits.mean()) if len(hits) else None
    return {"sections": rows, **totals, "candidates": int(len(cand)),
            "chance": 1.0 / max(len(cand) - 3, 1), "max_questions_per_section": max_questions_per_section}


def probe_semantic_knowledge(model, tokenizer, data_dir=None, tasks: tuple[str, ...] = ("similarity", "analogy"),
                             similarity_sets: tuple[str, ...] = SIMILARITY_DEFAULT,
                             representations: tuple[str, ...] = REPRESENTATIONS, max_pairs: int | None = None,
                             max_questions_per_section: int | None = None, seed: int = 0, log=None) -> dict:
    """Word similarity (Spearman rho per set) and analogies (3CosAdd accuracy), for each representation.

    max_pairs: a seeded random subset of each similarity set; max_questions_per_section: see `analogy_accuracy`.
    Returns {"similarity": {set: word_similarity(...)}, "analogy": analogy_accuracy(...)} for the tasks asked.
    """
    _check_max("max_pairs", max_pairs)
    unknown = [t for t in tasks if t not in ("similarity", "analogy")]
    if unknown:
        raise MiniBertError(f"unknown semantic task(s) {unknown}; choose similarity and/or analogy")
    bad_rep = [r for r in representations if r not in REPRESENTATIONS]
    if bad_rep or not representations:
        raise MiniBertError(f"representations must be a non-empty subset of {REPRESENTATIONS}; got {representations}")
    rng = np.random.default_rng(seed)
    result: dict = {"representations": list(representations)}
    if "similarity" in tasks:
        t0 = time.perf_counter()
        result["similarity"] = {}
        for name in similarity_sets:
            pairs = _subset(kd.load_word_similarity(name, data_dir), max_pairs, rng)
            if log:
                log(f"word similarity: {name} ({len(pairs)} pairs) ...")
            result["similarity"][name] = word_similarity(model, tokenizer, pairs, representations)
        result["similarity_seconds"] = round(time.perf_counter() - t0, 2)
    if "analogy" in tasks:
        t0 = time.perf_counter()
        sections = kd.load_analogies(data_dir)
        if log:
            log(f"analogies: {sum(map(len, sections.values()))} questions in {len(sections)} sections ...")
        result["analogy"] = analogy_accuracy(model, tokenizer, sections, representations, max_questions_per_section,
                                             seed)
        result["analogy_seconds"] = round(time.perf_counter() - t0, 2)
    return result


# ----------------------------------------------------------------------------------------------------------------
# Cloze queries and LAMA


def cloze_ranks(model, rows: list[list[int]], targets: list[int], top_k: int = 0,
                tokens_per_pass: int = TOKENS_PER_PASS) -> tuple[np.ndarray, np.ndarray]:
    """Rank of each target at the single [MASK] of its row, among the non-special tokens.

    rows: id lists with [CLS] ... [SEP] and exactly one [MASK]. rank 0 = the model's top prediction (ties are
    resolved in the target's favour). Returns (ranks (N,) int64, top_k predicted ids (N, top_k) in order)."""
    for i, r in enumerate(rows):
        if r.count(MASK_ID) != 1:
            raise MiniBertError(f"cloze row {i} has {r.count(MASK_ID)} [MASK] tokens; each row needs exactly one")
    ranks = np.zeros(len(rows), dtype=np.int64)
    top = np.zeros((len(rows), top_k), dtype=np.int64)
    for group in _chunks_by_tokens([len(r) for r in rows], [1] * len(rows), tokens_per_pass):
        ids, attn = pad_batch([rows[i] for i in group])                 # (R, T)
        logits, _ = model.forward(ids, attn, masked_positions=ids == MASK_ID)   # (R, V), one [MASK] per row
        logits[:, list(SPECIAL_IDS)] = -np.inf                          # an object word is never a special token
        t = np.asarray([targets[i] for i in group])
        gold = logits[np.arange(len(group)), t][:, None]                # (R, 1)
        ranks[group] = (logits > gold).sum(1)
        if top_k:
            part = np.argpartition(-logits, top_k - 1, axis=1)[:, :top_k]
            order = np.argsort(-np.take_along_axis(logits, part, 1), axis=1)
            top[group] = np.take_along_axis(part, order, 1)
    return ranks, top


def _fill_template(template: str, subject: str) -> str:
    return template.replace("[X]", subject).replace("[Y]", SPECIAL_TOKENS[MASK_ID])


def _cloze_metrics(ranks: np.ndarray) -> dict:
    n = len(ranks)
    if n == 0:
        return {"p_at_1": None, "p_at_10": None, "mrr": None}
    return {"p_at_1": float((ranks < 1).mean()), "p_at_10": float((ranks < 10).mean()),
            "mrr": float((1.0 / (ranks + 1)).mean())}


def score_cloze_items(model, tokenizer, items: list[tuple[str, str, str]], ptb_style: bool, examples: int = 2
                      ) -> dict:
    """Score (group, sentence with one [MASK], object) items. Per group: how many items there are, how many qualify
    (object a single vocabulary token, exactly one [MASK], fits the model), P@1, P@10, MRR, the frequency baseline's
    P@1 and a few example predictions."""
    limit = _max_tokens(model)
    texts = [prepare_text(s, ptb_style) for _, s, _ in items]
    enc = tokenizer.encode_batch(texts) if texts else []
    obj_ids = [single_token_id(tokenizer, o) for _, _, o in items]
    ok = [o is not None and e.count(MASK_ID) == 1 and len(e) <= limit for o, e in zip(obj_ids, enc)]
    keep = [i for i in range(len(items)) if ok[i]]
    ranks, top = cloze_ranks(model, [[CLS_ID] + enc[i] + [SEP_ID] for i in keep], [obj_ids[i] for i in keep],
                             top_k=5)
    out: dict = {}
    members = defaultdict(list)
    for i, (g, _, _) in enumerate(items):
        out.setdefault(g, {"items": 0})["items"] += 1
    for k, i in enumerate(keep):
        members[items[i][0]].append(k)
    for g, row in out.items():
        ks = np.asarray(members[g], dtype=np.int64)
        row["qualifying"] = int(len(ks))
        row.update(_cloze_metrics(ranks[ks]))
        objs = Counter(obj_ids[keep[k]] for k in ks)
        # Frequency baseline: answer every query of the relation with its most common object.
        row["frequency_baseline_p_at_1"] = objs.most_common(1)[0][1] / len(ks) if len(ks) else None
        row["examples"] = [{"query": texts[keep[k]], "gold": items[keep[k]][2],
                            "top5": tokenizer.convert_ids_to_tokens(top[k])} for k in ks[:examples]]
    return out


def _mean_over(rows: dict, key: str) -> float | None:
    vals = [r[key] for r in rows.values() if r.get(key) is not None]
    return float(np.mean(vals)) if vals else None


def _summary(rows: dict) -> dict:
    """Macro averages over groups with qualifying items (as LAMA reports), and the facts counted."""
    return {"items": sum(r["items"] for r in rows.values()), "qualifying": sum(r["qualifying"] for r in rows.values()),
            **{f"mean_{k}": _mean_over(rows, k) for k in ("p_at_1", "p_at_10", "mrr", "frequency_baseline_p_at_1")}}


def probe_factual_knowledge(model, tokenizer, data_dir=None, parts: tuple[str, ...] = LAMA_PARTS,
                            relations: list[str] | None = None, max_facts_per_relation: int | None = None,
                            ptb_style: bool | None = None, seed: int = 0, log=None) -> dict:
    """LAMA cloze probes: T-REx (relation templates from relations.jsonl), Google-RE (LAMA's three templates) and
    SQuAD (its masked sentences). Metrics per relation and their mean; only facts whose object is a single
    vocabulary token qualify ("qualifying"). `max_facts_per_relation` takes a seeded random subset of each
    relation's facts (and of the SQuAD items)."""
    _check_max("max_facts_per_relation", max_facts_per_relation)
    unknown = [p for p in parts if p not in LAMA_PARTS]
    if unknown:
        raise MiniBertError(f"unknown LAMA part(s) {unknown}; choose from {', '.join(LAMA_PARTS)}")
    ptb = _ptb_style(tokenizer, ptb_style)
    rng = np.random.default_rng(seed)
    result: dict = {"ptb_style": ptb, "max_facts_per_relation": max_facts_per_relation}

    def by_relation(facts: list[kd.LamaFact]) -> dict[str, list[kd.LamaFact]]:
        grouped = defaultdict(list)
        for f in facts:
            grouped[f.relation].append(f)
        return {r: _subset(fs, max_facts_per_relation, rng) for r, fs in grouped.items()}

    if "trex" in parts:
        t0 = time.perf_counter()
        templates = kd.load_lama_relations(data_dir)
        facts = by_relation(kd.load_trex(data_dir, relations))
        missing = sorted(set(facts) - set(templates))
        if missing:
            raise kd.DataError(f"T-REx relation(s) {', '.join(missing)} have facts but no template in relations.jsonl")
        items = [(r, _fill_template(templates[r].template, f.subject), f.obj) for r, fs in facts.items() for f in fs]
        if log:
            log(f"LAMA T-REx: {len(items)} facts over {len(facts)} relations ...")
        rows = score_cloze_items(model, tokenizer, items, ptb)
        for r, row in rows.items():
            row.update(label=templates[r].label, template=templates[r].template)
        result["trex"] = {"relations": dict(sorted(rows.items())), **_summary(rows),
                          "seconds": round(time.perf_counter() - t0, 2)}
    if "google_re" in parts:
        t0 = time.perf_counter()
        facts = by_relation(kd.load_google_re(data_dir))
        items = [(r, _fill_template(kd.GOOGLE_RE_TEMPLATES[r], f.subject), f.obj) for r, fs in facts.items()
                 for f in fs]
        if log:
            log(f"LAMA Google-RE: {len(items)} facts ...")
        rows = score_cloze_items(model, tokenizer, items, ptb)
        for r, row in rows.items():
            row["template"] = kd.GOOGLE_RE_TEMPLATES[r]
        result["google_re"] = {"relations": rows, **_summary(rows), "seconds": round(time.perf_counter() - t0, 2)}
    if "squad" in parts:
        t0 = time.perf_counter()
        cloze = _subset(kd.load_lama_squad(data_dir), max_facts_per_relation, rng)
        if log:
            log(f"LAMA SQuAD: {len(cloze)} sentences ...")
        rows = score_cloze_items(model, tokenizer, [("squad", c.sentence, c.obj) for c in cloze], ptb)
        result["squad"] = {**rows["squad"], "seconds": round(time.perf_counter() - t0, 2)} if rows else \
            {"items": 0, "qualifying": 0, **_cloze_metrics(np.zeros(0))}
    return result


# ----------------------------------------------------------------------------------------------------------------
# All probes, tables, CLI


def parse_what(what: str | list[str] | tuple[str, ...]) -> list[str]:
    """"blimp,lama" / ["blimp", "lama"] / "all" -> the probe names, in WHAT order; ValueError on an unknown one."""
    names = [w.strip() for w in (what.split(",") if isinstance(what, str) else what) if w.strip()]
    if not names or "all" in names:
        return list(WHAT)
    unknown = [w for w in names if w not in WHAT]
    if unknown:
        raise MiniBertError(f"unknown probe(s) {', '.join(unknown)}; choose from {', '.join(WHAT)} or all")
    return [w for w in WHAT if w in names]


def run_knowledge_probes(model, tokenizer, what="all", quick: bool = False, data_dir=None, seed: int = 0,
                         log=None, **limits) -> dict:
    """Run the probes named in `what`. quick=True uses the QUICK subset sizes; `limits` (max_pairs_per_paradigm,
    max_pairs, max_questions_per_section, max_facts_per_relation) override them."""
    names = parse_what(what)
    bad = [k for k in limits if k not in QUICK]
    if bad:
        raise MiniBertError(f"unknown limit(s) {bad}; known: {', '.join(QUICK)}")
    lim = {**(QUICK if quick else {k: None for k in QUICK}), **limits}
    result: dict = {"what": names, "quick": quick, "seed": seed, "limits": lim}
    if "blimp" in names:
        result["blimp"] = probe_syntactic_knowledge(model, tokenizer, data_dir,
                                                    max_pairs_per_paradigm=lim["max_pairs_per_paradigm"], seed=seed,
                                                    log=log)
    tasks = tuple(t for t in ("similarity", "analogy") if t in names)
    if tasks:
        sem = probe_semantic_knowledge(model, tokenizer, data_dir, tasks=tasks, max_pairs=lim["max_pairs"],
                                       max_questions_per_section=lim["max_questions_per_section"], seed=seed, log=log)
        for t in tasks:
            result[t] = sem[t]
            result[t + "_seconds"] = sem[t + "_seconds"]
    if "lama" in names:
        result["lama"] = probe_factual_knowledge(model, tokenizer, data_dir,
                                                 max_facts_per_relation=lim["max_facts_per_relation"], seed=seed,
                                                 log=log)
    return result


def _f(x, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"] + \
        ["| " + " | ".join(r) + " |" for r in rows]


def format_knowledge_report(result: dict) -> str:
    """The results as aligned Markdown tables, one section per probe."""
    out = []
    if "blimp" in result:
        b = result["blimp"]
        out += [f"## BLiMP (pseudo-log-likelihood; chance 0.5): {b['overall']['pairs']} pairs, accuracy "
                f"{_f(b['overall']['accuracy'])} (mean over paradigms {_f(b['macro_accuracy'])}), "
                f"{b['overall']['ties']} ties", ""]
        out += _table(["linguistics_term", "paradigms", "pairs", "accuracy"],
                      [[t, str(r["paradigms"]), str(r["pairs"]), _f(r["accuracy"])] for t, r in b["terms"].items()])
        out += ["", "(per-paradigm accuracies are in the JSON output)", ""]
    for key in ("similarity",):
        if key in result:
            reps = list(next(iter(result[key].values()))["spearman"]) if result[key] else []
            out += ["## Word similarity (Spearman rho of cosine vs human scores)", ""]
            out += _table(["set", "pairs", "covered", "in vocab"] + [f"rho {r}" for r in reps] +
                          [f"rho {r} (in vocab)" for r in reps],
                          [[n, str(r["pairs"]), f"{r['covered']} ({r['coverage']:.0%})",
                            f"{r['in_vocab']} ({r['in_vocab_fraction']:.0%})"] +
                           [_f(r["spearman"][p]) for p in reps] + [_f(r["spearman_in_vocab"][p]) for p in reps]
                           for n, r in result[key].items()])
            out += [""]
    if "analogy" in result:
        a = result["analogy"]
        reps = list(a["overall"]["accuracy"])
        out += [f"## Analogies (3CosAdd over {a['candidates']} whole-word tokens; chance {a['chance']:.5f})", ""]
        rows = [[n, str(r["questions"]), f"{r['covered']} ({r['coverage']:.0%})", str(r["scored"])] +
                [_f(r["accuracy"][p]) for p in reps] for n, r in a["sections"].items()]
        rows += [[f"**{g}**", str(a[g]["questions"]), f"{a[g]['covered']} ({a[g]['coverage']:.0%})",
                  str(a[g]["scored"])] + [_f(a[g]["accuracy"][p]) for p in reps]
                 for g in ("semantic", "syntactic", "overall")]
        out += _table(["section", "questions", "covered", "scored"] + [f"acc {p}" for p in reps], rows) + [""]
    if "lama" in result:
        lama = result["lama"]
        out += ["## LAMA (rank of the gold object among non-special tokens; freq = most common object)", ""]
        rows = []
        for part in ("trex", "google_re"):
            if part in lama:
                for r, row in lama[part]["relations"].items():
                    rows.append([f"{part}:{r}", row.get("label", "") or row.get("template", ""), str(row["items"]),
                                 str(row["qualifying"]), _f(row["p_at_1"]), _f(row["p_at_10"]),
                                 _f(row["frequency_baseline_p_at_1"])])
                s = lama[part]
                rows.append([f"**{part} mean**", "", str(s["items"]), str(s["qualifying"]), _f(s["mean_p_at_1"]),
                             _f(s["mean_p_at_10"]), _f(s["mean_frequency_baseline_p_at_1"])])
        if "squad" in lama:
            s = lama["squad"]
            rows.append(["**squad**", "masked sentences", str(s["items"]), str(s["qualifying"]), _f(s["p_at_1"]),
                         _f(s["p_at_10"]), _f(s.get("frequency_baseline_p_at_1"))])
        out += _table(["relation", "label", "facts", "qualifying", "P@1", "P@10", "freq P@1"], rows) + [""]
    return "\n".join(out).rstrip()


def knowledge_checkpoint(checkpoint_dir, what="all", quick: bool = False, data_dir=None, output=None, seed: int = 0,
                         model=None, tokenizer=None, log=print) -> dict:
    """Load a checkpoint (or use the model/tokenizer given), run `run_knowledge_probes`, write JSON to `output`."""
    parse_what(what)                                    # fail on a typo before loading anything
    if model is None or tokenizer is None:
        from ..training.checkpointing import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(checkpoint_dir)
    t0 = time.perf_counter()
    result = run_knowledge_probes(model, tokenizer, what, quick, data_dir, seed, log)
    result["checkpoint"] = str(checkpoint_dir) if checkpoint_dir is not None else None
    result["seconds"] = round(time.perf_counter() - t0, 2)
    if output is not None:
        atomic_write_text(output, json.dumps(result, indent=2) + "\n")
    return result
