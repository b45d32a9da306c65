"""AdvancedMiniBERT with rotary position embeddings (RoPE) instead of learned absolute positions.

What it teaches: RoPE rotates each pair of query/key dimensions by an angle proportional to the position, so the
score q_i . k_j depends on the positions only through their offset j - i (checked below numerically); it adds no
parameters; and the model trains like any other: the same loss, backward and optimizer calls.

    python examples/advanced_usage/rope_model.py [--steps 30]
"""

import argparse

import numpy as np

from mini_bert.config import ModelConfig
from mini_bert.core.variants import AdvancedMiniBERT, AdvancedMiniBERTGradients, rope_forward
from mini_bert.training.checkpoint_utils import synthetic_batch
from mini_bert.core.gradients import mlm_cross_entropy
from mini_bert.training.optimizer import AdamW, decay_mask

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=30, help="AdamW steps on one fixed batch")
args = parser.parse_args()


def rotated(v, position):
    """A (d,) vector rotated by RoPE as if it stood at `position` (rope_forward takes (B, H, T, d))."""
    x = np.zeros((1, 1, position + 1, v.size))
    x[0, 0, position] = v
    return rope_forward(x)[0][0, 0, position]


# The relative-position property: the same q and k placed at (i, j) and at (i + 5, j + 5) give the same score.
q, k = np.random.default_rng(0).normal(size=(2, 8))
print(f"q.k at positions (2, 7): {rotated(q, 2) @ rotated(k, 7):+.6f}; at (7, 12): "
      f"{rotated(q, 7) @ rotated(k, 12):+.6f}; at (2, 3): {rotated(q, 2) @ rotated(k, 3):+.6f}")

cfg = ModelConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                  max_position_embeddings=32, dropout=0.0, attention_dropout=0.0)
model = AdvancedMiniBERT(cfg, seed=0, rotary=True, absolute_positions=False)
grads = AdvancedMiniBERTGradients(model)
print(f"variants {sorted(model.variants)}, {model.num_parameters:,} parameters (E_pos stays in the buffer, unused)")
batch = synthetic_batch(cfg.vocab_size, batch_size=8, seq_len=16, seed=0)
opt = AdamW(model.store.flat, decay_mask(model.store), lr=1e-2)     # RoPE adds no parameters: one buffer
for step in range(args.steps + 1):
    logits, cache = model.forward(batch["input_ids"], batch["attention_mask"], training=True,
                                  masked_positions=batch["mask_positions"])
    loss, dlogits = mlm_cross_entropy(logits, batch["target_ids"], batch["mask_positions"])
    if step % max(1, args.steps // 3) == 0:
        print(f"step {step:3d}  loss on the fixed batch {loss:.3f}")
    grads.zero_gradients()
    grads.backward_from_logits(dlogits, cache)
    opt.step(grads.store.flat)
print(f"E_pos gradient norm: {np.linalg.norm(grads.gradients['E_pos']):.1f} (positions come from the rotation only)")
