"""The single-process side of data-parallel training (training/distributed.py) and the loss normalisation it rests
on; the MPI runs themselves are tests/integration/test_mpi.py."""

from __future__ import annotations

import numpy as np
import pytest

from mini_bert.config import ModelConfig
from mini_bert.core.model import MiniBERT
from mini_bert.data.batches import Batch
from mini_bert.data.masking import mask_tokens
from mini_bert.errors import ConfigError
from mini_bert.training import distributed
from mini_bert.training.step import GradientWorker, split_batch


@pytest.fixture
def fresh_world(monkeypatch):
    monkeypatch.setattr(distributed, "_world", None)
    for name in distributed.WORLD_SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield
    distributed._world = None


def test_a_plain_run_is_one_process_and_never_imports_mpi4py(fresh_world, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "mpi4py", None)     # importing it would raise ImportError
    world = distributed.detect_world()
    assert isinstance(world, distributed.SingleProcess) and world.size == 1 and world.is_root


def test_launched_as_ranks_without_mpi4py_names_the_extra(fresh_world, monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setitem(__import__("sys").modules, "mpi4py", None)
    with pytest.raises(ConfigError, match=r"launched as 2 MPI ranks, but mpi4py is not installed: "
                                          r"pip install 'mini-bert\[mpi\]'"):
        distributed.detect_world()


def batch_of(rows: int, seed: int = 0) -> Batch:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 60, (rows, 12)).astype(np.int32)
    ids[:, 0] = 2
    inp, tgt, pos = mask_tokens(ids, 60, 4, 0.3, rng)
    return Batch(inp, tgt, pos, np.ones_like(ids), np.zeros_like(ids))


def test_rank_slices_weighted_by_their_masked_tokens_add_up_to_the_batch():
    """What each rank computes with n_total (its share of the batch's mean) sums to the whole batch's loss and
    gradient; the slices are the row blocks split_batch gives the threads of one process."""
    cfg = ModelConfig(vocab_size=60, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                      max_position_embeddings=12, dropout=0.0, attention_dropout=0.0, dtype="float64")
    model = MiniBERT(cfg, seed=0)
    batch = batch_of(7)
    whole = GradientWorker(model, 1, seed=0)
    loss, _ = whole.loss_and_gradients(batch)
    n_total = int(batch.mask_positions.sum())
    bounds = distributed.row_bounds(7, 3)
    slices = [Batch(*(getattr(batch, f)[a:b] for f in distributed.BATCH_FIELDS)) for a, b in zip(bounds, bounds[1:])]
    assert [s.input_ids.shape[0] for s in slices] == [p.input_ids.shape[0] for p in split_batch(batch, 3)]
    rank = GradientWorker(model, 1, seed=0)
    parts = [(rank.loss_and_gradients(s, n_total)[0], rank.grads.flat.copy()) for s in slices]
    assert sum(l for l, _ in parts) == pytest.approx(loss, rel=1e-12)
    np.testing.assert_allclose(sum(g for _, g in parts), whole.grads.flat, rtol=1e-10, atol=1e-14)


def test_a_slice_without_masked_tokens_contributes_zeros():
    cfg = ModelConfig(vocab_size=60, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32,
                      max_position_embeddings=12)
    worker = GradientWorker(MiniBERT(cfg, seed=0), 2, seed=0)
    worker.grads.flat[:] = 1.0
    b = batch_of(2)
    empty = Batch(b.input_ids, b.target_ids, np.zeros_like(b.mask_positions), b.attention_mask, b.token_type_ids)
    assert worker.loss_and_gradients(empty, n_total=10) == (0.0, None)
    assert not worker.grads.flat.any()
    worker.close()


def test_the_single_process_world_changes_nothing():
    world, b = distributed.SingleProcess(), batch_of(4)
    assert world.shard(b) == (b, None) and world.reduce(1.5) == 1.5 and world.share({"a": 1}) == {"a": 1}
    assert world.gather(3) == [3] and world.agree_stop(True, False) == (True, False)
