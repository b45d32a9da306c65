"""model.position_init: the sinusoidal start of the learned position table."""

import numpy as np
import pytest

from mini_bert.config import ConfigError, ModelConfig
from mini_bert.core.embeddings import sinusoidal_positions
from mini_bert.core.model import MiniBERT


def test_sinusoidal_table_is_the_transformers_formula_at_the_asked_rms():
    pe = sinusoidal_positions(16, 8, rms=0.02)
    raw = np.empty((16, 8))
    for t in range(16):
        for i in range(4):
            raw[t, 2 * i] = np.sin(t / 10000 ** (2 * i / 8))
            raw[t, 2 * i + 1] = np.cos(t / 10000 ** (2 * i / 8))
    np.testing.assert_allclose(pe, raw * 0.02 / np.sqrt(np.mean(raw ** 2)), rtol=1e-12)
    assert np.sqrt(np.mean(pe ** 2)) == pytest.approx(0.02)


def test_sinusoidal_similarity_depends_on_the_offset_and_falls_with_it():
    pe = sinusoidal_positions(64, 32)
    gram = pe @ pe.T
    # the same offset gives the same dot product wherever it is taken
    np.testing.assert_allclose(gram[5, 7], gram[40, 42], rtol=1e-10)
    assert gram[20, 20] > gram[20, 21] > gram[20, 23] > gram[20, 28]


def test_odd_width_keeps_its_shape():
    assert sinusoidal_positions(10, 7).shape == (10, 7)


def test_only_the_position_table_changes():
    normal = MiniBERT(ModelConfig(hidden_size=32, num_heads=2, intermediate_size=64, vocab_size=50), seed=3)
    sinus = MiniBERT(ModelConfig(hidden_size=32, num_heads=2, intermediate_size=64, vocab_size=50,
                                 position_init="sinusoidal"), seed=3)
    for name, value in normal.params.items():
        if name != "E_pos":
            np.testing.assert_array_equal(value, sinus.params[name], err_msg=name)
    assert sinus.params["E_pos"].dtype == np.float32
    np.testing.assert_allclose(sinus.params["E_pos"], sinusoidal_positions(128, 32, rms=0.02), rtol=1e-6)


def test_unknown_position_init_is_refused_by_name():
    with pytest.raises((ConfigError, ValueError), match="position_init"):
        ModelConfig(position_init="rotary")
