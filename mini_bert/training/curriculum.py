"""Training features beyond plain MLM (the notes' "Enhanced Training Features"): which rows the model sees
(curriculum learning), how they are masked (adaptive and rarity-weighted masking), and what else it predicts
(sentence-order prediction as an auxiliary task).

Shapes: N packed rows, B batch, T tokens per row, V vocabulary. Ids: [PAD]=0, [CLS]=2, [SEP]=3, [MASK]=4.

Curriculum (Platanios et al. 2019, "Competence-based Curriculum Learning"): rows are ranked by a difficulty score;
at step s a batch is drawn uniformly from the easiest fraction c(s) of rows, where the competence c(s) grows from
c0 to 1. Difficulty is the row's mean token surprisal -log p(token) under the corpus' unigram distribution (rare
words are harder to predict), or its length.

Adaptive masking: a feedback rule that moves the masking ratio between bounds (see `AdaptiveMasking`).
Rarity-weighted masking: tokens are selected with probability proportional to surprisal^strength, rescaled so
that each row's expected number of selected tokens is unchanged (mask_prob x candidates).

Sentence-order prediction (Lan et al. 2020, ALBERT): [CLS] A [SEP] B [SEP] with two consecutive segments, label 0;
the same with A and B swapped, label 1. Trained through the classification head (pooler + W_cls, 2 labels) and
added to the MLM loss: L = L_mlm + w L_sop, both gradients accumulating into one buffer.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..config import CLS_ID, MASK_ID, PAD_ID, SEP_ID
from ..core.gradients import mlm_cross_entropy
from ..data.batches import Batch
from ..data.masking import NEVER_MASKED, corrupt_selected, mask_tokens

STRUCTURAL = (PAD_ID, CLS_ID, SEP_ID, MASK_ID)   # ids with no surprisal: they say nothing about the text


# ================================================================================================================
# Difficulty
# ================================================================================================================

def unigram_surprisal(sequences, vocab_size: int) -> np.ndarray:
    """-log p(v) for every id v (V,), float64, p the add-one-smoothed unigram frequency of the text tokens in
    `sequences` (N, T) ([UNK] included: it stands for real words). [PAD], [CLS], [SEP] and [MASK] get 0."""
    sequences = np.asarray(sequences)
    if sequences.size and (sequences.min() < 0 or sequences.max() >= vocab_size):
        raise ValueError(f"token ids must lie in [0, {vocab_size}); got ids from {sequences.min()} to "
                         f"{sequences.max()}. Pass the tokenizer's vocab_size")
    counts = np.bincount(sequences.ravel(), minlength=vocab_size).astype(np.float64)
    counts += 1.0                                                  # add-one: unseen ids get a finite surprisal
    counts[list(STRUCTURAL)] = 0
    return np.where(counts > 0, -np.log(np.maximum(counts, 1.0) / counts.sum()), 0.0)


def difficulty_scores(sequences, measure: str = "rarity", surprisal: np.ndarray | None = None) -> np.ndarray:
    """One difficulty per row (N,), float64.

    measure="rarity": the mean surprisal of the row's text tokens (a row of rare words is hard to predict);
    measure="length": the number of tokens before padding.
    """
    sequences = np.asarray(sequences)
    if measure == "length":
        return (sequences != PAD_ID).sum(axis=1).astype(np.float64)
    if measure != "rarity":
        raise ValueError(f"unknown difficulty measure {measure!r}; choose 'rarity' or 'length', or pass one "
                         f"score per row")
    if surprisal is None:
        surprisal = unigram_surprisal(sequences, int(sequences.max()) + 1)
    ordinary = ~np.isin(sequences, STRUCTURAL)                                     # (N, T)
    total = np.where(ordinary, surprisal[sequences], 0.0).sum(axis=1)
    return total / np.maximum(ordinary.sum(axis=1), 1)


def linear_schedule(start: float = 0.3, end: float = 1.0, steps: int = 1000) -> Callable[[int], float]:
    """Competence growing linearly from `start` at step 0 to `end` at `steps`, then constant."""
    if not 0.0 < start <= end <= 1.0:
        raise ValueError(f"need 0 < start <= end <= 1 (fractions of the rows); got start={start}, end={end}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    return lambda step: start + (end - start) * min(step / steps, 1.0)


def sqrt_schedule(start: float = 0.3, steps: int = 1000) -> Callable[[int], float]:
    """Platanios et al.'s square-root competence, c(s) = sqrt(start^2 + (1 - start^2) s / steps), capped at 1:
    fast growth early, when every new row is still easy, and slower later."""
    if not 0.0 < start <= 1.0:
        raise ValueError(f"start must lie in (0, 1]; got {start}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    return lambda step: math.sqrt(start ** 2 + (1.0 - start ** 2) * min(step / steps, 1.0))


# ================================================================================================================
# Masking: rarity-weighted selection (then mlm.corrupt_selected, BERT's 80/10/10 corruption)
# ================================================================================================================

def difficulty_mask_probabilities(batch, surprisal: np.ndarray, mask_prob: float = 0.15,
                                  strength: float = 1.0) -> np.ndarray:
    """Per-token selection probabilities (B, T): proportional to surprisal^strength over the ordinary tokens of
    each row, 0 elsewhere, and summing to mask_prob x (ordinary tokens in the row) in every row.

    Probabilities above 1 are capped at 1 and the excess is shared among the other tokens in proportion to their
    weights (water-filling), so the row's expected count is preserved exactly. strength=0 is BERT's uniform rule.
    """
    batch = np.asarray(batch)
    if not 0.0 < mask_prob < 1.0:
        raise ValueError(f"mask_prob must lie in (0, 1); got {mask_prob}")
    if strength < 0:
        raise ValueError(f"strength must be >= 0 (0 = uniform BERT masking); got {strength}")
    candidates = ~np.isin(batch, NEVER_MASKED)                                      # (B, T)
    w = np.where(candidates, np.maximum(surprisal[batch], 1e-12) ** strength, 0.0)  # (B, T)
    budget = mask_prob * candidates.sum(axis=1, keepdims=True).astype(np.float64)   # (B, 1) expected count
    capped = np.zeros_like(candidates)
    while True:
        free = candidates & ~capped
        free_w = np.where(free, w, 0.0)
        left = budget - capped.sum(axis=1, keepdims=True)                           # what the free tokens share
        p = np.where(capped, 1.0, free_w * left / np.maximum(free_w.sum(axis=1, keepdims=True), 1e-300))
        over = free & (p > 1.0)
        if not over.any():
            return p
        capped |= over                                  # each round caps >= 1 token: at most T rounds


def mask_tokens_by_difficulty(batch, vocab_size: int, surprisal: np.ndarray, mask_prob: float = 0.15,
                              strength: float = 1.0, rng: np.random.Generator | None = None,
                              mask_id: int = MASK_ID):
    """Like `mlm.mask_tokens`, but rarer tokens are selected more often (see `difficulty_mask_probabilities`);
    the expected selection rate per row stays mask_prob. A row with no selection gets one (as mask_tokens does),
    chosen with the same weights. Returns (input_ids, target_ids, mask_positions)."""
    batch = np.asarray(batch)
    if batch.ndim != 2 or not np.issubdtype(batch.dtype, np.integer):
        raise ValueError(f"batch must be a 2-D integer array (batch, seq_len); got {batch.dtype} {batch.shape}")
    if surprisal.shape != (vocab_size,):
        raise ValueError(f"surprisal has shape {surprisal.shape}, expected ({vocab_size},): build it with "
                         f"unigram_surprisal(rows, vocab_size)")
    rng = np.random.default_rng(0) if rng is None else rng
    p = difficulty_mask_probabilities(batch, surprisal, mask_prob, strength)        # (B, T)
    selected = rng.random(batch.shape) < p
    empty = ~selected.any(axis=1) & (p > 0).any(axis=1)
    for b in np.flatnonzero(empty):
        selected[b, rng.choice(batch.shape[1], p=p[b] / p[b].sum())] = True
    return corrupt_selected(batch, selected, vocab_size, mask_id, rng), batch.copy(), selected


class AdaptiveMasking:
    """A masking ratio that follows the model's progress, within [min_ratio, max_ratio].

    Rule, applied at each `update` (after a training step, with its loss; at evaluations, with the held-out
    masked-token accuracy):
      * loss rising -> easier: the training loss is smoothed, ema = smoothing ema + (1 - smoothing) loss; if the
        ema exceeds the lowest ema seen since the ratio last changed by more than `rise_tolerance` (relative),
        the ratio drops by `step_down`.
      * learning fast -> harder: if the held-out accuracy gained more than `fast_gain` (absolute) since the
        previous evaluation, the ratio rises by `step_up` (a more heavily masked input asks more of the model).
      * when both fire at once the drop wins: stability first. The reference loss is reset after any change,
        so a change is judged on what follows it.
    Feed the ratio to the data stream (`stream.mask_prob = masking.ratio`; MLMBatches and CurriculumBatches both
    read it on every draw).
    """

    def __init__(self, start: float = 0.15, min_ratio: float = 0.10, max_ratio: float = 0.40,
                 step_up: float = 0.01, step_down: float = 0.02, fast_gain: float = 0.005,
                 rise_tolerance: float = 0.02, smoothing: float = 0.9):
        if not 0.0 < min_ratio <= start <= max_ratio < 1.0:
            raise ValueError(f"need 0 < min_ratio <= start <= max_ratio < 1; got {min_ratio}, {start}, {max_ratio}")
        if step_up < 0 or step_down < 0 or fast_gain < 0 or rise_tolerance < 0:
            raise ValueError("step_up, step_down, fast_gain and rise_tolerance must be >= 0")
        if not 0.0 <= smoothing < 1.0:
            raise ValueError(f"smoothing must lie in [0, 1); got {smoothing}")
        self.min_ratio, self.max_ratio = min_ratio, max_ratio
        self.step_up, self.step_down = step_up, step_down
        self.fast_gain, self.rise_tolerance, self.smoothing = fast_gain, rise_tolerance, smoothing
        self.ratio = start
        self.loss_ema: float | None = None
        self.best_ema: float | None = None
        self.last_acc: float | None = None

    def update(self, train_loss: float | None = None, valid_masked_acc: float | None = None) -> float:
        """Observe a training loss and/or a held-out accuracy; returns the (possibly changed) masking ratio."""
        lower = raise_ = False
        if train_loss is not None:
            if not math.isfinite(train_loss):
                raise ValueError(f"train_loss must be finite; got {train_loss}")
            s = self.smoothing
            self.loss_ema = train_loss if self.loss_ema is None else s * self.loss_ema + (1 - s) * train_loss
            if self.best_ema is None or self.loss_ema < self.best_ema:
                self.best_ema = self.loss_ema
            lower = self.loss_ema > self.best_ema * (1.0 + self.rise_tolerance)
        if valid_masked_acc is not None:
            raise_ = self.last_acc is not None and valid_masked_acc - self.last_acc > self.fast_gain
            self.last_acc = valid_masked_acc
        new = self.ratio - self.step_down if lower else self.ratio + self.step_up if raise_ else self.ratio
        new = min(max(new, self.min_ratio), self.max_ratio)
        if new != self.ratio:
            self.ratio = new
            self.best_ema = self.loss_ema
        return self.ratio

    def state_dict(self) -> dict:
        return {"ratio": self.ratio, "loss_ema": self.loss_ema, "best_ema": self.best_ema, "last_acc": self.last_acc}

    def load_state_dict(self, state: dict) -> None:
        self.ratio, self.loss_ema = float(state["ratio"]), state["loss_ema"]
        self.best_ema, self.last_acc = state["best_ema"], state["last_acc"]


def implement_adaptive_masking(model_performance: Iterable[dict], masking: AdaptiveMasking | None = None
                               ) -> list[float]:
    """The notes' name: replay performance records (dicts with "train_loss" and/or "valid_masked_acc", e.g. the
    lines of a run's metrics.jsonl) through an AdaptiveMasking; returns the ratio after each record."""
    masking = AdaptiveMasking() if masking is None else masking
    return [masking.update(r.get("train_loss"), r.get("valid_masked_acc")) for r in model_performance]


