"""The learning tools on a real (tiny) run: TrainingAnalyzer, RepresentationAnalyzer, performance_analysis,
memory_utils, and every script and example.

The run: a 2-layer pre-LN model (hidden 32) trained by the Trainer for 100 steps (checkpoints at 50 and 100) on a
templated corpus ("alice likes red apples and sings", ...) where a masked word is predictable from its context and
position, so that within a second the model learns something that ablations can take away. The WordPiece
vocabulary is trained once and passed as data.tokenizer.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from mini_bert.config import ModelConfig, load_config
from mini_bert.core.attention import attention_forward, mask_bias
from mini_bert.core.gradients import MiniBERTGradients
from mini_bert.core.model import MiniBERT
from mini_bert.analysis import dynamics as AD
from mini_bert.analysis import issues as AS
from mini_bert.training.checkpoint_utils import memory_report, synthetic_batch

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SENTENCES = ["alice likes red apples and sings", "bob eats green pears and runs", "carol buys yellow lemons and reads",
             "dave sells purple plums and swims", "erin cooks orange carrots and dances",
             "frank grows white onions and sleeps"]


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, make_tiny_run) -> Path:
    return make_tiny_run(tmp_path_factory.mktemp("tools"), max_steps=100, checkpoint_every=50, eval_every=50)


@pytest.fixture(scope="module")
def analyzer(run_dir):
    from mini_bert.analysis.training_analyzer import TrainingAnalyzer

    return TrainingAnalyzer(run_dir, max_batches=2)


def tiny_config(**kw) -> ModelConfig:
    base = dict(vocab_size=64, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32,
                max_position_embeddings=16)
    return ModelConfig(**{**base, **kw})


# ----------------------------------------------------------------------------------------------------------------
# TrainingAnalyzer


@pytest.mark.parametrize("mode", ["mean", "zero"])
def test_ablation_at_zero_scale_is_the_normal_loss(analyzer, mode):
    res = analyzer.loss_components(mode=mode, scale=0.0)
    assert res["steps"] == [50, 100]
    for c in res["components"]:
        assert res["ablated_loss"][c] == res["baseline_loss"], c
    # the baseline is the run's own held-out loss: the same fixed validation batches the trainer evaluated
    logged = {e["step"]: e["valid_loss"] for e in analyzer.history() if "valid_loss" in e}
    assert res["baseline_loss"] == pytest.approx([logged[50], logged[100]], rel=1e-9)


@pytest.mark.parametrize("mode", ["mean", "zero"])
def test_removing_everything_raises_the_loss(analyzer, mode):
    res = analyzer.loss_components(mode=mode, scale=1.0)
    assert set(res["components"]) == {"position_embeddings", "attention_0", "ffn_0", "attention_1", "ffn_1", "all"}
    assert min(res["loss_increase"]["all"]) > 0.5        # the templates are learned: ~1.5 nats, ablated ~3.5+


def test_ablation_replaces_the_component_output_by_its_mean(analyzer):
    from mini_bert.analysis.training_analyzer import ablate, component_means

    model = analyzer.checkpoint(100).model
    batches = analyzer.validation_batches()
    means = component_means(model, batches)
    b = batches[0]
    _, cache = model.encode(b.input_ids, b.attention_mask, b.token_type_ids)
    attn_in = cache["layers"][1]["attn"]["x"]                      # LN1(x) of layer 1: the attention's input
    real = b.attention_mask.astype(bool)

    bias = mask_bias(b.attention_mask, model.dtype)

    def out(m):                                                     # layer 1's attention output, (B, T, D)
        p = m.store                                                 # fused W_QKV blocks by name
        return attention_forward(attn_in, p["W_QKV_1"], p["b_QKV_1"], p["W_O_1"], p["b_O_1"], 2, bias)[0]

    original = out(model)
    mean_ablated = out(ablate(model, ["attention_1"], "mean", 1.0, means))
    np.testing.assert_allclose(mean_ablated, np.broadcast_to(means["attention_1"], mean_ablated.shape), atol=1e-6)
    assert not out(ablate(model, ["attention_1"], "zero", 1.0)).any()
    np.testing.assert_allclose(out(ablate(model, ["attention_1"], "zero", 0.5)), 0.5 * original, rtol=1e-5, atol=1e-7)
    # the mean is taken over the real tokens of the batches (one batch here), padding left out
    one = component_means(model, batches[:1])["attention_1"]
    np.testing.assert_allclose(one, original[real].astype(np.float64).mean(0), rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="unknown component"):
        ablate(model, ["attention_7"], "zero")
    with pytest.raises(ValueError, match="component_means"):
        ablate(model, ["ffn_0"], "mean")


def test_parameter_update_table_matches_weight_evolution(analyzer):
    res = analyzer.analyze_parameter_updates()
    states = [analyzer.initial_state()] + [analyzer.checkpoint(s).model.state_dict() for s in (50, 100)]
    evo = AD.analyze_weight_evolution(states, [0, 50, 100])
    assert res["steps"] == [0, 50, 100] and res["intervals"] == [(0, 50), (50, 100)]
    assert list(res["groups"]) == list(evo["groups"]) == ["embeddings", "layer_0", "layer_1", "head"]
    for g in evo["groups"]:
        np.testing.assert_array_equal(res["groups"][g]["relative_update"], evo["groups"][g]["relative_update"])
        assert [row[g] for row in res["table"]] == list(evo["groups"][g]["relative_update"])
    for row in res["table"]:
        assert row["fastest_group"] == max(evo["groups"], key=lambda g: row[g])
    # the rebuilt step-0 weights are the trainer's initialisation: its first checkpoint moved away from them
    assert all(v > 0 for v in res["table"][0].values() if isinstance(v, float))
    assert analyzer.analyze_parameter_updates(include_init=False)["intervals"] == [(50, 100)]


def test_detect_training_issues_reads_the_run_log(analyzer, run_dir, tmp_path):
    from mini_bert.analysis.training_analyzer import TrainingAnalyzer

    assert [str(i) for i in analyzer.detect_training_issues()] == \
        [str(i) for i in AS.detect_training_issues(analyzer.history())]
    # the same run with a log whose loss explodes halfway: the analyzer reports it
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    hist = [{"step": s, "train_loss": 3.0 - 0.01 * s if s < 50 else 3.0 + 0.2 * (s - 50), "lr": 1e-2,
             "grad_norm": 1.0 if s < 50 else 100.0} for s in range(1, 101)]
    (copy / "metrics.jsonl").write_text("".join(json.dumps(h) + "\n" for h in hist))
    kinds = {i.kind for i in TrainingAnalyzer(copy).detect_training_issues()}
    assert {"divergence", "exploding_gradients"} <= kinds


def test_figures_and_summary(analyzer, tmp_path):
    paths = analyzer.plot_loss_components(tmp_path, mode="zero")
    numbers = json.loads(paths.json.read_text())
    assert paths.png.stat().st_size > 0 and numbers["mode"] == "zero" and numbers["steps"] == [50, 100]
    assert numbers["loss_increase"]["all"] == pytest.approx(analyzer.components_result["loss_increase"]["all"])
    analyzer.analyze_parameter_updates(output_dir=tmp_path)
    text = analyzer.summary(output_dir=tmp_path)
    assert (tmp_path / "weight_evolution.png").exists() and (tmp_path / "summary.md").read_text() == text
    for heading in ("## Issues", "## Parameter updates", "## Loss components"):
        assert heading in text
    assert "| 50 -> 100 |" in text and "| all |" in text
    json.loads((tmp_path / "summary.json").read_text())


def test_bad_input_is_explained(tmp_path, analyzer):
    from mini_bert.analysis.training_analyzer import TrainingAnalyzer

    with pytest.raises(FileNotFoundError, match="does not exist"):
        TrainingAnalyzer(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no step_"):
        TrainingAnalyzer(tmp_path)
    with pytest.raises(ValueError, match="mode"):
        analyzer.loss_components(mode="half")
    with pytest.raises(ValueError, match="scale"):
        analyzer.loss_components(scale=1.5)


# ----------------------------------------------------------------------------------------------------------------
# RepresentationAnalyzer


def test_representation_analyzer_compares_checkpoints(analyzer, tmp_path):
    from mini_bert.evaluation import metrics as M
    from mini_bert.analysis.representations import RepresentationAnalyzer

    early, late = analyzer.checkpoint(50), analyzer.checkpoint(100)
    ra = RepresentationAnalyzer(late.model, late.tokenizer)
    texts = SENTENCES[:3] + ["bob eats"]                                      # different lengths: padding
    ids, mask, tokens = ra.encode(texts)
    assert ids.shape[0] == 4 and int(mask.sum()) == sum(len(t) for t in tokens)
    geometry = ra.layer_geometry(texts)
    assert [g["layer"] for g in geometry] == [0, 1, 2] and all(g["n_tokens"] == int(mask.sum()) for g in geometry)
    states, _ = ra.hidden_states(texts)
    dims = ra.effective_dimensionality(texts)
    assert dims[2]["participation_ratio"] == M.compute_effective_dimensionality(states[2], mask)["participation_ratio"]
    same = ra.compare_with(late.model, texts)
    np.testing.assert_allclose(same["cka_same_layer"], 1.0, atol=1e-9)
    moved = ra.compare_with(early.model, texts)["cka_same_layer"]
    assert np.all((moved > 0) & (moved < 1 - 1e-6))
    summary = ra.report(texts, tmp_path, early.model, "step 50")
    assert "Compared with step 50" in summary.read_text() and (tmp_path / "checkpoint_similarity.png").exists()


# ----------------------------------------------------------------------------------------------------------------
# performance_analysis and memory_utils


def test_the_profiler_runs_the_models_own_step_and_times_every_stage():
    """Instrumented, the training step computes exactly what it computes untimed (float64, dropout on), and every
    stage the model runs is charged: each layer's attention, FFN and norms once forward and once backward."""
    from mini_bert.analysis.profiler import StageTimer, _as_batch, instrumented, training_step_fn
    from mini_bert.core import model as core_model
    from mini_bert.core.layers import ffn_forward

    for norm in ("pre", "post"):
        cfg = tiny_config(norm_position=norm, activation="gelu", dtype="float64")
        batch = _as_batch(synthetic_batch(cfg.vocab_size, 3, 12, seed=1))
        model, ref = MiniBERT(cfg, seed=0), MiniBERT(cfg, seed=0)
        (step, worker), (ref_step, ref_worker) = training_step_fn(model, batch), training_step_fn(ref, batch)
        timer = StageTimer()
        with instrumented(model, worker.grads, timer):
            loss = step(timer)
        assert loss == ref_step()
        np.testing.assert_array_equal(worker.grads.flat, ref_worker.grads.flat)
        np.testing.assert_array_equal(model.store.flat, ref.store.flat)     # the same AdamW update
        assert "embed" not in vars(model) and core_model.ffn_forward is ffn_forward         # wrappers removed
        expected = {"embeddings.forward", "embeddings.backward", "encoder.forward", "encoder.backward",
                    "mlm_head.forward", "mlm_head.backward", "loss", "optimizer"}
        expected |= {f"layer{l}.{part}.{way}" for l in range(cfg.num_layers) for part in ("attention", "ffn", "norms")
                     for way in ("forward", "backward")}
        assert set(timer.seconds) == expected and all(n == 1 for n in timer.calls.values())
        assert all(sec >= 0 for sec in timer.seconds.values())


