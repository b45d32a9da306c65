"""Learning-rate schedule: linear warmup, then linear or cosine decay to min_lr_ratio * base_lr."""

from __future__ import annotations

import math


def lr_at(step: int, base_lr: float, warmup_steps: int, total_steps: int, kind: str = "linear",
          min_lr_ratio: float = 0.0, decay_from: tuple[int, float] | None = None) -> float:
    """Learning rate for optimizer step `step` (0-based).

    warmup: lr rises linearly from base_lr/warmup_steps to base_lr over the first `warmup_steps` steps;
    then `kind` = "linear" decays linearly, "cosine" along half a cosine, "constant" stays, reaching
    min_lr_ratio * base_lr at total_steps.

    The decay follows a progress p from 0 to 1. By default p = (step - warmup_steps) / (total_steps - warmup_steps).
    decay_from = (s, p_s): the decay had reached p_s at step s, and p rises linearly from there to 1 at
    total_steps. A schedule whose length changes at step s (fitted again to a time budget) passes the progress it had
    reached there, so the rate goes on from where it was instead of jumping.
    """
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    if kind == "constant" or total_steps <= warmup_steps:
        return base_lr
    progress = decay_progress(step, warmup_steps, total_steps, decay_from)
    if kind == "linear":
        factor = 1.0 - progress
    elif kind == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"unknown schedule {kind!r}; choose linear, cosine or constant")
    return base_lr * (min_lr_ratio + (1.0 - min_lr_ratio) * factor)


def decay_progress(step: int, warmup_steps: int, total_steps: int,
                   decay_from: tuple[int, float] | None = None) -> float:
    """How far the decay of `lr_at` has gone at `step`: 0 until warmup ends, 1 at total_steps (see lr_at)."""
    s0, p0 = decay_from if decay_from is not None else (warmup_steps, 0.0)
    return min(1.0, p0 + (1.0 - p0) * max(0, step - s0) / max(1, total_steps - s0))
