"""ELECTRA's replaced-token detection against float64 central differences: the head and its loss alone, then the
generator and discriminator together through `ElectraGradients.electra_loss_and_backward`."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from gradcheck import TOL, check, model_case, numeric_gradient, relative_error, report
from mini_bert import ModelConfig
from mini_bert.core.electra import (Electra, ElectraGradients, binary_cross_entropy, generator_config,
                                    rtd_head_backward, rtd_head_forward, sample_from_logits)

rng = np.random.default_rng(0)


def test_rtd_head():
    h, w, b = rng.normal(size=(2, 5, 6)), rng.normal(size=(6, 1)), rng.normal(size=1)
    report("rtd head", check(lambda h, w, b: (rtd_head_forward(h, w, b), (h, w)),
                             lambda dz, c: rtd_head_backward(dz, c[0], c[1]), h, w, b))


def test_binary_cross_entropy_value_and_gradient():
    z = rng.normal(size=(3, 4)) * 3
    y = rng.random((3, 4)) < 0.3
    real = np.ones((3, 4), dtype=bool)
    real[2, 2:] = False                                  # padding counts for nothing
    loss, dz = binary_cross_entropy(z, y, real, count=10)
    p = 1 / (1 + np.exp(-z))
    ref = -(real * (y * np.log(p) + (1 - y) * np.log(1 - p))).sum() / 10
    assert abs(loss - ref) < 1e-12
    num = numeric_gradient(lambda: binary_cross_entropy(z, y, real, 10)[0], z)
    report("binary cross-entropy", relative_error(dz, num))
    assert np.all(dz[2, 2:] == 0)
    big, _ = binary_cross_entropy(np.array([[800.0, -800.0]]), np.array([[False, True]]), np.ones((1, 2)), 2)
    assert np.isfinite(big) and abs(big - 800.0) < 1e-9      # softplus stays finite far out


def test_samples_follow_the_softmax():
    logits = np.tile(np.array([2.0, 0.0, -1.0, 1.0, -3.0]), (40000, 1))
    ids = sample_from_logits(logits, np.random.default_rng(1))
    p = np.exp(logits[0]) / np.exp(logits[0]).sum()
    freq = np.bincount(ids, minlength=5) / len(ids)
    assert np.abs(freq - p).max() < 0.01, (freq, p)
    assert ids.min() >= 0 and ids.max() <= 4


def _tiny_electra():
    cfg = ModelConfig(vocab_size=19, hidden_size=8, num_layers=2, num_heads=2, intermediate_size=12,
                      max_position_embeddings=9, activation="gelu", norm_position="pre", dtype="float64",
                      dropout=0.0, attention_dropout=0.0, layer_norm_eps=1e-5)
    model = Electra(cfg, generator_config(cfg, 0.5), seed=1)
    model.store.flat += np.random.default_rng(5).normal(0, 0.1, model.store.flat.shape)
    return model


def test_generator_config_keeps_depth_and_vocabulary():
    g = generator_config(ModelConfig(), 0.25)
    assert (g.hidden_size, g.intermediate_size, g.num_layers, g.vocab_size) == (48, 192, 3, 8192)


def test_electra_whole_pair_gradient():
    model = _tiny_electra()
    inp, tgt, pos, am, tt = model_case()
    batch = SimpleNamespace(input_ids=inp, target_ids=tgt, mask_positions=pos, attention_mask=am,
                            token_type_ids=tt)

    def loss_and_grads():
        g = ElectraGradients(model)
        loss, stats = g.electra_loss_and_backward(batch, np.random.default_rng(7), weight=5.0)   # same samples
        return loss, g.flat.copy(), stats
    loss, analytic, stats = loss_and_grads()
    assert stats["replaced"] > 0 and stats["real_tokens"] == int(am.sum())
    numeric = numeric_gradient(lambda: loss_and_grads()[0], model.store.flat)
    worst, checked = 0.0, set()
    for name, sl in model.store.slices.items():
        if not np.any(numeric[sl]) and not np.any(analytic[sl]):
            continue              # tensors no loss reads (the discriminator's MLM head, the poolers)
        err = relative_error(analytic[sl], numeric[sl])
        worst = max(worst, err)
        checked.add(name)
        assert err <= TOL, f"{name}: relative error {err:.2e}"
    # both models and the head were checked, not one of them trivially
    assert {"W_QKV_0", "generator.W_QKV_0", "generator.E_token", "E_token", "rtd_w", "rtd_b"} <= checked
    assert not np.any(analytic[model.store.slices["W_mlm"]])        # the discriminator's MLM head is not trained
    print(f"ELECTRA generator + discriminator: max relative error {worst:.2e}")


def test_split_batch_parts_add_up_to_the_whole():
    model = _tiny_electra()
    inp, tgt, pos, am, tt = model_case()
    whole = SimpleNamespace(input_ids=inp, target_ids=tgt, mask_positions=pos, attention_mask=am, token_type_ids=tt)
    rows = [slice(0, 1), slice(1, 2)]
    parts = [SimpleNamespace(**{k: v[r] for k, v in vars(whole).items()}) for r in rows]
    n, real = int(pos.sum()), int(am.sum())
    g = ElectraGradients(model)
    # the same samples in both computations: one generator per row, consumed in row order
    total, flat = 0.0, np.zeros_like(g.flat)
    for p in parts:
        l, _ = g.electra_loss_and_backward(p, np.random.default_rng(9), mlm_scale=int(p.mask_positions.sum()) / n,
                                           real_tokens=real)
        total, flat = total + l, flat + g.flat
    # the whole batch with each row's samples: reproduce them by corrupting row by row with the same seeds
    corrupted_rows = []
    for p in parts:
        logits, _ = model.generator.forward(p.input_ids, p.attention_mask, p.token_type_ids,
                                            masked_positions=p.mask_positions)
        corrupted_rows.append(model.corrupt(p, logits, np.random.default_rng(9))[0])
    corrupted = np.concatenate(corrupted_rows)
    stub = Electra.corrupt
    try:
        Electra.corrupt = lambda self, b, lg, r: (corrupted, corrupted != b.target_ids)
        l_whole, _ = g.electra_loss_and_backward(whole, np.random.default_rng(0))
    finally:
        Electra.corrupt = stub
    assert abs(total - l_whole) < 1e-12
    assert np.allclose(flat, g.flat, rtol=1e-10, atol=1e-13)


def test_the_discriminator_learns_more_than_the_base_rate():
    """On text whose context predicts every token (ascending runs), 250 steps bring the replaced-token loss well
    below the entropy of the replaced share, the loss of a head that has learned only the base rate."""
    from mini_bert.data.masking import mask_tokens
    from mini_bert.training.optimizer import AdamW, decay_mask

    cfg = ModelConfig(vocab_size=200, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                      max_position_embeddings=32, activation="gelu", norm_position="pre", dropout=0.0,
                      attention_dropout=0.0)
    model = Electra(cfg, generator_config(cfg, 0.5), seed=0)
    g, r = ElectraGradients(model), np.random.default_rng(0)
    opt = AdamW(model.store.flat, decay_mask(model.store), lr=2e-3)
    losses, entropies = [], []
    for step in range(250):
        ids = (r.integers(5, 150, (16, 1)) + np.arange(24)) % 195 + 5
        inp, tgt, pos = mask_tokens(ids, 200, 4, 0.2, r)
        batch = SimpleNamespace(input_ids=inp, target_ids=tgt, mask_positions=pos, attention_mask=np.ones_like(ids),
                                token_type_ids=np.zeros_like(ids))
        _, stats = g.electra_loss_and_backward(batch, r)
        opt.step(g.flat, 2e-3)
        if step >= 200:
            p = stats["replaced"] / stats["real_tokens"]
            losses.append(stats["discriminator_loss"])
            entropies.append(-(p * np.log(p) + (1 - p) * np.log(1 - p)))
    assert np.mean(losses) < 0.85 * np.mean(entropies), (np.mean(losses), np.mean(entropies))


def test_model_slices_cover_the_buffer_once_model_by_model():
    model = _tiny_electra()
    marks = np.zeros(model.store.flat.size)
    parts = model.model_slices(marks)
    for i, name in enumerate(("discriminator", "generator"), start=1):
        for v in parts[name]:
            v += i
    assert np.all((marks == 1) | (marks == 2))                 # every element in exactly one model
    S = model.store.slices
    assert np.all(marks[S["W_QKV_0"]] == 1) and np.all(marks[S["rtd_w"]] == 1) and np.all(marks[S["rtd_b"]] == 1)
    assert np.all(marks[S["generator.W_QKV_0"]] == 2) and np.all(marks[S["generator.E_token"]] == 2)


def test_per_model_clip_bounds_each_model_and_leaves_a_small_one_alone():
    from mini_bert.training.optimizer import clip_grad_norm, clip_grad_norm_groups
    model = _tiny_electra()
    g = np.random.default_rng(3).normal(size=model.store.flat.size)
    parts = model.model_slices(g)
    for v in parts["discriminator"]:
        v *= 50.0                                             # the weighted discriminator dominates
    scale = 0.5 / np.sqrt(sum(float(v @ v) for v in parts["generator"]))
    for v in parts["generator"]:
        v *= scale                                            # norm 0.5: under the bound
    gen_before = np.concatenate(parts["generator"]).copy()
    disc_norm = np.sqrt(sum(float(v @ v) for v in parts["discriminator"]))

    global_clip = g.copy()
    clip_grad_norm(global_clip, 1.0)                          # one norm: the generator shrinks with the other
    assert np.linalg.norm(model.model_slices(global_clip)["generator"][0]) < 0.01

    norms = clip_grad_norm_groups(parts, 1.0)
    assert abs(norms["generator"] - 0.5) < 1e-12 and abs(norms["discriminator"] - disc_norm) < 1e-9
    assert np.array_equal(np.concatenate(parts["generator"]), gen_before)   # under the bound: untouched
    after = np.sqrt(sum(float(v @ v) for v in parts["discriminator"]))
    assert abs(after - 1.0) < 1e-5                             # over it: scaled to the bound
