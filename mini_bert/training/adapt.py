"""Task-adaptive pretraining (Gururangan et al. 2020): more masked-LM training on a task's own *training* text,
before fine-tuning on its labels.

`minibert finetune-sst2 --adapt-steps N` runs it once on SST-2's training sentences and fine-tunes from the adapted
weights; its row stands beside plain fine-tuning. Only the texts given are read: never dev or test text. Each row
holds one training sentence, `[CLS] sentence [SEP]`, the shape the classifier reads (`--adapt-rows packed` packs
several into a row instead; docs/RESULTS.md compares the two).
"""

from __future__ import annotations

from contextlib import nullcontext

import numpy as np
from threadpoolctl import threadpool_limits

from ..errors import MiniBertError
from ..data.batches import MLMBatches, encode_corpus, pack_sequences
from .optimizer import AdamW, clip_grad_norm, decay_mask
from .scheduler import lr_at
from .step import GradientWorker


def adapt_to_texts(model, tokenizer, texts: list[str], steps: int, lr: float = 5e-4, batch_size: int = 32,
                   max_len: int = 64, mask_prob: float = 0.15, warmup_ratio: float = 0.06, seed: int = 0,
                   threads: int = 2, whole_word: bool = False, packing: str = "single", log=print) -> dict:
    """Continue MLM training of `model` (in place) on `texts` for `steps` AdamW steps: linear warmup over
    warmup_ratio of them, linear decay to 0, global-norm clipping at 1. Texts are packed into rows of max_len
    (at most the model's positions): packing="single" holds one text per row, as the classifier will read it
    (a text longer than a row is cut into rows); "packed" fills each row with consecutive texts. whole_word
    selects whole words (all of a word's pieces) instead of single tokens. Returns {"steps", "rows", "first_loss",
    "last_loss"} (losses averaged over the first and last tenth of the steps), with lr, mask_prob, whole_word and
    packing."""
    if steps < 0:
        raise MiniBertError(f"adapt steps must be >= 0; got {steps}")
    if packing not in ("packed", "single"):
        raise MiniBertError(f"adapt packing must be 'packed' (texts fill each row) or 'single' (one text a row); "
                            f"got {packing!r}")
    if steps == 0:
        return {"steps": 0}
    max_len = min(max_len, model.config.max_position_embeddings)
    rows, types = pack_sequences(encode_corpus(texts, tokenizer), max_len, single=packing == "single")
    masking = {"continuation": tokenizer.continuation_mask()} if whole_word else {}
    stream = MLMBatches(rows, types, batch_size, model.config.vocab_size, mask_prob, seed=seed, **masking)
    worker = GradientWorker(model, threads, seed)
    opt = AdamW(model.store.flat, decay_mask(model.store), lr=lr)
    warmup = int(round(warmup_ratio * steps))
    losses = []
    try:
        with threadpool_limits(1) if worker.threads > 1 else nullcontext():      # as the trainer does
            for step in range(steps):
                loss, _ = worker.loss_and_gradients(stream.next_batch())
                clip_grad_norm(worker.grads.flat, 1.0)
                opt.step(worker.grads.flat, lr_at(step, lr, warmup, steps))
                losses.append(loss)
                if log and ((step + 1) % max(1, steps // 5) == 0 or step + 1 == steps):
                    log(f"  task-adaptive MLM step {step + 1}/{steps}: loss {np.mean(losses[-20:]):.3f}")
    finally:
        worker.close()
    tenth = max(1, steps // 10)
    return {"steps": steps, "lr": lr, "mask_prob": mask_prob, "whole_word": whole_word, "packing": packing,
            "rows": int(len(rows)),
            "first_loss": float(np.mean(losses[:tenth])), "last_loss": float(np.mean(losses[-tenth:]))}
