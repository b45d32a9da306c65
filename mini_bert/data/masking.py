"""Masked-language-model inputs: BERT's masking rule (the loss over the masked positions is core's
`mlm_cross_entropy`).

`minibert demo mlm` shows a masking example (the notes' Week 3 step).
"""

from __future__ import annotations

import numpy as np

from ..config import CLS_ID, MASK_ID, PAD_ID, SEP_ID, SPECIAL_TOKENS

NEVER_MASKED = (PAD_ID, CLS_ID, SEP_ID)


def mask_tokens(batch, vocab_size: int, mask_id: int = MASK_ID, mask_prob: float = 0.15,
                rng: np.random.Generator | None = None, continuation=None, mask_fraction: float = 0.8,
                random_fraction: float = 0.1):
    """BERT's masking. batch: (B, T) int ids.

    Each token other than [PAD], [CLS] and [SEP] is selected with probability `mask_prob`; a selected token
    becomes [MASK] with probability `mask_fraction` (0.8), a random ordinary token (never a special one) with
    `random_fraction` (0.1), and stays as it is otherwise. A sequence where nothing was selected gets one selected
    position, so every sequence contributes to the loss.

    continuation: None (token-level selection), or a (vocab_size,) bool array, True for the ids of `##` pieces:
    then whole words are selected (Cui et al. 2019), each with probability mask_prob, all of its pieces together,
    so the model cannot recover a piece from the rest of its own word.

    rng: a numpy Generator; None uses a fresh `default_rng(0)`, so a call is reproducible on its own.
    Returns (input_ids, target_ids, mask_positions): the corrupted ids, the original ids (B, T), and the
    boolean (B, T) array of selected positions (where the loss is computed).
    """
    batch = np.asarray(batch)
    if batch.ndim != 2 or not np.issubdtype(batch.dtype, np.integer):
        raise ValueError(f"batch must be a 2-D integer array (batch, seq_len); got {batch.dtype} {batch.shape}")
    if not 0.0 < mask_prob < 1.0:
        raise ValueError(f"mask_prob must lie in (0, 1); got {mask_prob}")
    n_special = len(SPECIAL_TOKENS)
    if vocab_size <= n_special:
        raise ValueError(f"vocab_size must exceed the {n_special} special tokens; got {vocab_size}")
    rng = np.random.default_rng(0) if rng is None else rng
    B, T = batch.shape
    candidates = ~np.isin(batch, NEVER_MASKED)                              # (B, T)
    u = rng.random((B, T))                                                  # (B, T)
    first = None
    if continuation is not None:
        # every piece takes the draw of its word's first piece: the last position at or before it that starts a word
        starts = ~(np.asarray(continuation)[batch] & candidates)            # (B, T)
        first = np.maximum.accumulate(np.where(starts, np.arange(T), 0), axis=1)
        u = np.take_along_axis(u, first, axis=1)
    selected = (u < mask_prob) & candidates
    # Guarantee one selected position (with whole words: one whole word) in every sequence that has a candidate.
    empty = ~selected.any(axis=1) & candidates.any(axis=1)
    for b in np.flatnonzero(empty):
        t = rng.choice(np.flatnonzero(candidates[b]))
        if first is None:
            selected[b, t] = True
        else:
            selected[b] = (first[b] == first[b, t]) & candidates[b]
    corrupted = corrupt_selected(batch, selected, vocab_size, mask_id, rng, mask_fraction, random_fraction)
    return corrupted, batch.copy(), selected


def corrupt_selected(batch, selected, vocab_size: int, mask_id: int = MASK_ID,
                     rng: np.random.Generator | None = None, mask_fraction: float = 0.8,
                     random_fraction: float = 0.1) -> np.ndarray:
    """BERT's corruption of already selected positions: each becomes [MASK] with probability `mask_fraction`
    (0.8), a random ordinary token (ids [len(SPECIAL_TOKENS), vocab_size), never a special one) with
    `random_fraction` (0.1), and stays as it is otherwise. Positions not selected are never changed.
    mask_fraction=1, random_fraction=0 is all-[MASK] corruption (Wettig et al. 2023).

    batch: (B, T) int ids; selected: (B, T) bool. Returns the corrupted copy of `batch` (B, T).
    Draws, in this order, one uniform per position (B, T) and one integer per randomised position; `mask_tokens`
    and the rarity-weighted masking of `curriculum.py` both end with this step.
    """
    batch, selected = np.asarray(batch), np.asarray(selected)
    if selected.shape != batch.shape or selected.dtype != np.bool_:
        raise ValueError(f"selected must be a boolean array of the batch's shape {batch.shape}; got "
                         f"{selected.dtype} {selected.shape}")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens; got {vocab_size}")
    if not (0.0 <= mask_fraction and 0.0 <= random_fraction and mask_fraction + random_fraction <= 1.0):
        raise ValueError(f"mask_fraction ({mask_fraction}) and random_fraction ({random_fraction}) must be >= 0 "
                         f"with a sum <= 1")
    rng = np.random.default_rng(0) if rng is None else rng
    u = rng.random(batch.shape)                                             # (B, T)
    to_mask = selected & (u < mask_fraction)
    to_random = selected & (u >= mask_fraction) & (u < mask_fraction + random_fraction)
    input_ids = batch.copy()
    input_ids[to_mask] = mask_id
    input_ids[to_random] = rng.integers(len(SPECIAL_TOKENS), vocab_size, size=int(to_random.sum()))
    return input_ids
