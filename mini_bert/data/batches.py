"""The MLM batches the trainer draws: encoded, packed, cached and mixed rows, masked afresh at every draw.

MLM data path: sentences -> encode_corpus (ids per sentence) -> pack_sequences (rows [CLS] ... [SEP], padded)
-> MLMBatches.next_batch (shuffled rows, masking redrawn on every draw) -> Batch.
Shapes: N rows, B batch, T tokens per row (= max_len).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from ..config import CLS_ID, MASK_ID, PAD_ID, SEP_ID
from ..errors import DataError
from .masking import mask_tokens


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


ENCODE_CHUNK = 4096  # lines per encode_batch call: one chunk's Python lists are freed before the next is encoded


def encode_corpus(sentences: Iterable[str], tokenizer) -> list[np.ndarray]:
    """Subword ids of each sentence (no special tokens), int32; a sentence may encode to an empty array."""
    sentences = list(sentences)
    return [np.asarray(ids, dtype=np.int32) for start in range(0, len(sentences), ENCODE_CHUNK)
            for ids in tokenizer.encode_batch(sentences[start:start + ENCODE_CHUNK])]


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 for vocabularies of up to 65,536 tokens (half of int32's memory), else int32."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.int32)


def pack_corpus(lines: Sequence[str], tokenizer, max_len: int, cache: bool = True, log=None
                ) -> tuple[np.ndarray, np.ndarray]:
    """`pack_sequences(encode_corpus(lines, tokenizer), max_len)`, stored as (ids (N, T) uint16, types (N, T) uint8).

    With `cache`, the result is kept in cache_dir()/packed under a digest of the lines, the vocabulary and max_len,
    so a second run on the same corpus skips the encoding.
    """
    import hashlib

    from .sources import atomic_write_bytes, cache_dir

    digest = hashlib.sha256(f"{max_len}\n{tokenizer.lowercase}\n".encode())
    digest.update("\n".join(tokenizer.vocab).encode("utf-8") + b"\0")
    for line in lines:
        digest.update(line.encode("utf-8") + b"\n")
    path = cache_dir() / "packed" / f"{digest.hexdigest()[:24]}.npz"
    if cache and path.is_file():
        with np.load(path) as f:
            return f["ids"], f["types"]
    ids, types = pack_sequences(encode_corpus(lines, tokenizer), max_len)
    ids, types = ids.astype(token_dtype(tokenizer.vocab_size)), types.astype(np.uint8)
    if cache:
        import io
        buffer = io.BytesIO()
        np.savez(buffer, ids=ids, types=types)
        atomic_write_bytes(path, buffer.getvalue())
        if log is not None:
            log(f"packed {len(lines):,} lines into {len(ids):,} rows; cached in {path}")
    return ids, types


def mixture_rows(parts: Sequence[tuple[np.ndarray, np.ndarray]], weights: Sequence[float], seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Rows of several packed corpora in the shares `weights` (summing to 1), without dropping any corpus' rows.

    The mixture has M = max_i(N_i / w_i) rows, so the corpus that sets M appears once and every other corpus i is
    repeated to w_i * M rows (whole copies, then a random subset drawn from `seed`). The stream shuffles them.
    """
    sizes = [len(ids) for ids, _ in parts]
    total = max(n / w for n, w in zip(sizes, weights))
    rng = np.random.default_rng(seed)
    ids_out, types_out = [], []
    for (ids, types), n, w in zip(parts, sizes, weights):
        copies, rest = divmod(int(round(w * total)), n)
        take = np.concatenate([np.tile(np.arange(n), copies), np.sort(rng.choice(n, rest, replace=False))])
        ids_out.append(ids[take])
        types_out.append(types[take])
    return np.concatenate(ids_out), np.concatenate(types_out)


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


