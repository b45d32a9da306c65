"""Intrinsic evaluation: how well does the model fill in masked tokens, and which tokens does it get right?

Shapes: B batch, T tokens, V vocab, N masked positions in a batch.

On fixed masked validation batches (`data_loader.fixed_validation_batches`: the same positions every time) it
reports the held-out masked accuracy and perplexity (the Level-1 metrics of `metrics.py`), then splits the masked
positions two ways:
  - by word type: function words (a fixed list of English closed-class words: determiners, pronouns, prepositions,
    conjunctions, auxiliaries, particles), content words (other whole-word tokens made of letters), word pieces
    (`##` continuations) and other tokens (punctuation, numbers);
  - by frequency band: the target's frequency rank among the tokens of a reference corpus (the training corpus
    when given, else the evaluation batches themselves): the 100 most frequent types, ranks 100-999, 1000+.
Function words and frequent tokens are predictable from syntax alone; content words and rare tokens need
meaning, so the split shows what the model has learned beyond the easy part.
"""

from __future__ import annotations

import numpy as np

from ..config import SPECIAL_TOKENS
from .metrics import compute_perplexity, masked_accuracy

# English function words (closed classes). Lowercase; matched against whole-word tokens (no "##").
FUNCTION_WORDS = frozenset("""
a an the this that these those some any each every either neither no all both half several many much more most few
fewer less least enough such what which whose whatever whichever
i me my mine myself you your yours yourself yourselves he him his himself she her hers herself it its itself we us
our ours ourselves they them their theirs themselves one ones oneself who whom whoever whomever somebody someone
something anybody anyone anything nobody none nothing everybody everyone everything
about above across after against along amid among around as at before behind below beneath beside besides between
beyond by despite down during except for from in inside into like near of off on onto out outside over past per
since than through throughout till to toward towards under underneath unlike until up upon via with within without
and but or nor so yet if because although though unless whereas while whether when whenever where wherever how why
once lest
be am is are was were been being have has had having do does did doing will would shall should can could may might
must ought
not n't 's 're 've 'd 'll 'm there here then too very also just only even
""".split())

WORD_TYPES = ("function", "content", "word piece", "other")
FREQUENCY_BANDS = ((0, 100, "top 100"), (100, 1000, "rank 100-999"), (1000, None, "rank 1000+"))


def token_word_types(vocab: list[str]) -> np.ndarray:
    """Word-type category of every vocabulary entry: (V,) int index into WORD_TYPES; specials count as "other"."""
    out = np.empty(len(vocab), dtype=np.int64)
    specials = set(SPECIAL_TOKENS)
    for i, tok in enumerate(vocab):
        if tok in specials:
            out[i] = 3
        elif tok.startswith("##"):
            out[i] = 2
        elif tok.lower() in FUNCTION_WORDS:
            out[i] = 0
        elif any(c.isalpha() for c in tok):
            out[i] = 1
        else:
            out[i] = 3
    return out


def frequency_bands(token_counts: np.ndarray) -> np.ndarray:
    """Band of every token id from its count in a reference corpus: (V,) int index into FREQUENCY_BANDS.

    Rank 0 is the most frequent type (ties broken by id); a token never seen in the reference is in the last band.
    """
    counts = np.asarray(token_counts)
    order = np.lexsort((np.arange(len(counts)), -counts))      # most frequent first
    rank = np.empty(len(counts), dtype=np.int64)
    rank[order] = np.arange(len(counts))
    bands = np.full(len(counts), len(FREQUENCY_BANDS) - 1, dtype=np.int64)
    for k, (lo, hi, _) in enumerate(FREQUENCY_BANDS):
        inside = (rank >= lo) & (rank < hi if hi is not None else True) & (counts > 0)
        bands[inside] = k
    return bands


def count_tokens(sequences, vocab_size: int) -> np.ndarray:
    """Occurrences of each ordinary token id (specials excluded) in arrays of ids: (V,) int64."""
    counts = np.zeros(vocab_size, dtype=np.int64)
    for ids in sequences:
        ids = np.asarray(ids).ravel()
        counts += np.bincount(ids, minlength=vocab_size)[:vocab_size]
    counts[:len(SPECIAL_TOKENS)] = 0
    return counts