def test_the_profiler_refuses_to_time_a_stage_the_model_no_longer_has(monkeypatch):
    from mini_bert.analysis.profiler import StageTimer, instrumented
    from mini_bert.core import model as core_model

    model = MiniBERT(tiny_config())
    monkeypatch.delattr(core_model, "ffn_forward")
    with pytest.raises(AttributeError, match="ffn_forward"):
        with instrumented(model, MiniBERTGradients(model), StageTimer()):
            pass
    assert "embed" not in vars(model)                   # what was wrapped before the failure is undone


def test_performance_analysis_times_and_counts_flops():
    from mini_bert.analysis.profiler import profile_training_step, stage_flops

    cfg = tiny_config(activation="gelu", norm_position="pre")
    B, T = 2, 8
    r = profile_training_step(cfg, B, T, repeats=1)
    names = [s["name"] for s in r["stages"]]
    assert names[0] == "embeddings.forward" and names[-1] == "optimizer" and "encoder.backward" in names
    assert all(s["seconds"] >= 0 for s in r["stages"]) and r["untimed_step_seconds"] > 0
    assert r["total_seconds"] <= r["timed_step_seconds"]
    assert 0 <= r["blas_share"] <= 1 and all(0 <= s["blas_share"] <= 1 for s in r["stages"])
    D, F, V, N = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size, r["masked_tokens"]
    flops = {s["name"]: s["flops"] for s in r["stages"]}
    hand = {"attention.forward": 8 * B * T * D * D + 4 * B * T * T * D, "ffn.forward": 4 * B * T * D * F}
    for l in range(cfg.num_layers):
        for stage, f in hand.items():
            assert flops[f"layer{l}.{stage}"] == f
            assert flops[f"layer{l}.{stage.replace('forward', 'backward')}"] == 2 * f
        assert flops[f"layer{l}.norms.forward"] == 0
    assert flops["mlm_head.forward"] == 2 * N * D * D + 2 * N * D * V
    assert flops["mlm_head.backward"] == 2 * flops["mlm_head.forward"]
    assert flops["embeddings.backward"] == flops["optimizer"] == 0
    assert r["total_flops"] == sum(stage_flops(cfg, B, T, N).values())
    with pytest.raises(ValueError, match="max_position_embeddings"):
        profile_training_step(cfg, B, 64)


