"""AdamW over the flat buffer: the textbook update, and the same bits whether the buffer is updated whole, in
cache-sized blocks or split across threads."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from mini_bert.training import optimizer
from mini_bert.training.optimizer import AdamW


def three_steps(opt, grads):
    for t, g in enumerate(grads):
        opt.step(g, lr=1e-2 * (t + 1))
    return opt.params


def test_adamw_blocks_and_threads_compute_the_textbook_update_bit_for_bit(monkeypatch):
    rng = np.random.default_rng(0)
    n = 3 * 1000 + 17                                   # blocks of 1,000 below: three whole and one partial
    start = rng.standard_normal(n).astype(np.float32)
    mask = (rng.random(n) < 0.7).astype(np.float32)
    scale = rng.uniform(0.5, 1.0, n).astype(np.float32)
    grads = [rng.standard_normal(n).astype(np.float32) for _ in range(3)]

    whole = three_steps(AdamW(start.copy(), mask, weight_decay=0.1, lr_scale=scale), grads)
    monkeypatch.setattr(optimizer, "UPDATE_BLOCK", 1000)
    blocked = three_steps(AdamW(start.copy(), mask, weight_decay=0.1, lr_scale=scale), grads)
    threaded = AdamW(start.copy(), mask, weight_decay=0.1, lr_scale=scale)
    with ThreadPoolExecutor(2) as pool:
        threaded.use_threads(pool, 2)
        threaded = three_steps(threaded, grads)
    np.testing.assert_array_equal(blocked, whole)
    np.testing.assert_array_equal(threaded, whole)

    # the update of the guide, in float64
    p, m, v = start.astype(np.float64), np.zeros(n), np.zeros(n)
    for t, g in enumerate(grads, 1):
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g.astype(np.float64) ** 2
        step = (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-6) + 0.1 * mask * p
        p = p - 1e-2 * t * scale * step
    np.testing.assert_allclose(whole, p, rtol=1e-5, atol=1e-6)
