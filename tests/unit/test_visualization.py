"""Figures (utils/visualization.py), the `minibert analyze` report (tools/analyze.py) and the explorer
(tools/mathematical_explorer.py): valid PNGs of the promised pixel size whose JSON holds exactly the numbers the metric functions return."""

import json
import struct

import numpy as np
import pytest

from mini_bert.config import SPECIAL_TOKENS
from mini_bert.core.model import MiniBERT
from mini_bert.analysis import dynamics as AD
from mini_bert.analysis import inspection as AI
from mini_bert.analysis import landscape as AL
from mini_bert.evaluation import metrics as M
from mini_bert.analysis import figures as V

TINY = dict(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
            max_position_embeddings=16, dropout=0.0, attention_dropout=0.0)
WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "to", "park", "and", "saw", "bird", "."]


def png_size(path):
    """(width, height) from the PNG header; also checks the signature."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def numbers(path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def model():
    return MiniBERT(TINY, seed=0)


@pytest.fixture(scope="module")
def cache(model):
    _, c = model.encode(np.array([[2, 10, 11, 12, 13, 14, 3]]))
    return c


def test_attention_heatmap_single_head_and_grid(tmp_path, cache):
    tokens = [f"t{i}" for i in range(7)]
    one = V.plot_attention_heatmap(cache["attention_weights"][1][0, 0], tokens, tmp_path / "head",
                                   figsize=(4, 3), dpi=50)
    assert png_size(one.png) == (200, 150)
    np.testing.assert_array_equal(numbers(one.json)["attention"], cache["attention_weights"][1][0, 0])
    grid = np.stack([a[0] for a in cache["attention_weights"]])                # (L, H, T, T)
    paths = V.plot_attention_heatmap(grid, tokens, tmp_path / "grid", figsize=(6, 6), dpi=40)
    assert png_size(paths.png) == (240, 240)
    saved = numbers(paths.json)
    assert saved["shape"] == [2, 2, 7, 7] and saved["tokens"] == tokens
    np.testing.assert_array_equal(saved["attention"], grid)
    with pytest.raises(ValueError, match="tokens"):
        V.plot_attention_heatmap(grid, tokens[:3], tmp_path / "bad")


def test_layer_similarity_figure_holds_the_metric(tmp_path, cache):
    sim = M.compute_layer_similarity(cache["hidden_states"])
    paths = V.plot_layer_similarity(sim["cka"], tmp_path / "sim", figsize=(5, 4), dpi=60)
    assert png_size(paths.png) == (300, 240)
    saved = numbers(paths.json)
    np.testing.assert_array_equal(saved["matrix"], sim["cka"])
    assert saved["labels"] == ["emb", "L0", "L1"]


def test_gradient_flow_figure(tmp_path, model):
    batch = AI.as_mlm_batch(np.random.default_rng(0).integers(5, 50, size=(4, 8)), 50)
    _, grads, _ = AI.mlm_loss_and_gradients(model, batch)
    stats = AD.analyze_gradient_magnitudes_by_layer(grads, model)
    paths = V.plot_gradient_flow(stats, tmp_path / "grad", figsize=(7, 4), dpi=50)
    assert png_size(paths.png) == (350, 200)
    saved = numbers(paths.json)
    assert saved["groups"] == stats["groups"]
    np.testing.assert_array_equal(saved["grad_norm"], [stats["grad_norm"][g] for g in stats["groups"]])


def test_loss_landscape_figures(tmp_path, model):
    batch = AI.as_mlm_batch(np.random.default_rng(0).integers(5, 50, size=(4, 8)), 50)
    for d in (1, 2):
        land = AL.analyze_loss_landscape(model, batch, directions=d, resolution=5)
        paths = V.plot_loss_landscape(land, tmp_path / f"land{d}", figsize=(5, 4), dpi=50)
        assert png_size(paths.png) == (250, 200)
        saved = numbers(paths.json)
        np.testing.assert_array_equal(saved["losses"], land["losses"])
        assert saved["origin_loss"] == land["origin_loss"] == AI.mlm_loss(model, batch)


def test_lr_finder_weight_evolution_and_entropy_figures(tmp_path):
    a = np.linspace(0.1, 1.0, 10)
    res = AL.lr_range_test(lambda x: (0.5 * float(np.sum(a * x * x)), a * x), np.ones(10), 1e-3, 10.0, 40)
    p = V.plot_lr_finder(res, tmp_path / "lr", figsize=(6, 4), dpi=50)
    assert png_size(p.png) == (300, 200)
    saved = numbers(p.json)
    np.testing.assert_array_equal(saved["losses"], res["losses"])
    assert saved["suggested_lr"] == res["suggested_lr"]

    states = [MiniBERT(TINY, seed=s).state_dict() for s in (0, 1, 2)]
    evo = AD.analyze_weight_evolution(states, steps=[0, 100, 200])
    p = V.plot_weight_evolution(evo, tmp_path / "evo", figsize=(8, 3), dpi=50)
    assert png_size(p.png) == (400, 150)
    saved = numbers(p.json)
    np.testing.assert_array_equal(saved["relative_distance"]["layer_1"], evo["groups"]["layer_1"]["relative_distance"])

    history = [{"step": s, "attention_entropy/layer_0": 2.0 - 0.1 * s, "attention_entropy/layer_1": 1.9}
               for s in range(0, 50, 10)]
    p = V.plot_attention_entropy(history, tmp_path / "ent", figsize=(6, 4), dpi=50)
    assert png_size(p.png) == (300, 200)
    assert numbers(p.json)["entropy"]["layer_0"] == [e["attention_entropy/layer_0"] for e in history]


def test_json_is_strict_for_non_finite_numbers(tmp_path):
    p = V.plot_layer_similarity(np.array([[1.0, np.nan], [np.nan, 1.0]]), tmp_path / "nan", labels=["a", "b"])
    assert numbers(p.json)["matrix"] == [[1.0, None], [None, 1.0]]


# `minibert analyze` and the explorer -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from mini_bert.config import RunConfig
    from mini_bert.training.checkpointing import save_checkpoint
    from mini_bert.data.tokenizer import WordPieceTokenizer

    vocab = SPECIAL_TOKENS + WORDS
    vocab += [f"w{i}" for i in range(TINY["vocab_size"] - len(vocab))]
    tok = WordPieceTokenizer(vocab)
    run = tmp_path_factory.mktemp("run")
    config = RunConfig(model=TINY)
    for step, seed in ((10, 0), (20, 1), (30, 2)):
        save_checkpoint(run / f"step_{step:07d}", config, MiniBERT(TINY, seed=seed), tok, trainer_state={"step": step})
    return run


def test_analyze_command_writes_figures_json_and_summary(tmp_path, run_dir):
    from mini_bert.cli import main

    out = tmp_path / "report"
    rc = main(["analyze", "--checkpoint", str(run_dir), "--text", "the cat sat on the mat .",
               "--what", "all", "--output-dir", str(out)])
    assert rc == 0
    for stem in ("attention", "gradient_flow", "weight_evolution", "loss_landscape_1d", "loss_landscape_2d",
                 "lr_finder", "layer_similarity"):
        assert png_size(out / f"{stem}.png")[0] > 0
        assert (out / f"{stem}.json").exists()
    summary = (out / "summary.md").read_text()
    assert "## Attention" in summary and "![Weight evolution](weight_evolution.png)" in summary
    assert numbers(out / "weight_evolution.json")["steps"] == [10, 20, 30]
    # The attention figure holds the model's own weights on this text.
    from mini_bert.training.checkpointing import load_model_and_tokenizer
    model, tok = load_model_and_tokenizer(run_dir)
    ids = [2] + tok.encode("the cat sat on the mat .") + [3]
    _, c = model.encode(np.array([ids]))
    np.testing.assert_allclose(numbers(out / "attention.json")["attention"],
                               np.stack([a[0] for a in c["attention_weights"]]), rtol=1e-6)
    np.testing.assert_allclose(numbers(out / "summary.json")["attention_entropy"],
                               M.compute_attention_entropy(c["attention_weights"]), rtol=1e-12)


def test_analyze_command_rejects_unknown_analysis(run_dir, capsys):
    from mini_bert.cli import main

    assert main(["analyze", "--checkpoint", str(run_dir), "--what", "attention,colours"]) == 2
    assert "unknown analysis colours" in capsys.readouterr().err


def test_mathematical_explorer(run_dir):
    from mini_bert.analysis.explorer import MathematicalExplorer
    from mini_bert.training.checkpointing import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(run_dir)
    ex = MathematicalExplorer(model, tok)
    heads = ex.explore_attention_heads("the dog saw a bird")
    assert len(heads) == 4 and len(heads[0]["attends_to"]) == 7
    steps = ex.step_through_forward_pass("the dog saw a bird")
    names = [s["name"] for s in steps]
    assert "layers.0.attn.attention_weights" in names and "hidden_states.2" in names
    flow = ex.analyze_gradient_flow("the dog saw a bird")
    assert flow["groups"] == ["embeddings", "layer_0", "layer_1", "head"] and flow["loss"] > 0
    rep = ex.compare_layer_representations("the dog saw a bird")
    assert rep["cka"].shape == (3, 3) and len(rep["effective_rank"]) == 3
