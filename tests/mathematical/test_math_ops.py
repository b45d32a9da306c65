"""Fast paths that must compute the same numbers as the plain formulas they replace."""

import numpy as np
import pytest
from scipy.special import erf

from mini_bert.core.embeddings import SMALL_TABLE, embedding_backward
from mini_bert.core.layers import linear_backward, linear_backward_transposed
from mini_bert.core.math_ops import gelu_forward, normal_cdf


def exact_cdf(x):
    return 0.5 * (1.0 + erf(np.asarray(x, dtype=np.float64) / np.sqrt(2.0)))


def test_float32_normal_cdf_within_its_stated_bound():
    x = np.linspace(-10, 10, 2_000_001, dtype=np.float32)
    err = np.abs(normal_cdf(x).astype(np.float64) - exact_cdf(x))
    print(f"\nfloat32 normal_cdf: max |error| {err.max():.2e} on [-10, 10]")
    assert err.max() <= 1.0e-7      # every float32 with 2^-12 <= |x| <= 6 measured 9.86e-8 (at x = 1.6926)


def test_float32_normal_cdf_stays_a_probability_and_saturates_exactly():
    x = np.linspace(-50, 50, 1_000_001, dtype=np.float32)
    cdf = normal_cdf(x)
    assert cdf.dtype == np.float32
    assert cdf.min() == 0.0 and cdf.max() == 1.0
    np.testing.assert_array_equal(normal_cdf(np.float32([-1e30, -100, -6, 6, 100, 1e30])), [0, 0, 0, 1, 1, 1])
    assert normal_cdf(np.float32([0.0]))[0] == 0.5
    # GELU of a very negative input is 0, not a tiny multiple of the input
    assert gelu_forward(np.float32([-1e4]))[0][0] == 0.0


def test_float64_normal_cdf_is_scipys_erf():
    x = np.linspace(-9, 9, 10_001)
    np.testing.assert_allclose(normal_cdf(x), exact_cdf(x), rtol=1e-15, atol=1e-16)   # rounding only


def test_float32_gelu_matches_float64_to_float32_rounding():
    x = np.random.default_rng(0).normal(0, 3, 100_000).astype(np.float32)
    y32, _ = gelu_forward(x)
    y64, _ = gelu_forward(x.astype(np.float64))
    # 1.0e-7 |x| from Phi plus float32 rounding of the product (6e-8 of |y| <= |x|)
    assert np.all(np.abs(y32 - y64) <= 1.6e-7 * np.abs(x) + 1e-30)


@pytest.mark.parametrize("num_embeddings", [2, SMALL_TABLE, SMALL_TABLE + 1, 500])
def test_embedding_backward_both_paths_equal_the_scatter_add(num_embeddings):
    rng = np.random.default_rng(num_embeddings)
    ids = rng.integers(0, num_embeddings, (4, 9))
    ids[0, :3] = 1                                                  # repeated ids must all count
    dy = rng.normal(size=(4, 9, 5))
    expected = np.zeros((num_embeddings, 5))
    for i, row in zip(ids.reshape(-1), dy.reshape(-1, 5)):
        expected[i] += row
    np.testing.assert_allclose(embedding_backward(dy, ids, num_embeddings), expected, rtol=1e-12, atol=1e-12)
    out = np.ones((num_embeddings, 5))
    embedding_backward(dy, ids, num_embeddings, out=out)            # adds into out
    np.testing.assert_allclose(out, expected + 1, rtol=1e-12, atol=1e-12)


def test_linear_backward_transposed_is_linear_backward_with_the_transpose():
    rng = np.random.default_rng(0)
    x, Wt, dy = rng.normal(size=(2, 3, 4)), rng.normal(size=(6, 4)), rng.normal(size=(2, 3, 6))
    dx, dWt, db = linear_backward_transposed(dy, x, Wt)
    dx_ref, dW_ref, db_ref = linear_backward(dy, x, np.ascontiguousarray(Wt.T))
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12)
    np.testing.assert_allclose(dWt, dW_ref.T, rtol=1e-12)
    np.testing.assert_allclose(db, db_ref, rtol=1e-12)
