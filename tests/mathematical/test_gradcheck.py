"""The public gradient checker itself (mini_bert.gradcheck): it passes correct backwards, catches the bugs
learners make, names the worst entry, and refuses what it cannot check honestly (float32, a wrong contract)."""

from __future__ import annotations

import numpy as np
import pytest

from mini_bert.core import layers, math_ops
from mini_bert.errors import MiniBertError
from mini_bert.gradcheck import GradCheckError, central_difference, check, numeric_gradient, relative_error


def ln(x, gamma, beta):
    return layers.layer_norm_forward(x, gamma, beta, 1e-5)


def ln_backward_without_the_xhat_term(dy, cache):
    """The classic LayerNorm slip: forgetting that xhat depends on x through the variance."""
    xhat, rstd, gamma = cache
    g = dy * gamma
    _, dgamma, dbeta = layers.layer_norm_backward(dy, cache)
    return rstd * (g - g.mean(-1, keepdims=True)), dgamma, dbeta


def test_a_correct_backward_passes_and_reports_every_input():
    r = check(ln, layers.layer_norm_backward, (3, 6), (6,), (6,))
    assert r.passed and [x.name for x in r.inputs] == ["x", "gamma", "beta"]
    assert all(x.checked and x.relative_error < 1e-8 for x in r.inputs)
    assert "passed" in r.table() and "gamma" in r.table()


def test_a_missing_term_fails_on_that_input_only_and_names_the_worst_entry():
    x = np.random.default_rng(1).standard_normal((3, 6))
    r = check(ln, ln_backward_without_the_xhat_term, x, (6,), (6,))
    assert not r.passed
    bad = r.failures()
    assert [b.name for b in bad] == ["x"] and bad[0].relative_error > 1e-2
    # the worst entry is where |analytic - numeric| is largest, and the two values printed are those there
    assert abs(bad[0].analytic - bad[0].numeric) == pytest.approx(bad[0].max_abs_error)
    assert "FAIL" in r.table() and str(list(bad[0].worst_index)) in r.table()


def test_the_callers_arrays_are_not_changed_and_results_are_seeded():
    x = np.random.default_rng(0).standard_normal((2, 5))
    keep = x.copy()
    a = check(math_ops.tanh_forward, math_ops.tanh_backward, x, seed=3)
    b = check(math_ops.tanh_forward, math_ops.tanh_backward, x, seed=np.random.default_rng(3))
    np.testing.assert_array_equal(x, keep)
    assert a.inputs[0].relative_error == b.inputs[0].relative_error


def test_forward_returning_only_y_gets_the_inputs_in_backward():
    def square(x):
        return x * x

    assert check(square, lambda dy, x: 2 * x * dy, (4,)).passed
    assert not check(square, lambda dy, x: x * dy, (4,)).passed


def test_float32_is_refused_with_a_reason():
    with pytest.raises(GradCheckError, match="float32.*float64") as e:
        check(ln, layers.layer_norm_backward, np.ones((2, 4), np.float32), (4,), (4,))
    assert isinstance(e.value, MiniBertError)
    with pytest.raises(GradCheckError, match="float32 output"):
        check(lambda x: (x * 2).astype(np.float32), lambda dy, x: 2 * dy, (3,))


def test_contract_mistakes_are_named():
    with pytest.raises(GradCheckError, match="2 gradient.*3 input"):
        check(ln, lambda dy, c: layers.layer_norm_backward(dy, c)[:2], (2, 4), (4,), (4,))
    with pytest.raises(GradCheckError, match="in place"):
        def shifts_in_place(x):
            x -= 1.0
            return x.copy()
        check(shifts_in_place, lambda dy, x: dy, (3,))
    with pytest.raises(GradCheckError, match="not a shape"):
        check(math_ops.tanh_forward, math_ops.tanh_backward, (2, 1.5))
    r = check(ln, lambda dy, c: (layers.layer_norm_backward(dy, c)[0].T,) + layers.layer_norm_backward(dy, c)[1:],
              (2, 4), (4,), (4,))
    assert not r.passed and "shape" in r.failures()[0].note


def test_constants_and_integer_inputs_pass_through_unchecked():
    ids = np.array([0, 2, 2])

    def lookup(E, ids, scale):
        return E[ids] * scale, (ids, scale, E.shape)

    def lookup_backward(dy, cache):
        ids, scale, shape = cache
        dE = np.zeros(shape)
        np.add.at(dE, ids, dy * scale)
        return dE                                  # trailing constants need no gradient

    r = check(lookup, lookup_backward, (4, 3), ids, 2.0)
    assert r.passed and [x.checked for x in r.inputs] == [True, False, False]


def test_central_difference_and_relative_error():
    x = np.array([1.0, 2.0])
    f = lambda: float(np.sum(x ** 3))  # noqa: E731
    assert central_difference(f, x, (1,)) == pytest.approx(12.0, rel=1e-9)
    np.testing.assert_allclose(numeric_gradient(f, x), 3 * x ** 2, rtol=1e-9)
    np.testing.assert_array_equal(x, [1.0, 2.0])
    assert relative_error(1.0, 1.1) == pytest.approx(0.1 / 1.1)
    assert relative_error(0.0, 0.0) == 0.0
