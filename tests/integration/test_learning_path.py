"""The learner-facing side: the notes' learning-path snippets, the demos, the two reference documents, the notebooks.

The snippets (roadmap "Week 1: Foundation Understanding", "Week 2", "Week 3") are kept verbatim below except for
their import lines, and run as `python -c` would run them: in a fresh interpreter, from the repository root.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import mini_bert
from mini_bert import MiniBERT, ModelConfig
from mini_bert.core import describe_cache
from mini_bert.core.parameters import parameter_specs
from mini_bert.training.optimizer import decay_mask

REPO = Path(mini_bert.__file__).resolve().parents[1]
DOCS = REPO / "docs"
GUIDE = DOCS / "MATHEMATICAL_GUIDE.md"
MODEL_DOC = DOCS / "MODEL.md"
NOTEBOOKS = ["01_understanding_attention", "02_gradient_flow_analysis", "03_training_dynamics",
             "04_representation_analysis", "05_advanced_techniques"]
ROADMAP = REPO.parent / "shared" / "seed" / "mini_bert_roadmap.md"

# The notes' imports -> the package's. Nothing else in the snippets is changed.
IMPORTS = {
    "from model import MiniBERT": "from mini_bert import MiniBERT",
    "from gradients import MiniBERTGradients": "from mini_bert import MiniBERTGradients",
    "from mlm import mask_tokens, mlm_cross_entropy": "from mini_bert import mask_tokens, mlm_cross_entropy",
}

WEEK1_FORWARD = """
from mini_bert import MiniBERT
import numpy as np

model = MiniBERT()
input_ids = np.array([[2, 5, 6, 7, 3]])  # [CLS] tokens [SEP]
logits, cache = model.forward(input_ids)

print('Input shape:', input_ids.shape)
print('Output shape:', logits.shape)
print('Cache keys:', list(cache.keys()))
"""

WEEK2_ATTENTION = """
from mini_bert import MiniBERT
import numpy as np

model = MiniBERT()
# Create test input
x = np.random.randn(1, 8, 192)  # [batch=1, seq=8, hidden=192]

# Extract attention computation step by step
attn_output, attn_cache = model._multi_head_attention(x, layer=0)
print('Attention input:', x.shape)
print('Q, K, V shapes:', attn_cache['Q'].shape, attn_cache['K'].shape, attn_cache['V'].shape)
print('Attention weights shape:', attn_cache['attention_weights'].shape)
print('Context shape:', attn_cache['context'].shape)
"""

WEEK2_GRADIENTS = """
from mini_bert import MiniBERT
from mini_bert import MiniBERTGradients
import numpy as np

model = MiniBERT()
grad_computer = MiniBERTGradients(model)

# Trace gradient computation
input_ids = np.random.randint(5, 100, (2, 8))
logits, cache = model.forward(input_ids)

# Analyze gradients
grad_computer.zero_gradients()
dummy_grad = np.random.randn(*logits.shape) * 0.01
grad_computer.backward_from_logits(dummy_grad, cache)

print('Gradients computed for:', len(grad_computer.gradients), 'parameters')
for name, grad in grad_computer.gradients.items():
    if np.any(grad):
        print(f'{name}: {grad.shape}, norm={np.linalg.norm(grad):.4f}')
"""

WEEK3_GRADIENT_ANALYSIS = """
from mini_bert import MiniBERT
from mini_bert import MiniBERTGradients
from mini_bert import mask_tokens, mlm_cross_entropy
import numpy as np

model = MiniBERT()
grad_computer = MiniBERTGradients(model)

# Create consistent test batch
np.random.seed(42)
batch = np.random.randint(5, 100, (4, 16))

# Analyze gradient magnitudes across layers
input_ids, target_ids, mask_pos = mask_tokens(batch, 1000, 4, 0.15)
logits, cache = model.forward(input_ids)
loss, grad_logits = grad_computer.compute_mlm_loss_and_gradients(logits, target_ids, mask_pos)

grad_computer.zero_gradients()
grad_computer.backward_from_logits(grad_logits, cache)

print('Gradient analysis:')
for layer in range(3):
    q_grad = grad_computer.gradients[f'W_Q_{layer}']
    ffn_grad = grad_computer.gradients[f'W1_{layer}']
    print(f'Layer {layer}: Q_grad_norm={np.linalg.norm(q_grad):.4f}, FFN_grad_norm={np.linalg.norm(ffn_grad):.4f}')