def test_memory_breakdown_measures_the_real_buffers():
    from mini_bert.analysis.memory import memory_breakdown

    cfg = tiny_config()
    b = memory_breakdown(cfg, batch_size=2, seq_len=8, threads=2)
    rows = {r["name"]: r["bytes"] for r in b["rows"]}
    P = MiniBERT(cfg).num_parameters
    assert b["num_parameters"] == P and rows["parameters"] == 4 * P
    assert rows["gradients"] == 2 * 4 * P and rows["optimizer_state"] == 2 * 4 * P
    assert rows["optimizer_workspace"] == 3 * 4 * P
    assert rows["activations"] == memory_report(MiniBERT(cfg), synthetic_batch(64, 2, 8))["full_cache_bytes"]
    assert b["total_bytes"] == sum(rows.values())
    # a RunConfig brings its optimizer: Lion keeps one moment (m) where AdamW keeps two
    lion = load_config(None, [f"model.{k}={v}" for k, v in cfg.model_dump().items()] + ["training.optimizer=lion"])
    lion_rows = {r["name"]: r["bytes"] for r in memory_breakdown(lion, 2, 8)["rows"]}
    assert lion_rows["optimizer_state"] == 4 * P and lion_rows["parameters"] == 4 * P
    seg = {r["name"]: r["bytes"] for r in memory_breakdown(cfg, 2, 8, segments=2)["rows"]}
    assert seg["activations"] < rows["activations"]
    with pytest.raises(ValueError, match="threads"):
        memory_breakdown(cfg, 2, 8, threads=0)


