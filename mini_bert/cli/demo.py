"""`minibert demo NAME`: the learning path's short demos, each printing what it shows (analysis/demos.py)."""

from __future__ import annotations

# name -> (function in analysis/demos.py, what the notes call the step)
DEMOS = {
    "model": ("model_demo", "Week 1: shapes, parameter count and the forward cache of the default model"),
    "attention": ("attention_demo", "Week 2: Q, K, V and the attention weights, by hand against the model"),
    "gradients": ("gradients_demo", "Weeks 2-3: per-layer gradient norms and a finite-difference check"),
    "mlm": ("mlm_demo", "Week 3: BERT's masking rule and the loss of uniform predictions"),
    "optimizer": ("optimizer_demo", "Week 3: AdamW on an ill-conditioned quadratic, beside SGD"),
    "optimizers": ("optimizers_demo", "Phase 3: AdamW, Lion and Lookahead on a noisy quadratic"),
    "checkpointing": ("checkpointing_demo", "Phase 3: activation checkpointing, memory against time"),
    "variants": ("variants_demo", "Phase 3: RoPE, relative position bias and gated attention on a tiny model"),
}


def add_parser(sub, common) -> None:
    p = sub.add_parser("demo", help="a learning-path demo: " + ", ".join(DEMOS))
    p.add_argument("name", choices=sorted(DEMOS), help="; ".join(f"{k}: {v[1]}" for k, v in DEMOS.items()))
    p.set_defaults(func=run)


def run(args) -> int:
    from ..analysis import demos

    getattr(demos, DEMOS[args.name][0])()
    return 0
