"""Sanity checks a learner runs first: overfit one batch, and a 30-second end-to-end self-test.

    minibert evaluate --overfit-one-batch [--quick]      (the notes' `evaluate.py --overfit_one_batch`)
    minibert selftest                                    (the notes' `simple_test.py`)
"""

from __future__ import annotations

import tempfile
import time

import numpy as np

from ..config import MASK_ID, ModelConfig, RunConfig
from ..core.gradients import MiniBERTGradients
from ..core.model import MiniBERT
from ..core.gradients import mlm_cross_entropy
from ..data.masking import mask_tokens
from .optimizer import AdamW, decay_mask


def _ptb_batch(vocab_size: int, batch_size: int, seq_len: int):
    """A real batch: PTB validation text, WordPiece ids, packed; and its tokenizer."""
    from ..data.batches import encode_corpus, pack_sequences
    from ..data.readers import load_ptb
    from ..data.tokenizer import WordPieceTokenizer

    text = load_ptb("valid")
    tok = WordPieceTokenizer.train(text, vocab_size=vocab_size)
    ids, _ = pack_sequences(encode_corpus(text[:400], tok), seq_len)
    return ids[:batch_size], tok


def overfit_one_batch(quick: bool = False, steps: int = 300, log=print) -> dict:
    """Train a small model on one fixed masked batch: the loss must fall towards 0 (a bug anywhere in the
    backward pass or the optimizer shows up here as a plateau). Returns {"losses": [...], "final_loss": ...}."""
    batch_size, seq_len = (4, 32) if quick else (8, 64)
    ids, tok = _ptb_batch(1000, batch_size, seq_len)
    cfg = ModelConfig(vocab_size=tok.vocab_size, hidden_size=64, num_layers=2, num_heads=2, intermediate_size=256,
                      max_position_embeddings=seq_len, dropout=0.0, attention_dropout=0.0, activation="gelu")
    model = MiniBERT(cfg, seed=0)
    grads = MiniBERTGradients(model)
    opt = AdamW(model.store.flat, decay_mask(model.store), lr=3e-3, weight_decay=0.0)
    inp, tgt, pos = mask_tokens(ids, cfg.vocab_size, MASK_ID, 0.15, np.random.default_rng(0))
    am = (ids > 0).astype(np.int32)
    losses = []
    t0 = time.time()
    for step in range(1, steps + 1):
        grads.zero_gradients()
        logits, cache = model.forward(inp, am, masked_positions=pos)
        loss, dlogits = mlm_cross_entropy(logits, tgt, pos)
        grads.backward_from_logits(dlogits, cache)
        opt.step(grads.flat)
        losses.append(loss)
        if step in (1, 10, 50, 100, 200, 300) or step == steps:
            log(f"step {step:>3}: loss {loss:.4f}")
    log(f"one batch of {batch_size}x{seq_len} ({int(pos.sum())} masked tokens), {steps} steps in "
        f"{time.time() - t0:.1f}s: loss {losses[0]:.3f} -> {losses[-1]:.4f}")
    return {"losses": losses, "final_loss": losses[-1], "masked_tokens": int(pos.sum())}


def overfit_command(quick: bool = False) -> int:
    result = overfit_one_batch(quick=quick)
    ok = result["final_loss"] < 0.05
    print("PASS: the model can memorise a batch" if ok else
          "FAIL: the loss did not fall below 0.05 — suspect the backward pass or the optimizer")
    return 0 if ok else 1


def selftest(log=print) -> int:
    """Tiny model, a few training steps on PTB, loss falls, checkpoint round-trips. About 30 seconds."""
    from .checkpointing import load_checkpoint
    from .trainer import Trainer

    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = RunConfig(
            model=ModelConfig(vocab_size=512, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                              max_position_embeddings=32),
            data={"corpus": "ptb", "max_seq_len": 32, "valid_batches": 2},
            training={"batch_size": 16, "lr": 3e-3, "max_steps": 60, "eval_every": 60, "checkpoint_every": 60,
                      "log_every": 5, "output_dir": tmp, "threads": 1},
        )
        trainer = Trainer(cfg, log=lambda *a: None, progress=False)
        before = trainer.evaluate()["valid_loss"]
        summary = trainer.train()
        after = summary["valid_loss"]
        checks = {f"validation loss falls ({before:.3f} -> {after:.3f})": after < before - 0.5}
        ck = load_checkpoint(trainer.run_dir)
        b = trainer.valid[0]
        l1, _ = trainer.model.forward(b.input_ids, b.attention_mask, masked_positions=b.mask_positions)
        l2, _ = ck.model.forward(b.input_ids, b.attention_mask, masked_positions=b.mask_positions)
        checks["checkpoint round-trips (identical logits)"] = bool(np.array_equal(l1, l2))
        checks["tokenizer round-trips"] = ck.tokenizer.encode("the market fell") == trainer.tokenizer.encode(
            "the market fell")
    for name, ok in checks.items():
        log(f"{'ok  ' if ok else 'FAIL'} {name}")
    log(f"selftest {'passed' if all(checks.values()) else 'FAILED'} in {time.time() - t0:.1f}s")
    return 0 if all(checks.values()) else 1
