"""What the model refuses to read: every input check raises an InputError (a MiniBertError, so the CLI prints it
with exit code 2) that names the array, the value and the limit; what it accepts gives the same numbers as before."""

from __future__ import annotations

import numpy as np
import pytest

from mini_bert.config import ModelConfig
from mini_bert.core.model import MiniBERT
from mini_bert.errors import InputError, MiniBertError


@pytest.fixture(scope="module")
def model() -> MiniBERT:
    return MiniBERT(ModelConfig(vocab_size=50, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                                max_position_embeddings=16), seed=0)


IDS = np.array([[2, 7, 9, 3, 0], [2, 11, 3, 0, 0]])
MASK = (IDS != 0).astype(np.int64)


@pytest.mark.parametrize("ids, mask, types, words", [
    (IDS[0], None, None, ["shape (batch, seq_len)", "ids[None, :]"]),
    (IDS.astype(np.float32), None, None, ["integers", "float32"]),
    (np.zeros((1, 0), dtype=np.int64), None, None, ["empty"]),
    (np.ones((1, 17), dtype=np.int64), None, None, ["17", "max_position_embeddings=16"]),
    (IDS + 50, None, None, ["token id", "[0, 49]"]),
    (IDS, MASK[:, :3], None, ["attention_mask has shape (2, 3)", "(2, 5)"]),
    (IDS, MASK * 2, None, ["attention_mask holds 2", "1 for a real token and 0 for padding"]),
    (IDS, MASK * 0.5, None, ["attention_mask holds 0.5"]),
    (IDS, MASK - 1, None, ["attention_mask holds -1"]),
    (IDS, MASK, np.full(IDS.shape, 2), ["token_type_ids must lie in [0, 1]"]),
    (IDS, MASK, np.zeros((2, 4), dtype=np.int64), ["token_type_ids has shape (2, 4)"]),
])
def test_bad_inputs_are_named(model, ids, mask, types, words):
    with pytest.raises(InputError) as err:
        model.forward(ids, attention_mask=mask, token_type_ids=types)
    for w in words:
        assert w in str(err.value), f"{w!r} missing from: {err.value}"
    assert isinstance(err.value, MiniBertError) and isinstance(err.value, ValueError)


def test_masks_of_any_zero_one_dtype_give_the_same_logits(model):
    reference, _ = model.forward(IDS, attention_mask=MASK)
    for mask in (MASK.astype(bool), MASK.astype(np.float32), MASK.astype(np.uint8)):
        logits, _ = model.forward(IDS, attention_mask=mask)
        np.testing.assert_array_equal(logits, reference)
    assert not np.array_equal(model.forward(IDS)[0], reference)        # the mask matters: padding is ignored
