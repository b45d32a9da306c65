"""The gradient tests use the package's public checker, `mini_bert.gradcheck` (float64 central differences, one
relative error per tensor: ||analytic - numeric|| / max(||analytic||, ||numeric||, tiny)). This module re-exports
it and adds `report`, which prints a check's numbers (visible with pytest -s) and fails the test with its table,
and `model_case`, the small masked batch the whole-model checks share."""

from __future__ import annotations

import numpy as np

from mini_bert.data.masking import mask_tokens
from mini_bert.gradcheck import EPS, TOL, GradCheckResult, check, numeric_gradient, relative_error

__all__ = ["EPS", "TOL", "check", "model_case", "numeric_gradient", "relative_error", "report"]


def model_case():
    """(input_ids, target_ids, mask_positions, attention_mask, token_type_ids) of 2 sequences of 7 tokens over a
    19-token vocabulary: [CLS] first, padding at the end of the second, two segments, 30% of tokens masked."""
    r = np.random.default_rng(2)
    ids = r.integers(5, 19, (2, 7))
    ids[:, 0] = 2
    ids[1, 5:] = 0                                  # padding in the second sequence
    attention_mask = (ids != 0).astype(np.int64)
    token_type_ids = np.zeros_like(ids)
    token_type_ids[:, 4:] = 1
    inp, tgt, pos = mask_tokens(ids, 19, 4, 0.3, np.random.default_rng(3))
    return inp, tgt, pos, attention_mask, token_type_ids


def report(name: str, result: GradCheckResult | float, tol: float = TOL) -> None:
    """Print a check's largest relative error and assert that it (and every input of a GradCheckResult) is within
    tol; a failure shows the checker's per-input table."""
    if isinstance(result, GradCheckResult):
        err = result.max_relative_error
        print(f"{name}: max relative error {err:.2e}")
        assert result.passed and err <= tol, f"{name}: gradient check failed\n{result.table()}"
        return
    print(f"{name}: max relative error {result:.2e}")
    assert result <= tol, f"{name}: relative error {result:.2e} > {tol:.0e}"