# ----------------------------------------------------------------------------------------------------------------
# Scripts and examples: each runs (tiny settings) or at least parses its arguments


TINY_MODEL = ["model.vocab_size=64", "model.hidden_size=16", "model.num_layers=1", "model.num_heads=2",
              "model.intermediate_size=32"]


def commands(run: Path, out: Path) -> dict[str, list[str]]:
    return {
        "train_model": ["scripts/train_model.py", "--help"],
        "evaluate_model": ["scripts/evaluate_model.py", "--help"],
        "run_probes": ["scripts/run_probes.py", "--help"],
        "analyze_training": ["scripts/analyze_training.py", str(run), "--output-dir", str(out), "--mode", "zero"],
        "analysis_report": ["scripts/analysis_report.py", str(run), "--output-dir", str(out), "--batches", "1"],
        "interactive_explore": ["scripts/interactive_explore.py", "--checkpoint", str(run), "--text",
                                "bob eats [MASK] pears"],
        "performance_analysis": ["-m", "mini_bert", "profile", "--batch", "2", "--seq", "8",
                                 "--repeats", "1", *TINY_MODEL],
        "memory_utils": ["-m", "mini_bert", "memory", "--batch", "2", "--seq", "8", *TINY_MODEL],
        "fit_gelu_cdf": ["scripts/fit_gelu_cdf.py"],
        "cupy_check": ["scripts/cupy_check.py"],
        "forward_pass": ["examples/basic_usage/forward_pass.py", "--hidden", "16"],
        "masked_prediction": ["examples/basic_usage/masked_prediction.py", "--checkpoint", str(run), "--text",
                              "carol buys [MASK] lemons"],
        "train_tiny_model": ["examples/basic_usage/train_tiny_model.py", "--steps", "3", "--lines", "300"],
        "custom_config": ["examples/advanced_usage/custom_config.py", "model.num_layers=2", "--batch", "2",
                          "--seq", "8"],
        "gradient_check_custom_op": ["examples/advanced_usage/gradient_check_custom_op.py", "--shape", "4"],
        "rope_model": ["examples/advanced_usage/rope_model.py", "--steps", "2"],
        "activation_checkpointing": ["examples/advanced_usage/activation_checkpointing.py", "--layers", "2",
                                     "--batch", "2", "--seq", "16"],
        "masking_ratio_sweep": ["examples/research_experiments/masking_ratio_sweep.py", "--steps", "2", "--lines",
                                "300", "--ratios", "0.15", "0.5"],
        "pre_vs_post_ln_gradients": ["examples/research_experiments/pre_vs_post_ln_gradients.py", "--layers", "2",
                                     "--steps", "1"],
    }


