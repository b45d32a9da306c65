"""One forward pass through a small Mini-BERT, and what it leaves in its cache.

What it teaches: the shapes at each step of the encoder (B batch, T tokens, D hidden, H heads, V vocab), that the
padding mask keeps real tokens from attending to [PAD] (their attention weight there is ~0), that every attention
row is a probability distribution, and that the cache the backward pass reads is the same store the analysis
tools read (`describe_cache` lists it by dotted name).

    python examples/basic_usage/forward_pass.py [--hidden 32] [--layers 2] [--heads 2]
"""

import argparse

import numpy as np

from mini_bert import MiniBERT, ModelConfig
from mini_bert.config import CLS_ID, PAD_ID, SEP_ID
from mini_bert.core.model import describe_cache

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--hidden", type=int, default=32)
parser.add_argument("--layers", type=int, default=2)
parser.add_argument("--heads", type=int, default=2)
args = parser.parse_args()

cfg = ModelConfig(vocab_size=100, hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads,
                  intermediate_size=4 * args.hidden, max_position_embeddings=16)
model = MiniBERT(cfg, seed=0)
print(f"{model.num_parameters:,} parameters in one flat buffer; e.g. W_Q_0 {model.params['W_Q_0'].shape}")

# Two sequences of T = 8: the second has 3 padding tokens at the end.
ids = np.array([[CLS_ID, 11, 12, 13, 14, 15, 16, SEP_ID],
                [CLS_ID, 21, 22, 23, SEP_ID, PAD_ID, PAD_ID, PAD_ID]])
mask = (ids != PAD_ID).astype(np.int32)
logits, cache = model.forward(ids, mask)                              # (B, T, V)
print(f"input ids {ids.shape} -> logits {logits.shape}: one score per vocabulary entry at every position")
for layer, h in enumerate(cache["hidden_states"]):
    print(f"hidden state {layer} ({'embeddings' if layer == 0 else f'after layer {layer - 1}'}): {h.shape}")

A = cache["attention_weights"][0]                                     # (B, H, T, T) of layer 0
print(f"attention weights of layer 0: {A.shape}; rows sum to {A.sum(-1).min():.6f} .. {A.sum(-1).max():.6f}")
print(f"largest weight any real token of sequence 2 gives to a [PAD] key: {A[1, :, :5, 5:].max():.2e}")
print("the cache, by dotted name (first 12 entries):")
for name, shape in list(describe_cache(cache).items())[:12]:
    print(f"  {name:<36} {shape}")
