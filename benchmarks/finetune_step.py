"""The SST-2 fine-tuning step with plain shuffled batches against length-grouped ones, alternating in one process.

    python benchmarks/finetune_step.py [--train-set glue|sentences] [--steps 40] [--rounds 3] [--checkpoint DIR]

Both arms run fine-tuning's own step, `classification_step` (forward_classifier, its backward, clipping, AdamW;
one BLAS thread, as fine-tuning runs), on the default model's config, from the same weights, for `--steps`
batches of 32 of the training set, drawn by `epoch_batches` as an epoch draws them: a permutation cut in order
(plain) or `length_grouped_batches` (grouped). Rounds alternate plain, grouped, plain, ... so that machine load touches both
alike. It prints, per arm, the median ms per step, token positions per step (padding included), real tokens per
step, and sentences per second; then grouped / plain per round.

The tokenizer is the checkpoint's (--checkpoint) or one fitted on the training sentences themselves (a few
seconds; the speed does not depend on which vocabulary splits the words, only on the lengths it gives).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

from mini_bert.config import load_config
from mini_bert.core.gradients import MiniBERTGradients
from mini_bert.core.model import MiniBERT
from mini_bert.data.readers import load_sst2
from mini_bert.evaluation.downstream import classification_step, encode_for_classification, epoch_batches
from mini_bert.training.optimizer import AdamW, decay_mask


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train-set", choices=("glue", "sentences"), default="glue")
    ap.add_argument("--steps", type=int, default=40, help="batches per arm and round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--checkpoint", default=None, help="take the tokenizer from this checkpoint or run folder")
    ap.add_argument("--data-dir", default=None)
    args = ap.parse_args()

    texts, labels = load_sst2("train", args.data_dir, fmt=args.train_set)
    if args.checkpoint:
        from mini_bert.training.checkpointing import load_model_and_tokenizer
        model, tokenizer = load_model_and_tokenizer(args.checkpoint)
    else:
        from mini_bert.data.tokenizer import WordPieceTokenizer
        sentences, _ = load_sst2("train", args.data_dir)
        cfg = load_config().model
        tokenizer = WordPieceTokenizer.train(sentences, vocab_size=cfg.vocab_size)
        cfg.vocab_size = tokenizer.vocab_size
        model = MiniBERT(cfg, seed=0)
    model.config.dropout = model.config.attention_dropout = 0.1       # as run_sst2 fine-tunes
    seqs = encode_for_classification(tokenizer, texts, model.config.max_position_embeddings)
    lengths = np.array([len(s) for s in seqs])
    start = model.store.flat.copy()
    print(f"SST-2 {args.train_set}: {len(seqs):,} sequences, mean {lengths.mean():.1f} tokens; "
          f"{args.steps} steps of 32 per arm and round, one BLAS thread")

    times: dict[str, list[float]] = {"plain": [], "grouped": []}
    positions = {"plain": [], "grouped": []}
    real = {"plain": [], "grouped": []}
    with threadpool_limits(1, user_api="blas"):
        for r in range(args.rounds):
            for arm in ("plain", "grouped"):
                model.store.flat[...] = start
                grads = MiniBERTGradients(model)
                opt = AdamW(model.store.flat, decay_mask(model.store), lr=1e-4)
                batches = epoch_batches(lengths, 32, np.random.default_rng(r), arm == "grouped")[:args.steps]
                rng = np.random.default_rng(r)
                t0 = time.perf_counter()
                for idx in batches:
                    classification_step(model, grads, opt, seqs, labels, idx, rng, 1e-4, 1.0)
                times[arm].append((time.perf_counter() - t0) / len(batches))
                positions[arm].append(np.mean([len(b) * lengths[b].max() for b in batches]))
                real[arm].append(np.mean([lengths[b].sum() for b in batches]))
    for arm in ("plain", "grouped"):
        ms = statistics.median(times[arm]) * 1000
        print(f"  {arm:<8} {ms:7.1f} ms/step  {np.mean(positions[arm]):6.0f} positions/step  "
              f"{np.mean(real[arm]):6.0f} real tokens/step  {32 / ms * 1000:6.0f} sentences/s")
    ratios = [g / p for g, p in zip(times["grouped"], times["plain"])]
    print(f"  grouped / plain per round: {', '.join(f'{x:.3f}' for x in ratios)} "
          f"(median {statistics.median(ratios):.3f})")


if __name__ == "__main__":
    main()