"""

SNIPPETS = {"week1_forward": WEEK1_FORWARD, "week2_attention": WEEK2_ATTENTION,
            "week2_gradients": WEEK2_GRADIENTS, "week3_gradient_analysis": WEEK3_GRADIENT_ANALYSIS}


def run_python(code: str, *args: str) -> str:
    """Run `python -c code` (or `python -m ...` via args) from the repository root; return stdout, fail on error."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    cmd = [sys.executable, *args] if args else [sys.executable, "-c", code]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(cmd[:3])} failed:\n{proc.stderr[-3000:]}"
    return proc.stdout


def line_after(output: str, prefix: str) -> str:
    lines = [ln for ln in output.splitlines() if ln.startswith(prefix)]
    assert len(lines) == 1, f"expected one line starting with {prefix!r} in:\n{output}"
    return lines[0][len(prefix):].strip()


# --------------------------------------------------------------------------------------------------------------
# The snippets


@pytest.mark.parametrize("name", list(SNIPPETS))
def test_snippet_is_the_notes_text_with_package_imports(name):
    """Guards the 'verbatim' promise: undo the import rewrite and the text must occur in the notes."""
    if not ROADMAP.is_file():
        pytest.skip(f"the notes are not at {ROADMAP}")
    to_notes = {package_import: notes_import for notes_import, package_import in IMPORTS.items()}
    original = "\n".join(to_notes.get(line, line) for line in SNIPPETS[name].split("\n"))
    assert original.strip("\n") in ROADMAP.read_text(encoding="utf-8"), f"snippet {name} differs from the notes"


def test_week1_forward_pass_snippet():
    out = run_python(WEEK1_FORWARD)
    cfg = ModelConfig()
    assert line_after(out, "Input shape:") == "(1, 5)"
    assert line_after(out, "Output shape:") == str((1, 5, cfg.vocab_size))
    keys = ast.literal_eval(line_after(out, "Cache keys:"))
    # What the backward pass reads, and what the analysis tools read.
    assert {"input_ids", "token_type_ids", "layers", "emb_drop", "mlm_head"} <= set(keys)
    assert {"hidden_states", "attention_weights"} <= set(keys)
    documented = set(re.findall(r"`([\w{}.]+)`", MODEL_DOC.read_text(encoding="utf-8")))
    assert not set(keys) - documented, f"docs/MODEL.md does not describe {sorted(set(keys) - documented)}"


def test_week2_attention_snippet():
    out = run_python(WEEK2_ATTENTION)
    cfg = ModelConfig()
    qkv = str((1, cfg.num_heads, 8, cfg.head_dim))
    assert line_after(out, "Attention input:") == "(1, 8, 192)"
    assert line_after(out, "Q, K, V shapes:") == f"{qkv} {qkv} {qkv}"
    assert line_after(out, "Attention weights shape:") == str((1, cfg.num_heads, 8, 8))
    assert line_after(out, "Context shape:") == str((1, 8, cfg.hidden_size))