# ================================================================================================================
# Curriculum batches
# ================================================================================================================

class CurriculumBatches:
    """Masked batches drawn from the easiest rows first (competence-based curriculum).

    Rows are sorted by difficulty once (ties keep corpus order). At step s (the number of batches drawn so far)
    the pool is the easiest max(batch_size, ceil(schedule(s) N)) rows, and a batch is batch_size distinct rows
    drawn uniformly from it, then masked (uniform BERT masking at `mask_prob`, or rarity-weighted when
    `mask_strength` > 0). `mask_prob` may be changed between draws (AdaptiveMasking).

    difficulty: "rarity", "length", or an array of N scores. state_dict() holds the step and the Generator's
    state, which with the same rows, scores and schedule fix every later batch.
    """

    def __init__(self, sequences, token_type_ids, batch_size: int, vocab_size: int,
                 schedule: Callable[[int], float] | None = None, difficulty: str | np.ndarray = "rarity",
                 mask_prob: float = 0.15, mask_strength: float = 0.0, seed: int = 0):
        self.sequences = np.asarray(sequences)
        self.token_type_ids = np.asarray(token_type_ids)
        if self.sequences.ndim != 2 or not np.issubdtype(self.sequences.dtype, np.integer):
            raise ValueError(f"sequences must be a 2-D integer array (N, T) from pack_sequences; got "
                             f"{self.sequences.dtype} {self.sequences.shape}")
        if self.token_type_ids.shape != self.sequences.shape:
            raise ValueError(f"token_type_ids shape {self.token_type_ids.shape} differs from sequences "
                             f"{self.sequences.shape}")
        if len(self.sequences) == 0 or batch_size < 1:
            raise ValueError(f"need at least one row and batch_size >= 1; got {len(self.sequences)} rows, "
                             f"batch_size {batch_size}")
        self.batch_size, self.vocab_size = int(batch_size), int(vocab_size)
        self.schedule = schedule if schedule is not None else linear_schedule(0.3, 1.0, 1000)
        self.mask_prob, self.mask_strength, self.seed = float(mask_prob), float(mask_strength), int(seed)
        self.surprisal = unigram_surprisal(self.sequences, self.vocab_size)                  # (V,)
        if isinstance(difficulty, str):
            scores = difficulty_scores(self.sequences, difficulty, self.surprisal)
        else:
            scores = np.asarray(difficulty, dtype=np.float64)
            if scores.shape != (len(self.sequences),):
                raise ValueError(f"difficulty has shape {scores.shape}; give one score per row "
                                 f"({len(self.sequences)},)")
        self.scores = scores
        self.order = np.argsort(scores, kind="stable")              # (N,) easiest first
        self.step = 0
        self._rng = np.random.default_rng(self.seed)

    def competence(self, step: int | None = None) -> float:
        """The fraction of rows (easiest first) available at `step` (default: the next batch's)."""
        step = self.step if step is None else step
        c = float(self.schedule(step))
        if not 0.0 < c <= 1.0:
            raise ValueError(f"the schedule returned {c} at step {step}; it must return a fraction in (0, 1]")
        return c

    def pool_size(self, step: int | None = None) -> int:
        N = len(self.sequences)
        return min(N, max(self.batch_size, math.ceil(self.competence(step) * N)))

    def next_batch(self) -> Batch:
        pool = self.pool_size()
        picks = self._rng.choice(pool, size=min(self.batch_size, pool), replace=False)
        rows = self.order[np.sort(picks)]                           # sorted: batch order does not depend on draw order
        self.step += 1
        ids, types = self.sequences[rows], self.token_type_ids[rows]
        if self.mask_strength > 0:
            inp, tgt, sel = mask_tokens_by_difficulty(ids, self.vocab_size, self.surprisal, self.mask_prob,
                                                      self.mask_strength, self._rng)
        else:
            inp, tgt, sel = mask_tokens(ids, self.vocab_size, MASK_ID, self.mask_prob, self._rng)
        return Batch(input_ids=inp.astype(np.int32, copy=False), target_ids=tgt.astype(np.int32, copy=False),
                     mask_positions=sel, attention_mask=(ids != PAD_ID).astype(np.int32),
                     token_type_ids=types.astype(np.int32, copy=True))

    def _order_digest(self) -> str:
        return hashlib.sha1(self.order.astype(np.int64).tobytes()).hexdigest()

    def state_dict(self) -> dict:
        """JSON-serialisable: the step, the Generator's state, the masking ratio, and a digest of the difficulty
        order (to refuse a resume on different rows or scores)."""
        return {"step": self.step, "rng_state": self._rng.bit_generator.state, "mask_prob": self.mask_prob,
                "seed": self.seed, "num_rows": len(self.sequences), "order_digest": self._order_digest()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("num_rows") != len(self.sequences) or state.get("order_digest") != self._order_digest():
            raise ValueError("the curriculum state was saved for other rows or difficulty scores; rebuild the "
                             "packed data and the difficulty measure the way the checkpointed run did")
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng_state"]
        self._rng, self.step = rng, int(state["step"])
        self.mask_prob, self.seed = float(state["mask_prob"]), int(state["seed"])


def implement_curriculum_learning(difficulty_schedule: Callable[[int], float], sequences, token_type_ids,
                                  batch_size: int, vocab_size: int, difficulty: str | np.ndarray = "rarity",
                                  mask_prob: float = 0.15, seed: int = 0) -> CurriculumBatches:
    """The notes' name: a CurriculumBatches stream over packed rows with this competence schedule (step ->
    fraction of the easiest rows available), e.g. `linear_schedule(0.3, 1.0, 2000)`."""
    return CurriculumBatches(sequences, token_type_ids, batch_size, vocab_size, difficulty_schedule, difficulty,
                             mask_prob, seed=seed)


# ================================================================================================================
# Sentence-order prediction (auxiliary task)
# ================================================================================================================

@dataclass
class SOPBatch:
    input_ids: np.ndarray        # (B, T) int32: [CLS] X [SEP] Y [SEP] [PAD]...
    token_type_ids: np.ndarray   # (B, T) int32: 0 for [CLS] X [SEP], 1 for Y [SEP]
    attention_mask: np.ndarray   # (B, T) int32
    labels: np.ndarray           # (B,) int32: 0 = in order (X = A), 1 = swapped (X = B)


def segment_pairs(ids, token_type_ids) -> list[tuple[np.ndarray, np.ndarray]]:
    """(A, B) token arrays of rows packed by `pack_sequences(..., pairs=True)` ([CLS] A [SEP] B [SEP]); rows
    without a B segment are skipped. A and B are consecutive text, so they are SOP's positive pairs."""
    ids, token_type_ids = np.asarray(ids), np.asarray(token_type_ids)
    if ids.shape != token_type_ids.shape or ids.ndim != 2:
        raise ValueError(f"ids {ids.shape} and token_type_ids {token_type_ids.shape} must be equal (N, T) arrays")
    pairs = []
    for row, types in zip(ids, token_type_ids):
        body = (row != PAD_ID) & (row != CLS_ID) & (row != SEP_ID)
        a, b = row[body & (types == 0)], row[body & (types == 1)]
        if len(a) and len(b):
            pairs.append((a, b))
    return pairs


def make_sop_batch(pairs_ids: Sequence[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator,
                   max_len: int | None = None, swap_prob: float = 0.5) -> SOPBatch:
    """Sentence-order prediction rows from consecutive segment pairs (A, B) (ids without special tokens).

    Each pair is swapped with probability `swap_prob` (label 1: [CLS] B [SEP] A [SEP]) or kept (label 0:
    [CLS] A [SEP] B [SEP]). Rows are padded to the longest; with max_len, a pair that does not fit is cut, the
    longer segment first, A from its start and B from its end, so the A|B junction that reveals the order stays.
    """
    if len(pairs_ids) == 0:
        raise ValueError("no pairs to build an SOP batch from; see segment_pairs")
    if max_len is not None and max_len < 5:
        raise ValueError(f"max_len={max_len} is too short for [CLS] A [SEP] B [SEP] with one token each")
    rows, types, labels = [], [], []
    for i, (a, b) in enumerate(pairs_ids):
        a, b = np.asarray(a, dtype=np.int32), np.asarray(b, dtype=np.int32)
        if len(a) == 0 or len(b) == 0:
            raise ValueError(f"pair {i} has an empty segment (lengths {len(a)}, {len(b)}); SOP needs two")
        if max_len is not None:
            a, b = _truncate_pair(a, b, max_len - 3)
        swap = rng.random() < swap_prob
        x, y = (b, a) if swap else (a, b)
        rows.append(np.concatenate([[CLS_ID], x, [SEP_ID], y, [SEP_ID]]))
        types.append(np.concatenate([np.zeros(len(x) + 2), np.ones(len(y) + 1)]))
        labels.append(int(swap))
    T = max(len(r) for r in rows) if max_len is None else max_len
    input_ids = np.full((len(rows), T), PAD_ID, dtype=np.int32)
    token_type_ids = np.zeros((len(rows), T), dtype=np.int32)
    for r, (row, tt) in enumerate(zip(rows, types)):
        input_ids[r, :len(row)], token_type_ids[r, :len(tt)] = row, tt
    return SOPBatch(input_ids, token_type_ids, (input_ids != PAD_ID).astype(np.int32),
                    np.asarray(labels, dtype=np.int32))


def _truncate_pair(a: np.ndarray, b: np.ndarray, budget: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut (A, B) to at most `budget` tokens together, one token at a time from the longer segment (A on ties):
    A loses its start and B its end, so the A|B junction stays. With budget >= 2 neither drops below one token."""
    start, end = 0, len(b)
    while (len(a) - start) + end > budget:
        if len(a) - start >= end:
            start += 1
        else:
            end -= 1
    return a[start:], b[:end]


def multitask_loss_and_gradients(model, grads, mlm_batch: Batch, sop_batch: SOPBatch, sop_weight: float = 1.0,
                                 rng: np.random.Generator | None = None, training: bool = True
                                 ) -> tuple[float, dict]:
    """L = L_mlm + sop_weight L_sop, and dL/dparams in `grads` (zeroed first, then both tasks accumulate into it).

    The MLM loss uses the masked-position logits of `model.forward`; the SOP loss is the mean cross-entropy of
    the 2-way class logits of `model.forward_classifier` (pooler + W_cls; the model needs num_labels = 2).
    Because backward is linear in dLoss/dlogits, scaling the SOP logit gradient by sop_weight gives the
    gradient of the weighted sum. Returns (L, {"mlm_loss", "sop_loss", "sop_acc"}).
    """
    if model.config.num_labels != 2:
        raise ValueError(f"sentence-order prediction needs a 2-way classifier; the model has num_labels="
                         f"{model.config.num_labels} (set ModelConfig(num_labels=2))")
    if sop_weight < 0:
        raise ValueError(f"sop_weight must be >= 0; got {sop_weight}")
    grads.zero_gradients()
    b = mlm_batch
    logits, cache = model.forward(b.input_ids, b.attention_mask, b.token_type_ids, training=training,
                                  masked_positions=b.mask_positions, rng=rng)
    mlm_loss, dlogits = mlm_cross_entropy(logits, b.target_ids, b.mask_positions)
    grads.backward_from_logits(dlogits, cache)
    s = sop_batch
    class_logits, cache = model.forward_classifier(s.input_ids, s.attention_mask, s.token_type_ids,
                                                   training=training, rng=rng)
    sop_loss, dclass = grads.compute_classification_loss_and_gradients(class_logits, s.labels)
    grads.backward_from_class_logits(dclass * dclass.dtype.type(sop_weight), cache)
    sop_acc = float((class_logits.argmax(-1) == s.labels).mean())
    total = float(mlm_loss) + sop_weight * float(sop_loss)
    return total, {"mlm_loss": float(mlm_loss), "sop_loss": float(sop_loss), "sop_acc": sop_acc}


class AuxiliaryTasks:
    """MLM + sentence-order prediction for one model: `tasks(grads, mlm_batch, sop_batch, rng)` runs
    `multitask_loss_and_gradients` with this weight."""

    def __init__(self, model, sop_weight: float = 1.0):
        if model.config.num_labels != 2:
            raise ValueError(f"sentence-order prediction needs a 2-way classifier; the model has num_labels="
                             f"{model.config.num_labels} (set ModelConfig(num_labels=2))")
        self.model, self.sop_weight = model, sop_weight

    def __call__(self, grads, mlm_batch: Batch, sop_batch: SOPBatch, rng=None, training: bool = True):
        return multitask_loss_and_gradients(self.model, grads, mlm_batch, sop_batch, self.sop_weight, rng, training)


def add_auxiliary_tasks(model, sop_weight: float = 1.0) -> AuxiliaryTasks:
    """The notes' name: attach sentence-order prediction (ALBERT) to MLM pretraining of `model`."""
    return AuxiliaryTasks(model, sop_weight)