def _row_nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Cross-entropy of each row: logsumexp(z_n) - z_n[t_n]. logits (N, V), targets (N,) -> (N,) float64.

    Subtracting the row max first keeps exp() finite, so the logits' own dtype is precise enough.
    """
    z = logits - logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1, dtype=np.float64))
    return lse - z[np.arange(len(targets)), targets]


class _Tally:
    """Pooled loss and accuracy over masked positions, accumulated batch by batch."""

    def __init__(self):
        self.count, self.loss_sum, self.correct = 0, 0.0, 0.0

    def add(self, logits, targets, nll, select=None):
        if select is not None:
            logits, targets, nll = logits[select], targets[select], nll[select]
        n = len(targets)
        if n:
            self.count += n
            self.loss_sum += float(nll.sum())
            self.correct += masked_accuracy(logits, targets) * n

    def summary(self) -> dict:
        if self.count == 0:
            return {"count": 0, "accuracy": None, "loss": None, "perplexity": None}
        loss = self.loss_sum / self.count
        return {"count": self.count, "accuracy": self.correct / self.count, "loss": loss,
                "perplexity": compute_perplexity(loss)}


def intrinsic_evaluation(model, batches, vocab: list[str] | None = None,
                         token_counts: np.ndarray | None = None) -> dict:
    """Masked-token accuracy, loss and perplexity over `batches`, overall and per category.

    batches: objects with input_ids, target_ids, mask_positions, attention_mask, token_type_ids (B, T) (the
    `Batch` of data_loader). vocab: the tokens in id order (enables the word-type split). token_counts: (V,)
    reference-corpus counts for the frequency bands (default: the tokens of the batches themselves).
    Returns a JSON-serialisable dict; every number is pooled over all masked positions.
    """
    batches = list(batches)
    if not batches:
        raise ValueError("no validation batches to evaluate")
    V = model.config.vocab_size
    if vocab is not None and len(vocab) != V:
        raise ValueError(f"vocab has {len(vocab)} tokens but the model's vocabulary has {V}")
    if token_counts is None:
        token_counts = count_tokens([b.target_ids for b in batches], V)
    elif len(token_counts) != V:
        raise ValueError(f"token_counts has {len(token_counts)} entries; expected one per token ({V})")
    word_type = token_word_types(vocab) if vocab is not None else None
    band = frequency_bands(token_counts)

    overall = _Tally()
    by_type = {name: _Tally() for name in WORD_TYPES}
    by_band = {name: _Tally() for *_, name in FREQUENCY_BANDS}
    for b in batches:
        mask = np.asarray(b.mask_positions, dtype=bool)
        if not mask.any():
            continue
        logits, _ = model.forward(b.input_ids, b.attention_mask, b.token_type_ids, training=False,
                                  masked_positions=mask)                       # (N, V)
        targets = np.asarray(b.target_ids)[mask]                              # (N,)
        nll = _row_nll(logits, targets)
        overall.add(logits, targets, nll)
        if word_type is not None:
            for k, name in enumerate(WORD_TYPES):
                by_type[name].add(logits, targets, nll, word_type[targets] == k)
        for k, (*_, name) in enumerate(FREQUENCY_BANDS):
            by_band[name].add(logits, targets, nll, band[targets] == k)
    if overall.count == 0:
        raise ValueError("the validation batches have no masked positions")
    result = {"masked_tokens": overall.count, "batches": len(batches), **overall.summary(),
              "by_frequency": {name: t.summary() for name, t in by_band.items()}}
    if word_type is not None:
        result["by_word_type"] = {name: t.summary() for name, t in by_type.items()}
    return result


def format_intrinsic_table(result: dict) -> str:
    """The result of `intrinsic_evaluation` as Markdown."""
    lines = [f"Masked-token prediction on {result['masked_tokens']} held-out masked positions "
             f"({result['batches']} batches): accuracy {result['accuracy']:.4f}, loss {result['loss']:.4f}, "
             f"perplexity {result['perplexity']:.2f}", "",
             "| split | category | masked tokens | accuracy | perplexity |", "|---|---|---|---|---|"]
    for key, title in (("by_word_type", "word type"), ("by_frequency", "frequency")):
        for name, s in result.get(key, {}).items():
            acc = f"{s['accuracy']:.4f}" if s["count"] else "-"
            ppl = f"{s['perplexity']:.2f}" if s["count"] else "-"
            lines.append(f"| {title} | {name} | {s['count']} | {acc} | {ppl} |")
    return "\n".join(lines)