def test_week2_float64_input_to_float32_model_matches_float32_input():
    """The Week 2 snippet feeds float64 x (np.random.randn) to the float32 model: the result must be the same."""
    model = MiniBERT()
    x64 = np.random.default_rng(0).standard_normal((1, 8, model.config.hidden_size))
    out64, c64 = model._multi_head_attention(x64, layer=0)
    out32, c32 = model._multi_head_attention(x64.astype(np.float32), layer=0)
    assert np.isfinite(out64).all()
    np.testing.assert_allclose(out64, out32, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(c64["attention_weights"].sum(-1), 1.0, atol=1e-6)


def test_week2_gradients_snippet():
    out = run_python(WEEK2_GRADIENTS)
    model = MiniBERT()
    assert int(line_after(out, "Gradients computed for:").split()[0]) == len(model.params)
    printed = {}
    for ln in out.splitlines()[1:]:
        m = re.fullmatch(r"(\w+): (\(.*\)), norm=([-\d.e+naif]+)", ln)
        assert m, f"unexpected line {ln!r}"
        printed[m[1]] = (ast.literal_eval(m[2]), float(m[3]))
    for name, (shape, norm) in printed.items():
        assert shape == model.params[name].shape, name
        assert np.isfinite(norm), f"{name} has a non-finite gradient norm"
    not_on_mlm_path = {"W_pool", "b_pool", "W_cls", "b_cls"}
    assert not (not_on_mlm_path & set(printed)), "the MLM loss must not reach the pooler/classifier"
    # Everything else gets a gradient; b_K only gets rounding noise (softmax ignores it), so it may or may not print.
    expected = {n for n in model.params if n not in not_on_mlm_path and not n.startswith("b_K_")}
    assert expected <= set(printed), f"no gradient for {sorted(expected - set(printed))}"


def test_week3_gradient_analysis_snippet():
    out = run_python(WEEK3_GRADIENT_ANALYSIS)
    assert "Gradient analysis:" in out
    for layer in range(ModelConfig().num_layers):
        m = re.search(rf"^Layer {layer}: Q_grad_norm=([\d.]+), FFN_grad_norm=([\d.]+)$", out, re.M)
        assert m, f"no line for layer {layer} in:\n{out}"
        q, ffn = float(m[1]), float(m[2])
        assert 0 < q < 1e3 and 0 < ffn < 1e3


# --------------------------------------------------------------------------------------------------------------
# The demos


def test_model_demo(capsys):
    from mini_bert.analysis.demos import model_demo

    r = model_demo()
    out = capsys.readouterr().out
    cfg = ModelConfig()
    assert r["logits_shape"] == (1, 5, cfg.vocab_size)
    assert r["masked_logits_shape"] == (1, cfg.vocab_size)
    assert sum(r["groups"].values()) == r["num_parameters"] == sum(s.size for s in parameter_specs(cfg))
    assert f"{r['num_parameters']:,}" in out
    assert "layers.0.attn.attention_weights" in out and "Cache keys:" in out


def test_attention_demo(capsys):
    from mini_bert.analysis.demos import attention_demo

    r = attention_demo()
    capsys.readouterr()
    cfg = ModelConfig()
    assert r["Q_shape"] == r["K_shape"] == r["V_shape"] == (1, cfg.num_heads, 8, cfg.head_dim)
    assert r["weights_shape"] == (1, cfg.num_heads, 8, 8)
    assert r["row_sum_error"] < 1e-5
    assert r["by_hand_error"] < 1e-5
    assert r["padded_weight_max"] == 0.0
    assert r["all_finite"] and r["all_padding_uniform_error"] < 1e-6


def test_gradients_demo(capsys):
    from mini_bert.analysis.demos import gradients_demo

    r = gradients_demo()
    out = capsys.readouterr().out
    assert len(r["layer_norms"]) == ModelConfig().num_layers
    for row in r["layer_norms"]:
        assert all(np.isfinite(v) and v > 0 for v in row.values())
    assert r["zero_gradient"] == ["W_pool", "b_pool", "W_cls", "b_cls"]
    smallest_q = min(row["W_Q"] for row in r["layer_norms"])
    assert r["b_K_max"] < 1e-4 * smallest_q, "dL/db_K should be rounding noise"
    assert len(r["checks"]) >= 8
    bad = [c for c in r["checks"] if not c["relative_error"] < 1e-5]
    assert not bad, f"finite differences disagree with the backward pass: {bad}"
    assert "worst relative error" in out


def test_relative_error():
    from mini_bert.analysis.demos import relative_error

    assert relative_error(1.0, 1.0 + 1e-9) == pytest.approx(1e-9, rel=1e-3)
    assert relative_error(-2e-3, 2e-3) == pytest.approx(2.0)
    assert relative_error(0.0, 0.0) == 0.0


@pytest.mark.parametrize("name", ["model", "attention", "gradients", "mlm", "optimizer", "optimizers",
                                  pytest.param("checkpointing", marks=pytest.mark.slow), "variants"])
def test_minibert_demo_runs_each_learning_path_step(name):
    out = run_python("", "-m", "mini_bert", "demo", name)
    assert len(out.splitlines()) > 3, out


# --------------------------------------------------------------------------------------------------------------
# The documents


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (except - and _), spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(text: str) -> set[str]:
    return {_slug(m[1]) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def test_every_section_the_code_cites_exists_in_the_guide():
    def headings_of(doc):
        return {m[1].strip() for m in re.finditer(r"^#{2,3} (.+)$", doc.read_text(encoding="utf-8"), re.M)}

    headings = headings_of(GUIDE)
    variant_headings = headings_of(REPO / "docs" / "VARIANTS.md")
    cited, cited_variants = set(), set()
    for py in (REPO / "mini_bert").rglob("*.py"):
        text = py.read_text(encoding="utf-8")
        cited |= set(re.findall(r'(?<!VARIANTS\.md, )section "([^"]+)"', text))
        cited_variants |= set(re.findall(r'VARIANTS\.md, section "([^"]+)"', text))
    assert not cited_variants - variant_headings, f"VARIANTS.md lacks {sorted(cited_variants - variant_headings)}"
    required = {"Softmax", "Cross-entropy", "ReLU", "GELU", "Tanh pooler", "Dropout", "Linear", "LayerNorm",
                "Embeddings", "Attention", "Encoder layer", "MLM head and tied decoder", "Pooler and classifier",
                "AdamW", "Gradient checking"}
    assert cited, "no backward docstring cites the guide any more?"
    assert not (cited | required) - headings, f"guide lacks sections {sorted((cited | required) - headings)}"


@pytest.mark.parametrize("doc", [GUIDE, MODEL_DOC], ids=lambda p: p.name)
def test_links_and_math_delimiters(doc):
    text = doc.read_text(encoding="utf-8")
    for target_file, anchor in re.findall(r"\]\(([\w.]*)#([\w\-]+)\)", text):
        target = (doc.parent / target_file).read_text(encoding="utf-8") if target_file else text
        assert anchor in _anchors(target), f"{doc.name}: link to #{anchor} in {target_file or doc.name} is broken"
    outside_code = re.sub(r"```.*?```", "", text, flags=re.S)
    assert outside_code.count("$$") % 2 == 0, f"{doc.name}: unbalanced $$"


def _generic(name: str) -> str:
    return re.sub(r"_\d+$", "_{l}", name)


def test_model_doc_lists_every_parameter_with_its_kind_and_decay():
    text = MODEL_DOC.read_text(encoding="utf-8")
    model = MiniBERT()
    for name in model.params:
        assert f"`{_generic(name)}`" in text, f"docs/MODEL.md does not list {_generic(name)}"
    assert f"{model.num_parameters:,}" in text
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0].startswith("`"):
            rows[cells[0].strip("`")] = cells
    store = model.store
    mask = decay_mask(store)
    for spec in store.specs:
        row = rows.get(_generic(spec.name))
        assert row is not None, f"no table row for block {_generic(spec.name)}"
        assert row[3] == str(spec.shape) and row[4] == spec.kind, f"{spec.name}: {row}"
        assert row[5] == ("yes" if mask[store.slices[spec.name]][0] else "no"), f"{spec.name}: decay column"


def test_model_doc_names_the_variant_parameters_and_totals():
    text = MODEL_DOC.read_text(encoding="utf-8")
    for change in ({"norm_position": "pre"}, {"tie_word_embeddings": False}, {"embedding_layer_norm": False}):
        specs = parameter_specs(ModelConfig(**change))
        for s in specs:
            assert f"`{_generic(s.name)}`" in text, f"{change}: {s.name} not documented"
        assert f"{sum(s.size for s in specs):,}" in text, f"{change}: total not documented"


def test_model_doc_describes_every_cache_entry():
    text = MODEL_DOC.read_text(encoding="utf-8")
    documented = set(re.findall(r"`([\w{}.]+)`", text))
    ids = np.array([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]])
    mask = (ids != 0).astype(np.int64)
    missing = set()
    for change in ({}, {"norm_position": "pre", "activation": "gelu"}, {"activation": "gelu_tanh"}):
        cfg = ModelConfig(vocab_size=50, hidden_size=8, num_heads=2, intermediate_size=16, num_layers=2, **change)
        model = MiniBERT(cfg)
        caches = [model.forward(ids, mask, training=True, masked_positions=ids == 6)[1],
                  model.forward_classifier(ids, mask, training=True)[1]]
        for cache in caches:
            for key in describe_cache(cache):
                key = re.sub(r"^layers\.\d+\.", "layers.{l}.", key)
                key = re.sub(r"^hidden_states\.\d+$", "hidden_states.{i}", key)
                key = re.sub(r"^attention_weights\.\d+$", "attention_weights.{l}", key)
                if key not in documented:
                    missing.add(key)
    assert not missing, f"docs/MODEL.md does not describe cache entries {sorted(missing)}"


# --------------------------------------------------------------------------------------------------------------
# The notebooks: stored clean and valid (test_notebooks.py executes them)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_valid_and_clean(name):
    path = REPO / "notebooks" / f"{name}.ipynb"
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert nb["nbformat"] == 4 and isinstance(nb["cells"], list)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and any(c["cell_type"] == "markdown" for c in nb["cells"])
    for i, cell in enumerate(code):
        src = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        try:
            ast.parse(src)
        except SyntaxError as e:
            pytest.fail(f"{name}: code cell {i} does not compile: {e}")
        assert cell.get("outputs") == [] and cell.get("execution_count") is None, f"{name}: cell {i} has outputs"
    assert any("mini_bert" in "".join(c["source"]) for c in code), f"{name} does not use the package"
    guide_anchors = _anchors(GUIDE.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        for anchor in re.findall(r"MATHEMATICAL_GUIDE\.md#([\w\-]+)", "".join(cell["source"])):
            assert anchor in guide_anchors, f"{name}: link to guide section #{anchor} is broken"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_schema(name):
    nbformat = pytest.importorskip("nbformat")
    nbformat.validate(nbformat.read(REPO / "notebooks" / f"{name}.ipynb", as_version=4))
