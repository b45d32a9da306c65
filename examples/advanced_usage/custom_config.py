"""Build your own model configuration: from a YAML name plus key=value overrides, or directly in Python, and see
what a change costs in parameters and memory before training anything.

What it teaches: configuration is validated (a typo or an impossible shape fails at once with a message saying
what to fix), where the parameters of a BERT encoder are (embeddings dominate at small widths), and that
activation memory, not parameters, dominates a training step.

    python examples/advanced_usage/custom_config.py [model.num_layers=4 model.hidden_size=128 ...]
"""

import argparse

import numpy as np

from mini_bert import MiniBERT
from mini_bert.config import ConfigError, load_config
from mini_bert.analysis.memory import format_table, memory_breakdown

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("overrides", nargs="*", help="key=value settings on top of configs/training/debugging.yaml")
parser.add_argument("--batch", type=int, default=8)
parser.add_argument("--seq", type=int, default=32)
args = parser.parse_args()

cfg = load_config("debugging", args.overrides)                        # defaults <- YAML <- overrides
m = cfg.model
print(f"debugging config + {args.overrides or 'no overrides'}: {m.num_layers} layers, D={m.hidden_size}, "
      f"H={m.num_heads}, F={m.intermediate_size}, V={m.vocab_size}, {m.activation}, {m.norm_position}-LN")

for bad in (["model.hidden_size=30", "model.num_heads=4"],                # an impossible shape fails at once,
            ["training.learning_rate=1e-3"]):                                  # and so does a misspelt key
    try:
        load_config("debugging", bad)
    except ConfigError as e:
        print(f"{' '.join(bad)} -> {str(e).splitlines()[-1].strip()}")

model = MiniBERT(m, seed=0)
embeddings = sum(v.size for k, v in model.params.items() if k.startswith("E_"))
print(f"{model.num_parameters:,} parameters, {embeddings / model.num_parameters:.0%} of them in the embeddings")
logits, _ = model.forward(np.full((1, 8), 7))
print(f"a forward pass of 8 tokens gives logits {logits.shape}")
print()
print(format_table(memory_breakdown(cfg, args.batch, min(args.seq, m.max_position_embeddings))))
