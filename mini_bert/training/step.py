"""One training step's computation: the masked-LM loss and gradients of a batch, split across threads, and the
held-out masked-LM metric (the one the trainer logs and `minibert evaluate` reports).

    GradientWorker.loss_and_gradients(batch)  ->  MiniBERTGradients.mlm_loss_and_backward (core/gradients.py),
                                                  one call per row block, each on its own thread and buffer

Shapes: B batch, T tokens, V vocab, N masked positions.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..core.gradients import MiniBERTGradients, mlm_cross_entropy
from ..core.model import MiniBERT
from ..data.batches import Batch


def evaluate_mlm(model: MiniBERT, batches, pool: ThreadPoolExecutor | None = None) -> dict:
    """Masked-token loss, accuracy and perplexity over fixed masked batches (pooled over all masked positions).

    With a thread pool, batches are evaluated in parallel (NumPy releases the GIL in BLAS and elementwise loops);
    the per-batch sums are added in batch order either way, so the result does not depend on the pool.
    """
    def one(b):
        logits, _ = model.forward(b.input_ids, b.attention_mask, b.token_type_ids, training=False,
                                  masked_positions=b.mask_positions)
        loss, _ = mlm_cross_entropy(logits, b.target_ids, b.mask_positions)
        n = int(b.mask_positions.sum())
        return loss * n, int((logits.argmax(-1) == b.target_ids[b.mask_positions]).sum()), n

    parts = list(pool.map(one, batches)) if pool is not None else [one(b) for b in batches]
    total_loss = sum(p[0] for p in parts)
    correct = sum(p[1] for p in parts)
    count = sum(p[2] for p in parts)
    mean = total_loss / max(count, 1)
    return {"valid_loss": mean, "valid_masked_acc": correct / max(count, 1),
            "valid_perplexity": float(math.exp(min(mean, 50.0))), "valid_masked_tokens": count}


def first_nonfinite(named_arrays) -> str | None:
    for name, a in named_arrays:
        if not np.isfinite(a).all():
            return name
    return None


class GradientWorker:
    """MLM loss and gradients of a batch, the batch split into `threads` fixed row blocks computed in parallel.

    NumPy releases the GIL inside BLAS calls and elementwise loops, so two threads each running single-threaded
    BLAS on half the batch keep both cores busy through the elementwise work too (softmax, LayerNorm, GELU, ...),
    which multithreaded BLAS alone does not parallelise. Each thread has its own gradient buffer and dropout
    generator, and the blocks are combined in a fixed order: the result does not depend on thread timing.
    """

    gradients_class = MiniBERTGradients      # one buffer per thread (training/electra.py puts ELECTRA's here)
    selection_key = "valid_loss"             # the held-out figure that chooses the run's best/ (lower is better)

    def __init__(self, model: MiniBERT, threads: int, seed: int, first_stream: int = 0):
        """first_stream: the index of this worker's first dropout stream among all workers of a run (an MPI rank
        r of `threads` threads starts at r * threads), so that no two threads of a run share one."""
        self.model = model
        self.threads = max(1, threads)
        self.thread_grads = [self.gradients_class(model) for _ in range(self.threads)]
        self.grads = self.thread_grads[0]          # holds the combined gradient after loss_and_gradients
        self.rngs = [np.random.default_rng([seed, 1 + first_stream + i]) for i in range(self.threads)]
        self.pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        self.last_stats: dict = {}                  # what the last step adds to the trainer's log record

    def loss_and_gradients(self, batch, n_total: int | None = None) -> tuple[float, dict | None]:
        """Mean masked-token loss of the batch; its gradient is left in `self.grads`. Returns (loss, first cache).

        n_total: when `batch` is one MPI rank's rows of a global batch, the masked tokens of the whole global batch.
        The loss and gradient are then this part's share of the global mean (its n / n_total of it), so the ranks'
        results add up to the global batch's. A part with no masked token contributes zeros (cache None).
        """
        parts = split_batch(batch, self.threads)
        counts = [int(p.mask_positions.sum()) for p in parts]
        n_total = sum(counts) if n_total is None else n_total
        if sum(counts) == 0:
            self.grads.zero_gradients()
            return 0.0, None
        shares = [n / n_total for n in counts]
        if self.pool is None or len(parts) == 1:
            results = [self.grads.mlm_loss_and_backward(parts[0], self.rngs[0], shares[0])]
        else:
            futures = [self.pool.submit(g.mlm_loss_and_backward, part, rng, share)
                       for g, part, rng, share in zip(self.thread_grads, parts, self.rngs, shares)]
            results = [f.result() for f in futures]
        loss = sum(l * w for (l, _), w in zip(results, shares))       # the mean over all masked positions
        g0 = self.grads.flat
        for g in self.thread_grads[1:len(results)]:
            g0 += g.flat
        return loss, results[0][1]

    def evaluate(self, batches) -> dict:
        """The held-out metrics of the objective this worker trains, over fixed batches, on this worker's pool."""
        return evaluate_mlm(self.model, batches, self.pool)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def split_batch(batch, parts: int):
    """Split a Batch into `parts` contiguous row blocks (fixed split: results do not depend on thread timing)."""
    if parts == 1:
        return [batch]
    bounds = np.linspace(0, batch.input_ids.shape[0], parts + 1).astype(int)
    return [Batch(*(getattr(batch, f)[a:b] for f in ("input_ids", "target_ids", "mask_positions",
                                                     "attention_mask", "token_type_ids")))
            for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
