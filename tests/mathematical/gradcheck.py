"""The gradient tests use the package's public checker, `mini_bert.gradcheck` (float64 central differences, one
relative error per tensor: ||analytic - numeric|| / max(||analytic||, ||numeric||, tiny)). This module re-exports
it and adds `report`, which prints a check's numbers (visible with pytest -s) and fails the test with its table."""

from __future__ import annotations

from mini_bert.gradcheck import EPS, TOL, GradCheckResult, check, numeric_gradient, relative_error

__all__ = ["EPS", "TOL", "check", "numeric_gradient", "relative_error", "report"]


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
