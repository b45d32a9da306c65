"""The learning-rate schedule: warmup, decay to min_lr_ratio at the last step, and a decay whose length changes
mid-run going on from where it was."""

from __future__ import annotations

import pytest

from mini_bert.training.scheduler import decay_progress, lr_at


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_warmup_then_decay_to_the_floor(kind):
    lrs = [lr_at(s, 1.0, 10, 110, kind, min_lr_ratio=0.1) for s in range(111)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)          # (step + 1) / warmup
    assert lrs[10] == pytest.approx(1.0) and lrs[110] == pytest.approx(0.1)
    assert lrs[60] == pytest.approx(0.55)                                          # halfway, either shape
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_a_length_changed_mid_decay_keeps_the_rate_continuous(kind):
    """The schedule was 110 steps; at step 50 it becomes 80 (or 200). With decay_from the rate at step 50 is the
    same on both sides, and the new schedule still ends at the floor on its last step."""
    p = decay_progress(50, 10, 110)
    assert p == pytest.approx(0.4)
    for new_total in (80, 200):
        before = lr_at(50, 1.0, 10, 110, kind)
        after = lr_at(50, 1.0, 10, new_total, kind, decay_from=(50, p))
        assert after == pytest.approx(before)
        jump = abs(lr_at(50, 1.0, 10, new_total, kind) - before)        # without the anchor the rate jumps
        assert jump > 0.05
        assert lr_at(new_total, 1.0, 10, new_total, kind, decay_from=(50, p)) == pytest.approx(0.0, abs=1e-12)
        assert decay_progress(new_total + 5, 10, new_total, (50, p)) == 1.0
    # the default anchor is the end of warmup with no progress: the same schedule as without one
    assert all(lr_at(s, 1.0, 10, 110, kind, decay_from=(10, 0.0)) == lr_at(s, 1.0, 10, 110, kind)
               for s in range(111))
