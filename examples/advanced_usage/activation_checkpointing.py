"""Activation checkpointing: trade one extra forward pass through the encoder for a smaller activation cache.

What it teaches: a training step normally keeps every layer's cache (attention weights (B, H, T, T), FFN
activations (B, T, F), ...) until the backward pass reads it; checkpointing keeps only each segment's input and
recomputes the segment's caches just before its backward. The dropout draws are replayed, so the gradients are
bit-for-bit those of the normal path (checked below), while the peak cache shrinks.

    python examples/advanced_usage/activation_checkpointing.py [--layers 4] [--batch 8] [--seq 64]
"""

import argparse
import copy
import time

import numpy as np

from mini_bert import MiniBERT, MiniBERTGradients
from mini_bert.config import ModelConfig
from mini_bert.training.checkpoint_utils import (cache_nbytes, checkpointed_loss_and_gradients, loss_and_gradients,
                                                 parameter_buffers, synthetic_batch)

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--layers", type=int, default=4)
parser.add_argument("--batch", type=int, default=8)
parser.add_argument("--seq", type=int, default=64)
args = parser.parse_args()

cfg = ModelConfig(vocab_size=500, hidden_size=64, num_layers=args.layers, num_heads=4, intermediate_size=256,
                  max_position_embeddings=max(64, args.seq))
model = MiniBERT(cfg, seed=0)
batch = synthetic_batch(cfg.vocab_size, args.batch, args.seq, seed=0)
rng0 = np.random.default_rng(1)                                      # the same dropout draws for every path

normal = MiniBERTGradients(model)
t0 = time.perf_counter()
loss, cache = loss_and_gradients(model, normal, batch, rng=copy.deepcopy(rng0))
t_normal = time.perf_counter() - t0
full = cache_nbytes(cache, exclude=parameter_buffers(model))
print(f"normal path: loss {loss:.4f}, cache {full / 2**20:.2f} MiB, {t_normal * 1e3:.0f} ms")
for segments in sorted({args.layers, max(1, args.layers // 2), 1}, reverse=True):
    g = MiniBERTGradients(model)
    t0 = time.perf_counter()
    loss_c, report = checkpointed_loss_and_gradients(model, g, batch, segments=segments, rng=copy.deepcopy(rng0))
    dt = time.perf_counter() - t0
    same = np.array_equal(g.flat, normal.flat) and loss_c == loss
    print(f"{segments} segment(s): peak cache {report['peak_cache_bytes'] / 2**20:.2f} MiB "
          f"({report['peak_cache_bytes'] / full:.0%}), {dt * 1e3:.0f} ms, {report['recomputed_layers']} layers "
          f"recomputed, gradients bit-identical: {same}")
