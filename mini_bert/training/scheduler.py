"""Learning-rate schedule: linear warmup, then linear or cosine decay to min_lr_ratio * base_lr."""

from __future__ import annotations

import math


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, kind: str = "linear",
          min_lr_ratio: float = 0.0) -> float:
    """Learning rate for optimizer step `step` (0-based).

    warmup: lr rises linearly from base_lr/warmup_steps to base_lr over the first `warmup_steps` steps;
    then `kind` = "linear" decays linearly, "cosine" along half a cosine, "constant" stays, reaching
    min_lr_ratio * base_lr at total_steps.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if kind == "constant" or total_steps <= warmup_steps:
        return base_lr
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if kind == "linear":
        factor = 1.0 - progress
    elif kind == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"unknown schedule {kind!r}; choose linear, cosine or constant")
    return base_lr * (min_lr_ratio + (1.0 - min_lr_ratio) * factor)
