"""How does the masking ratio affect learning? (the notes' research question 3) — a sweep at a tiny scale.

Tiny models are trained with the same data, initialisation, steps and learning rate, masking 10%, 15%, 30% or 50%
of the tokens, and all are evaluated on the same held-out batches masked at BERT's 15%, so the numbers compare.

What it teaches: a higher ratio gives more prediction targets per step (more gradient signal) but corrupts more of
the context each target is predicted from; which effect wins depends on model size, data and training length —
look at both the loss and the accuracy, and rerun with more --steps before believing a trend. At this scale the
differences are small and noisy: this is a template for the experiment, not its answer.

    python examples/research_experiments/masking_ratio_sweep.py [--steps 150] [--ratios 0.1 0.15 0.3 0.5]
"""

import argparse

import numpy as np

from mini_bert import MiniBERT, ModelConfig
from mini_bert.data.batches import MLMBatches, encode_corpus, fixed_validation_batches, pack_sequences
from mini_bert.data.corpora import load_corpus
from mini_bert.data.readers import load_ptb
from mini_bert.training.optimizer import AdamW, clip_grad_norm, decay_mask
from mini_bert.training.scheduler import lr_at
from mini_bert.data.tokenizer import WordPieceTokenizer
from mini_bert.training.trainer import GradientWorker, evaluate_mlm

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=150)
parser.add_argument("--ratios", type=float, nargs="+", default=[0.1, 0.15, 0.3, 0.5])
parser.add_argument("--lines", type=int, default=4000, help="PTB training sentences")
args = parser.parse_args()

train_text, valid_text = load_ptb("train")[:args.lines], load_corpus("ptb", "valid")[:400]
tokenizer = WordPieceTokenizer.train(train_text, vocab_size=512)
rows, types = pack_sequences(encode_corpus(train_text, tokenizer), 32)
v_rows, v_types = pack_sequences(encode_corpus(valid_text, tokenizer), 32)
valid = fixed_validation_batches(v_rows, v_types, 32, tokenizer.vocab_size, mask_prob=0.15, max_batches=8)
cfg = ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=48, num_layers=2, num_heads=4, intermediate_size=96,
                  max_position_embeddings=32, activation="gelu", norm_position="pre")
n_valid = sum(int(b.mask_positions.sum()) for b in valid)
print(f"uniform guessing: loss {np.log(cfg.vocab_size):.2f}; evaluation on {n_valid} held-out tokens masked at 15%")
print(f"{'mask ratio':>10} {'targets/step':>13} {'valid loss':>11} {'valid acc':>10}")
for ratio in args.ratios:
    model = MiniBERT(cfg, seed=0)                                     # the same initialisation for every ratio
    stream = MLMBatches(rows, types, 16, cfg.vocab_size, mask_prob=ratio, seed=0)
    worker = GradientWorker(model, threads=1, seed=0)
    opt = AdamW(model.store.flat, decay_mask(model.store), lr=3e-3)
    targets = 0
    for step in range(args.steps):
        batch = stream.next_batch()
        targets += int(batch.mask_positions.sum())
        worker.loss_and_gradients(batch)
        clip_grad_norm(worker.grads.flat, 1.0)
        opt.step(worker.grads.flat, lr_at(step, 3e-3, args.steps // 10, args.steps))
    r = evaluate_mlm(model, valid)
    print(f"{ratio:10.2f} {targets / args.steps:13.1f} {r['valid_loss']:11.3f} {r['valid_masked_acc']:10.3f}")