def pack_sequences(sentence_ids: Sequence[np.ndarray], max_len: int, pairs: bool = False, single: bool = False
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Pack consecutive sentences into fixed-length rows for MLM. Returns (ids (N, T) int32, token_type_ids (N, T)).

    pairs=False: rows [CLS] s1 s2 ... [SEP] [PAD]..., filled greedily in corpus order; a sentence longer than
    max_len - 2 is cut into chunks. token_type_ids are all 0. single=True: one sentence (or chunk) per row,
    [CLS] s [SEP] [PAD]..., the shape a sentence classifier reads.
    pairs=True: rows [CLS] A [SEP] B [SEP] [PAD]... with token type 0 for [CLS] A [SEP] and 1 for B [SEP]; the
    row's sentences (capacity max_len - 3) are split at the sentence boundary nearest the middle, or in the middle
    of the only sentence. A row of a single token has no B: [CLS] A [SEP].
    """
    min_len = 4 if pairs else 3
    if max_len < min_len:
        raise DataError(f"max_len={max_len} is too short: a row needs [CLS], [SEP]{', [SEP]' if pairs else ''} "
                         f"and at least one token, so max_len >= {min_len}")
    capacity = max_len - (3 if pairs else 2)
    pieces = _chunks(sentence_ids, capacity)
    groups = [[p] for p in pieces] if single else _greedy_groups(pieces, capacity)
    if not groups:
        raise DataError("nothing to pack: every sentence encoded to zero tokens (empty corpus?)")
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


def pad_batch(seqs: Sequence, mask_dtype=np.int64) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id sequences to the longest one: (input_ids (B, T) int64 with [PAD], attention_mask (B, T))."""
    T = max(len(s) for s in seqs)
    ids = np.full((len(seqs), T), PAD_ID, dtype=np.int64)
    mask = np.zeros((len(seqs), T), dtype=mask_dtype)
    for b, s in enumerate(seqs):
        ids[b, :len(s)] = s
        mask[b, :len(s)] = 1
    return ids, mask


def length_grouped_batches(lengths, batch_size: int, rng: np.random.Generator,
                           pool_batches: int = 50) -> list[np.ndarray]:
    """One epoch's batches of indices into `lengths`, each batch of sequences of similar length, so that
    `pad_batch` adds little padding (the `group_by_length` of Hugging Face's Trainer).

    A random permutation is cut into pools of `pool_batches` batches; each pool is sorted by length (stably) and
    cut into batches; the batches of all pools are then shuffled. Every index appears exactly once, batches keep
    `batch_size` (the last pool's last one may be smaller) and their number is ceil(N / batch_size), as with plain
    shuffled batches. With pool_batches=1 it is plain shuffling: each batch is the next `batch_size` of the
    permutation, merely reordered inside.
    """
    lengths = np.asarray(lengths)
    if batch_size < 1 or pool_batches < 1:
        raise DataError(f"batch_size and pool_batches must be >= 1; got {batch_size} and {pool_batches}")
    order = rng.permutation(len(lengths))
    pool = batch_size * pool_batches
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start:start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def _make_batch(rows: np.ndarray, types: np.ndarray, vocab_size: int, mask_prob: float,
                rng: np.random.Generator, **masking) -> Batch:
    rows = rows.astype(np.int32, copy=False)      # stored rows may be uint16 (pack_corpus)
    input_ids, target_ids, mask_positions = mask_tokens(rows, vocab_size, MASK_ID, mask_prob, rng, **masking)
    return Batch(input_ids=input_ids.astype(np.int32, copy=False),
                 target_ids=target_ids.astype(np.int32, copy=False),
                 mask_positions=mask_positions,
                 attention_mask=(rows != PAD_ID).astype(np.int32),
                 token_type_ids=types.astype(np.int32, copy=True))


def _check_rows(sequences, token_type_ids, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    sequences = np.asarray(sequences)
    token_type_ids = np.asarray(token_type_ids)
    if sequences.ndim != 2 or not np.issubdtype(sequences.dtype, np.integer):
        raise DataError(f"sequences must be a 2-D integer array (N, T) from pack_sequences; got "
                         f"{sequences.dtype} {sequences.shape}")
    if token_type_ids.shape != sequences.shape:
        raise DataError(f"token_type_ids shape {token_type_ids.shape} differs from sequences {sequences.shape}")
    if len(sequences) == 0:
        raise DataError("no sequences to batch (N = 0)")
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1; got {batch_size}")
    return sequences, token_type_ids     # kept as stored (uint16 ids): a drawn batch is made int32


class MLMBatches:
    """An endless stream of masked batches over packed rows.

    Each epoch visits every row once in a fresh order drawn from this object's Generator (the last batch of an
    epoch may be smaller than batch_size). The masking is redrawn every time a row is drawn (dynamic masking,
    as RoBERTa), with mask_tokens and the same Generator, so `state_dict()` captures everything needed to
    continue exactly: epoch, position, the current order and the Generator's state.
    `masking`: mask_tokens' options (continuation for whole-word masking, mask_fraction, random_fraction).
    """

    def __init__(self, sequences, token_type_ids, batch_size: int, vocab_size: int, mask_prob: float = 0.15,
                 seed: int = 0, **masking):
        self.masking = masking
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
                            self._rng, **self.masking)
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
            raise DataError(f"state is for {state.get('num_rows')} rows but this stream has {len(self.sequences)}; "
                             f"rebuild the packed data the way the checkpointed run did (same corpus, tokenizer, "
                             f"max_len)")
        order = np.asarray(state["order"], dtype=np.int64)
        if order.shape != (len(self.sequences),):
            raise DataError(f"state 'order' has shape {order.shape}, expected ({len(self.sequences)},)")
        rng = np.random.default_rng()
        rng.bit_generator.state = state["rng_state"]
        self._rng, self._order = rng, order
        self.epoch, self._position = int(state["epoch"]), int(state["position"])
        self.seed = int(state.get("seed", self.seed))
        self.batch_size = int(state.get("batch_size", self.batch_size))


# The held-out masked-LM metric masks at BERT's rate whatever rate a run trains with (data.mask_prob), so that the
# curves of recipes with different masking are measured on the same task.
HELD_OUT_MASK_PROB = 0.15


def fixed_validation_batches(sequences, token_type_ids, batch_size: int, vocab_size: int,
                             mask_prob: float = HELD_OUT_MASK_PROB, seed: int = 1234,
                             max_batches: int | None = None) -> list[Batch]:
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