EXPECTED_OUTPUT = {"analyze_training": "## Parameter updates", "analysis_report": "logit-lens accuracy", "interactive_explore": "[MASK] at position 3",
                   "performance_analysis": "layer0.attention.backward", "memory_utils": "optimizer_state",
                   "forward_pass": "rows sum to", "fit_gelu_cdf": "math_ops.normal_cdf, float32: max |error|",
                   "cupy_check": "| MiniBERT forward + backward (MLM) | runs |", "masked_prediction": "position 3:", "train_tiny_model": "step",
                   "custom_config": "unknown key", "gradient_check_custom_op": "(OK)",
                   "rope_model": "E_pos gradient norm: 0.0",
                   "activation_checkpointing": "bit-identical: True", "masking_ratio_sweep": "0.50",
                   "pre_vs_post_ln_gradients": "pre-LN, 1 steps"}


@pytest.mark.parametrize("name", sorted(commands(Path("run"), Path("out"))))
def test_script_or_example_runs(name, run_dir, tmp_path):
    argv = commands(run_dir, tmp_path)[name]
    proc = subprocess.run([sys.executable, *argv], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(argv)} failed:\n{proc.stderr[-3000:]}"
    expected = EXPECTED_OUTPUT.get(name, "usage:")
    assert expected in proc.stdout, f"{name}: {expected!r} not in its output:\n{proc.stdout[-2000:]}"


def test_every_script_and_example_is_covered():
    files = {p.stem for p in (REPO / "scripts").glob("*.py")} | {p.stem for p in (REPO / "examples").rglob("*.py")}
    assert files <= set(commands(Path("run"), Path("out")))


def test_analyze_writes_beside_the_run_so_a_resume_cannot_delete_it(run_dir):
    """A run folder holds only what the trainer writes: `--resume` replaces best/ and prunes step checkpoints."""
    from mini_bert import cli
    from mini_bert.analysis.report import default_output_dir

    assert default_output_dir(run_dir) == run_dir.parent / f"{run_dir.name}-analysis"
    assert default_output_dir(run_dir / "best") == run_dir.parent / f"{run_dir.name}-analysis" / "best"
    before = sorted(p.name for p in run_dir.iterdir())
    assert cli.main(["analyze", "--checkpoint", str(run_dir / "best"), "--what", "attention"]) == 0
    assert sorted(p.name for p in run_dir.iterdir()) == before
    assert (run_dir.parent / f"{run_dir.name}-analysis" / "best" / "summary.md").is_file()


def test_the_analyzer_reads_a_run_with_a_torn_last_metrics_line(run_dir, tmp_path):
    """What a crash leaves (half a JSON line) is skipped, as the trainer's --resume drops it, not an error."""
    from mini_bert.analysis.training_analyzer import TrainingAnalyzer, read_metrics

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    whole = read_metrics(copy)[0]
    with open(copy / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 101, "train_lo')
    assert read_metrics(copy) == (whole, 1)
    assert TrainingAnalyzer(copy, max_batches=2).history() == whole
