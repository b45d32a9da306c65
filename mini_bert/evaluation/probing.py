"""Part-of-speech probing: how linearly decodable is a word's tag from each layer of a frozen Mini-BERT?

`minibert probe-pos --checkpoint DIR [--max-sentences N] [--tagset upos|xpos] [--output F] [--data-dir D]`

Shapes: S sentences, W words (over all sentences), T subword positions, D hidden, L encoder layers, K tags.

For every word of UD English-EWT we read its vector at each of the L + 1 layers of `cache["hidden_states"]`
(layer 0 = embedding output, layer l = output of encoder layer l) and pool the word's subwords two ways:
"first" (the vector of its first subword) and "mean" (the average over its subwords). A multinomial logistic
regression (`linear_models.py`) is trained on EWT train and scored on EWT dev, one probe per (layer, pooling).

A probe's accuracy means little alone, so three references sit in the same table:
  - majority tag: each dev word gets its most frequent training tag (unseen words: the most frequent tag overall);
    what memorising word identity gives without any context;
  - random-init model: the same probe on a randomly initialised model with the same config: what the architecture
    and the word identity give before any pretraining;
  - control task (Hewitt & Liang, 2019): every word type gets a fixed random tag drawn from the training tag
    distribution, and the same probe is trained on those tags. A probe that scores well there memorises word
    types rather than reading linguistic structure. selectivity = real accuracy - control accuracy.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from ..errors import MiniBertError
from ..config import CLS_ID, PAD_ID, SEP_ID
from ..core.model import MiniBERT
from ..training.checkpointing import load_model_and_tokenizer
from ..data.readers import load_ewt
from .linear_models import DEFAULT_L2_GRID, fit_with_held_out_l2

POOLINGS = ("first", "mean")
# 24 probes (L + 1 layers x 2 poolings x model / random model / control task) cost about linearly in the
# number of training words: 2,000 sentences (~33k words) keep a full run to minutes on two cores.
TAGSETS = ("upos", "xpos")
DEFAULT_MAX_SENTENCES = 2000


# ----------------------------------------------------------------------------------------------------------------
# Word vectors from every layer


def _windows(ids: list[int], word_index: list[int], max_len: int) -> list[tuple[list[int], list[int]]]:
    """Split one sentence's subwords into windows of at most max_len subwords, cutting only between words.

    Returns [(ids, word_index)] with word_index still counting words from the sentence start. A single word
    longer than max_len keeps its first max_len subwords (its first subword, the one "first" pooling reads, stays).
    """
    out, cur_ids, cur_w = [], [], []
    k, n = 0, len(ids)
    while k < n:
        w = word_index[k]
        end = k
        while end < n and word_index[end] == w:
            end += 1
        piece, piece_w = ids[k:end][:max_len], word_index[k:end][:max_len]
        if len(cur_ids) + len(piece) > max_len:
            out.append((cur_ids, cur_w))
            cur_ids, cur_w = [], []
        cur_ids, cur_w = cur_ids + piece, cur_w + piece_w
        k = end
    if cur_ids:
        out.append((cur_ids, cur_w))
    return out


def extract_word_features(model, tokenizer, sentences: list[list[str]], poolings=POOLINGS,
                          batch_size: int = 64) -> dict[str, np.ndarray]:
    """Frozen word vectors at every layer. sentences: S lists of words.

    Each sentence becomes `[CLS] subwords [SEP]` (split into windows when it has more than
    max_position_embeddings - 2 subwords); windows are sorted by length and run in batches, so little compute
    goes to padding. Returns {pooling: (L + 1, W, D) float32}, words in sentence order.
    One BLAS thread: the matrices are small, and spin-waiting BLAS threads on a shared two-core machine cost
    more than they gain (downstream.ONE_BLAS_THREAD).
    """
    with threadpool_limits(limits=1, user_api="blas"):
        return _extract(model, tokenizer, sentences, poolings, batch_size)


def _extract(model, tokenizer, sentences, poolings, batch_size):
    for p in poolings:
        if p not in POOLINGS:
            raise MiniBertError(f"unknown pooling {p!r}; choose from {', '.join(POOLINGS)}")
    cfg = model.config
    max_len = cfg.max_position_embeddings - 2
    windows = []                                     # (ids, global word ids)
    offset = 0
    for words in sentences:
        if not words:
            continue
        ids, widx = tokenizer.encode_words(list(words))
        for w_ids, w_idx in _windows(list(ids), list(widx), max_len):
            windows.append((w_ids, [offset + i for i in w_idx]))
        offset += len(words)
    n_words = offset
    out = {p: np.zeros((cfg.num_layers + 1, n_words, cfg.hidden_size), dtype=np.float32) for p in poolings}
    order = sorted(range(len(windows)), key=lambda i: len(windows[i][0]))
    for start in range(0, len(order), batch_size):
        batch = [windows[i] for i in order[start:start + batch_size]]
        T = max(len(ids) for ids, _ in batch) + 2
        input_ids = np.full((len(batch), T), PAD_ID, dtype=np.int64)
        attention_mask = np.zeros((len(batch), T), dtype=np.int64)
        positions, word_ids = [], []
        for b, (ids, gw) in enumerate(batch):
            n = len(ids)
            input_ids[b, 0], input_ids[b, 1:n + 1], input_ids[b, n + 1] = CLS_ID, ids, SEP_ID
            attention_mask[b, :n + 2] = 1
            positions.append(b * T + 1 + np.arange(n))           # flat (B*T) positions of the subwords
            word_ids.append(np.asarray(gw))
        _, cache = model.encode(input_ids, attention_mask, training=False)
        H = np.stack(cache["hidden_states"])                     # (L+1, B, T, D)
        H = H.reshape(H.shape[0], -1, H.shape[-1])               # (L+1, B*T, D)
        pos = np.concatenate(positions)                          # (n_sub,)
        wid = np.concatenate(word_ids)                           # (n_sub,), runs of equal ids, one run per word
        starts = np.flatnonzero(np.r_[True, wid[1:] != wid[:-1]])  # first subword of each word
        words_here = wid[starts]                                  # (n_w,)
        sub = H[:, pos]                                           # (L+1, n_sub, D)
        if "first" in out:
            out["first"][:, words_here] = sub[:, starts]
        if "mean" in out:
            counts = np.diff(np.r_[starts, len(wid)]).astype(np.float32)   # subwords per word
            out["mean"][:, words_here] = np.add.reduceat(sub, starts, axis=1) / counts[None, :, None]
    return out


# ----------------------------------------------------------------------------------------------------------------
# Baselines that need no model


def majority_tag_baseline(train_words: list[str], train_tags: list, test_words: list[str]) -> list:
    """Each test word's most frequent training tag; words never seen in training get the most frequent tag overall.

    Ties between a word's tags go to the tag that is more frequent overall (then to the smaller tag), so the
    answer does not depend on the order of the data.
    """
    if len(train_words) != len(train_tags):
        raise MiniBertError(f"{len(train_words)} training words but {len(train_tags)} tags; they must match")
    if not train_words:
        raise MiniBertError("the majority baseline needs at least one training word")
    overall = Counter(train_tags)
    rank = {t: (-c, str(t)) for t, c in overall.items()}
    by_word: dict[str, Counter] = {}
    for w, t in zip(train_words, train_tags):
        by_word.setdefault(w, Counter())[t] += 1
    best = {w: min(c, key=lambda t: (-c[t], rank[t])) for w, c in by_word.items()}
    fallback = min(overall, key=lambda t: rank[t])
    return [best.get(w, fallback) for w in test_words]


def control_task_tags(train_words: list[str], test_words: list[str], train_tags: list,
                      rng: np.random.Generator, lowercase: bool = False) -> tuple[list, list]:
    """Hewitt & Liang's control task: one random tag per word type, drawn from the training tag distribution.

    The same type gets the same tag in train and test (test-only types get their own draw), so the task is
    learnable exactly to the extent a probe can memorise word identity. lowercase: key types by the lowercased
    form (for an uncased model "The" and "the" are the same input, so they must share a control tag).
    Types are visited in sorted order: the draw depends only on rng, not on Python's string hashing.
    """
    if len(train_words) != len(train_tags):
        raise MiniBertError(f"{len(train_words)} training words but {len(train_tags)} tags; they must match")
    if not train_words:
        raise MiniBertError("the control task needs at least one training word")
    key = (lambda w: w.lower()) if lowercase else (lambda w: w)
    counts = Counter(train_tags)
    tags = sorted(counts, key=str)
    probs = np.array([counts[t] for t in tags], dtype=np.float64)
    probs /= probs.sum()
    types = sorted({key(w) for w in train_words} | {key(w) for w in test_words})
    draws = rng.choice(len(tags), size=len(types), p=probs)
    assigned = {t: tags[d] for t, d in zip(types, draws)}
    return [assigned[key(w)] for w in train_words], [assigned[key(w)] for w in test_words]


# ----------------------------------------------------------------------------------------------------------------
# The probe


def _tag_ids(train_tags: list, dev_tags: list) -> tuple[np.ndarray, np.ndarray, list]:
    """Tags -> ints; the tag list is sorted training tags, then any tag seen only in dev (never predicted)."""
    names = sorted(set(train_tags), key=str)
    names += sorted(set(dev_tags) - set(names), key=str)
    index = {t: i for i, t in enumerate(names)}
    return (np.array([index[t] for t in train_tags], dtype=np.int64),
            np.array([index[t] for t in dev_tags], dtype=np.int64), names)


def probe_accuracy(X_train: np.ndarray, y_train: np.ndarray, X_dev: np.ndarray, y_dev: np.ndarray,
                   seed: int = 0, l2_grid=DEFAULT_L2_GRID, max_fit_examples: int = 10000) -> tuple[float, float]:
    """Train one probe (L2 chosen on 10% of train held out) and return (dev accuracy, chosen l2)."""
    clf = fit_with_held_out_l2(X_train, y_train, l2_grid, rng=np.random.default_rng(seed),
                               max_fit_examples=max_fit_examples)
    return clf.accuracy(X_dev, y_dev), clf.l2


def _flatten(sentences, tagset: str) -> tuple[list[str], list[str]]:
    words, tags = [], []
    for s in sentences:
        t = getattr(s, tagset)
        if len(t) != len(s.words):
            raise MiniBertError(f"a sentence has {len(s.words)} words but {len(t)} {tagset} tags")
        words.extend(s.words)
        tags.extend(t)
    return words, tags


def run_pos_probe(model, tokenizer, train, dev, tagset: str = "upos", poolings=POOLINGS,
                  random_model: bool = True, control_task: bool = True, seed: int = 0, batch_size: int = 64,
                  l2_grid=DEFAULT_L2_GRID, max_fit_examples: int = 10000, log=print) -> dict:
    """The whole probing experiment on tagged sentences (objects with .words and .upos / .xpos lists).

    Returns a JSON-serialisable dict: sizes, the majority baseline, and per layer the dev accuracy of the probe on
    the model ("trained"), on a random-init model of the same config ("random_init"), on the control task
    ("control_task"), and the selectivity, each per pooling.
    """
    if tagset not in TAGSETS:
        raise MiniBertError(f"unknown tagset {tagset!r}; choose upos or xpos")
    train = [s for s in train if len(s.words)]
    dev = [s for s in dev if len(s.words)]
    if not train or not dev:
        raise MiniBertError(f"probing needs tagged sentences in both splits; got {len(train)} train, {len(dev)} dev")
    log = log or (lambda *_: None)
    train_words, train_tags = _flatten(train, tagset)
    dev_words, dev_tags = _flatten(dev, tagset)
    y_train, y_dev, tag_names = _tag_ids(train_tags, dev_tags)
    t0 = time.perf_counter()

    majority = majority_tag_baseline(train_words, train_tags, dev_words)
    majority_acc = float(np.mean([p == t for p, t in zip(majority, dev_tags)]))
    seen = set(train_words)
    result: dict = {
        "task": "pos", "tagset": tagset, "num_tags": len(set(train_tags)),
        "train": {"sentences": len(train), "words": len(train_words)},
        "dev": {"sentences": len(dev), "words": len(dev_words),
                "unseen_word_fraction": float(np.mean([w not in seen for w in dev_words]))},
        "poolings": list(poolings), "majority_baseline": majority_acc, "layers": [],
    }

    def probe_all(features_train, features_dev, y_tr, y_dv, what):
        accs = {p: [] for p in poolings}
        for p in poolings:
            for layer in range(features_train[p].shape[0]):
                acc, l2 = probe_accuracy(features_train[p][layer], y_tr, features_dev[p][layer], y_dv, seed,
                                         l2_grid, max_fit_examples)
                accs[p].append({"accuracy": acc, "l2": l2})
                log(f"  {what:<12} layer {layer} {p:<5}: {acc:.4f} (l2={l2:g})  [{time.perf_counter() - t0:.0f}s]")
        return accs

    tr_sents, dv_sents = [s.words for s in train], [s.words for s in dev]
    log(f"extracting features ({len(train_words)} train / {len(dev_words)} dev words)...")
    f_tr = extract_word_features(model, tokenizer, tr_sents, poolings, batch_size)
    f_dv = extract_word_features(model, tokenizer, dv_sents, poolings, batch_size)
    trained = probe_all(f_tr, f_dv, y_train, y_dev, "trained")
    control = None
    if control_task:
        rng = np.random.default_rng(seed)
        c_train, c_dev = control_task_tags(train_words, dev_words, train_tags, rng,
                                           lowercase=bool(getattr(tokenizer, "lowercase", False)))
        cy_train, cy_dev, _ = _tag_ids(c_train, c_dev)
        control = probe_all(f_tr, f_dv, cy_train, cy_dev, "control")
    del f_tr, f_dv
    random_init = None
    if random_model:
        baseline = MiniBERT(model.config, seed=seed + 12345)   # a different init from the model's own seed
        r_tr = extract_word_features(baseline, tokenizer, tr_sents, poolings, batch_size)
        r_dv = extract_word_features(baseline, tokenizer, dv_sents, poolings, batch_size)
        random_init = probe_all(r_tr, r_dv, y_train, y_dev, "random-init")
        del r_tr, r_dv

    num_layers = model.config.num_layers
    for layer in range(num_layers + 1):
        row: dict = {"layer": layer, "name": "embeddings" if layer == 0 else f"encoder layer {layer}",
                     "trained": {p: trained[p][layer]["accuracy"] for p in poolings},
                     "l2": {p: trained[p][layer]["l2"] for p in poolings}}
        if random_init is not None:
            row["random_init"] = {p: random_init[p][layer]["accuracy"] for p in poolings}
        if control is not None:
            row["control_task"] = {p: control[p][layer]["accuracy"] for p in poolings}
            row["selectivity"] = {p: row["trained"][p] - row["control_task"][p] for p in poolings}
        result["layers"].append(row)
    best = max(result["layers"], key=lambda r: max(r["trained"].values()))
    best_pool = max(poolings, key=lambda p: best["trained"][p])
    result["best"] = {"layer": best["layer"], "pooling": best_pool, "accuracy": best["trained"][best_pool]}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["tags"] = [str(t) for t in tag_names]
    return result


def format_probe_table(result: dict) -> str:
    """The per-layer table of `run_pos_probe`'s result, as aligned text (also valid Markdown)."""
    pools = result["poolings"]
    cols = [("trained", "probe"), ("random_init", "random-init"), ("control_task", "control"),
            ("selectivity", "selectivity")]
    cols = [(k, name) for k, name in cols if k in result["layers"][0]]
    header = ["layer"] + [f"{name} ({p})" for _, name in cols for p in pools]
    lines = [f"POS probe ({result['tagset'].upper()}, {result['num_tags']} tags): EWT train "
             f"{result['train']['sentences']} sentences / {result['train']['words']} words, dev "
             f"{result['dev']['sentences']} / {result['dev']['words']} "
             f"({result['dev']['unseen_word_fraction']:.1%} unseen)",
             f"majority-tag baseline (dev): {result['majority_baseline']:.4f}", "",
             "| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in result["layers"]:
        cells = [f"{row['layer']} {'(emb)' if row['layer'] == 0 else ''}".strip()]
        cells += [f"{row[k][p]:.4f}" for k, _ in cols for p in pools]
        lines.append("| " + " | ".join(cells) + " |")
    b = result["best"]
    lines.append(f"\nbest: layer {b['layer']} ({b['pooling']} pooling) {b['accuracy']:.4f}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Checkpoint + data -> result


def subset(items: list, max_items: int | None, rng: np.random.Generator) -> list:
    """A random subset of at most max_items, in the original order (None: all)."""
    if max_items is None or max_items >= len(items):
        return list(items)
    keep = np.sort(rng.choice(len(items), size=max_items, replace=False))
    return [items[i] for i in keep]


def check_max(name: str, value: int | None) -> None:
    if value is not None and value <= 0:
        raise MiniBertError(f"{name} must be a positive number of sentences; got {value} (omit it to use them all)")


def probe_pos_checkpoint(checkpoint_dir, data_dir=None, max_sentences: int | None = None, tagset: str = "upos",
                         output=None, seed: int = 0, model=None, tokenizer=None, log=print, **kwargs) -> dict:
    """Load a checkpoint (or use model/tokenizer given), read EWT train/dev and run `run_pos_probe`.

    max_sentences caps each split (a seeded random subset). Writes the result as JSON to `output` if given.
    """
    check_max("--max-sentences", max_sentences)
    if tagset not in TAGSETS:
        raise MiniBertError(f"unknown tagset {tagset!r}; choose upos or xpos")
    if model is None or tokenizer is None:
        model, tokenizer = load_model_and_tokenizer(checkpoint_dir)
    rng = np.random.default_rng(seed)
    train = subset(load_ewt("train", data_dir), max_sentences, rng)
    dev = subset(load_ewt("dev", data_dir), max_sentences, rng)
    result = run_pos_probe(model, tokenizer, train, dev, tagset=tagset, seed=seed, log=log, **kwargs)
    result["checkpoint"] = str(checkpoint_dir) if checkpoint_dir is not None else None
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result
