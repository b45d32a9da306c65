"""Hugging Face BERT checkpoints: read a folder (config.json + model.safetensors + vocab.txt) into a MiniBERT, and
write a MiniBERT back out in the same layout.

    model = MiniBERT.from_pretrained("path/to/all-MiniLM-L6-v2")          # MiniBERT, post-LN, weights from the checkpoint
    tok = load_pretrained_tokenizer("path/to/all-MiniLM-L6-v2")  # the checkpoint's own WordPiece vocabulary
    save_pretrained(model, "out/")                                 # transformers.BertModel.from_pretrained reads it

Two layouts meet here. Hugging Face stores nn.Linear weights as (out, in), with separate query/key/value matrices;
MiniBERT stores (in, out), with Q | K | V the column blocks of one fused (D, 3D) matrix. Every linear weight is
therefore transposed on the way in and out; the embedding tables ((rows, D) in both) and the vectors are copied.

The name table (`hf_name_map`), with l the layer and the optional "bert." prefix dropped:

    embeddings.word_embeddings.weight              E_token              (V, D)
    embeddings.position_embeddings.weight          E_pos                (P, D)
    embeddings.token_type_embeddings.weight        E_type               (S, D)
    embeddings.LayerNorm.{weight,bias}             ln_emb_{gamma,beta}  (D,)     (old files: gamma / beta)
    encoder.layer.l.attention.self.query.*         W_Q_l^T, b_Q_l       (same for key -> K, value -> V)
    encoder.layer.l.attention.output.dense.*       W_O_l^T, b_O_l
    encoder.layer.l.attention.output.LayerNorm.*   ln1_{gamma,beta}_l
    encoder.layer.l.intermediate.dense.*           W1_l^T, b1_l         (F, D) -> (D, F)
    encoder.layer.l.output.dense.*                 W2_l^T, b2_l
    encoder.layer.l.output.LayerNorm.*             ln2_{gamma,beta}_l
    pooler.dense.*                                 W_pool^T, b_pool
    cls.predictions.transform.dense.*              W_mlm^T, b_mlm
    cls.predictions.transform.LayerNorm.*          ln_mlm_{gamma,beta}
    cls.predictions.bias                           b_decoder            (decoder.weight is the tied E_token)
    classifier.*                                   W_cls^T, b_cls       (BertForSequenceClassification)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..errors import CheckpointError, MissingFileError
from ..config import ModelConfig

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"   # a checkpoint split into shards
VOCAB_FILE = "vocab.txt"

# Hugging Face `hidden_act` -> MiniBERT activation. "gelu" in HF is the exact erf form; the tanh approximation
# appears under several names.
HF_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                  "gelu_fast": "gelu_tanh"}

# Checkpoint entries that carry no parameter of this model and are skipped without a warning: a buffer of
# position indices, and the decoder matrix that is a copy of the word embeddings when the two are tied.
_NOT_PARAMETERS = ("embeddings.position_ids",)
_TIED_DECODER = "cls.predictions.decoder.weight"


# ------------------------------------------------------------------------------------------------------------------
# Config


def config_from_hf(hf: dict, dtype: str = "float32") -> ModelConfig:
    """A ModelConfig from the fields of a Hugging Face BERT config.json (post-LN with an embedding LayerNorm, as
    BERT is). Raises ValueError for architectures this model cannot reproduce."""
    model_type = hf.get("model_type", "bert")
    if model_type != "bert":
        raise CheckpointError(f"{CONFIG_FILE} describes a {model_type!r} model; only BERT checkpoints (model_type "
                         "'bert') share this architecture and parameter names")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(f"position_embedding_type={hf['position_embedding_type']!r} is not supported; MiniBERT "
                         "has learned absolute position embeddings only")
    if hf.get("is_decoder") or hf.get("add_cross_attention"):
        raise CheckpointError("decoder / cross-attention BERT configs are not supported: MiniBERT is an encoder")
    act = hf.get("hidden_act", "gelu")
    if act not in HF_ACTIVATIONS:
        raise CheckpointError(f"hidden_act={act!r} has no MiniBERT equivalent; supported: {', '.join(HF_ACTIVATIONS)}")
    required = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")
    absent = [k for k in required if k not in hf]
    if absent:
        raise CheckpointError(f"{CONFIG_FILE} lacks {', '.join(absent)}; is it a BERT config?")
    num_labels = len(hf["id2label"]) if "id2label" in hf else hf.get("num_labels", 2)
    return ModelConfig(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        max_position_embeddings=hf.get("max_position_embeddings", 512),
        type_vocab_size=hf.get("type_vocab_size", 2),
        activation=HF_ACTIVATIONS[act],
        norm_position="post",
        embedding_layer_norm=True,
        dropout=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout=hf.get("attention_probs_dropout_prob", 0.1),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        initializer_range=hf.get("initializer_range", 0.02),
        dtype=dtype,
        tie_word_embeddings=hf.get("tie_word_embeddings", True),
        num_labels=num_labels,
    )


def config_to_hf(cfg: ModelConfig) -> dict:
    """The config.json of a BertModel with cfg's shape. Only BERT's own architecture can be written."""
    if cfg.norm_position != "post" or not cfg.embedding_layer_norm:
        raise CheckpointError("only post-LN models with an embedding LayerNorm have a Hugging Face BERT equivalent; "
                         f"this one has norm_position={cfg.norm_position!r}, "
                         f"embedding_layer_norm={cfg.embedding_layer_norm}")
    return {
        "architectures": ["BertForMaskedLM"],
        "model_type": "bert",
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        "type_vocab_size": cfg.type_vocab_size,
        "hidden_act": {"gelu": "gelu", "relu": "relu", "gelu_tanh": "gelu_pytorch_tanh"}[cfg.activation],
        "hidden_dropout_prob": cfg.dropout,
        "attention_probs_dropout_prob": cfg.attention_dropout,
        "layer_norm_eps": cfg.layer_norm_eps,
        "initializer_range": cfg.initializer_range,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "num_labels": cfg.num_labels,
        "pad_token_id": 0,
    }


# ------------------------------------------------------------------------------------------------------------------
# Names


def hf_name_map(cfg: ModelConfig) -> list[tuple[str, str, bool]]:
    """(Hugging Face name without "bert.", MiniBERT name, transpose) for every tensor the two share."""
    def linear(hf: str, w: str, b: str):
        return [(f"{hf}.weight", w, True), (f"{hf}.bias", b, False)]

    def norm(hf: str, gamma: str, beta: str):
        return [(f"{hf}.weight", gamma, False), (f"{hf}.bias", beta, False)]

    m = [
        ("embeddings.word_embeddings.weight", "E_token", False),
        ("embeddings.position_embeddings.weight", "E_pos", False),
        ("embeddings.token_type_embeddings.weight", "E_type", False),
        *norm("embeddings.LayerNorm", "ln_emb_gamma", "ln_emb_beta"),
    ]
    for l in range(cfg.num_layers):
        p = f"encoder.layer.{l}."
        m += [
            *linear(p + "attention.self.query", f"W_Q_{l}", f"b_Q_{l}"),
            *linear(p + "attention.self.key", f"W_K_{l}", f"b_K_{l}"),
            *linear(p + "attention.self.value", f"W_V_{l}", f"b_V_{l}"),
            *linear(p + "attention.output.dense", f"W_O_{l}", f"b_O_{l}"),
            *norm(p + "attention.output.LayerNorm", f"ln1_gamma_{l}", f"ln1_beta_{l}"),
            *linear(p + "intermediate.dense", f"W1_{l}", f"b1_{l}"),
            *linear(p + "output.dense", f"W2_{l}", f"b2_{l}"),
            *norm(p + "output.LayerNorm", f"ln2_gamma_{l}", f"ln2_beta_{l}"),
        ]
    m += [
        *linear("pooler.dense", "W_pool", "b_pool"),
        *linear("cls.predictions.transform.dense", "W_mlm", "b_mlm"),
        *norm("cls.predictions.transform.LayerNorm", "ln_mlm_gamma", "ln_mlm_beta"),
        ("cls.predictions.bias", "b_decoder", False),
        *linear("classifier", "W_cls", "b_cls"),
    ]
    if not cfg.tie_word_embeddings:
        m.append((_TIED_DECODER, "W_decoder", True))
    return m


def _canonical(name: str) -> str:
    """Drop the "bert." prefix of task models and rename TF-era LayerNorm.gamma / .beta to .weight / .bias."""
    if name.startswith("bert."):
        name = name[len("bert."):]
    if name.endswith("LayerNorm.gamma"):
        name = name[:-len("gamma")] + "weight"
    elif name.endswith("LayerNorm.beta"):
        name = name[:-len("beta")] + "bias"
    elif name == "cls.predictions.decoder.bias":       # some files store the decoder bias only under this name
        name = "cls.predictions.bias"
    return name


# ------------------------------------------------------------------------------------------------------------------
# Files


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise MissingFileError(f"{path} not found: a Hugging Face BERT folder needs {path.name} ({what})")
    return path


def _read_weights(folder: Path) -> dict[str, np.ndarray]:
    """Every tensor of model.safetensors (or of its shards, listed in model.safetensors.index.json)."""
    from safetensors.numpy import load_file

    single, index = folder / WEIGHTS_FILE, folder / WEIGHTS_INDEX_FILE
    if single.is_file():
        return load_file(str(single))
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        tensors: dict[str, np.ndarray] = {}
        for shard in shards:
            tensors.update(load_file(str(_require(folder / shard, "a shard named in " + WEIGHTS_INDEX_FILE))))
        return tensors
    hint = ""
    if (folder / "pytorch_model.bin").is_file():
        hint = (" The folder has pytorch_model.bin, a pickle this loader does not read; convert it once with "
                "transformers (`BertModel.from_pretrained(dir).save_pretrained(dir, safe_serialization=True)`).")
    raise MissingFileError(f"{single} not found: a Hugging Face BERT folder needs {WEIGHTS_FILE} (the weights)."
                            + hint)


def pretrained_config(path: str | Path, dtype: str = "float32") -> ModelConfig:
    """The ModelConfig of the Hugging Face BERT checkpoint in folder `path` (its config.json)."""
    folder = Path(path)
    if not folder.is_dir():
        raise MissingFileError(f"{folder} is not a folder: pass the directory that holds {CONFIG_FILE} and "
                               f"{WEIGHTS_FILE}")
    return config_from_hf(json.loads(_require(folder / CONFIG_FILE, "the model's hyper-parameters").read_text()),
                          dtype)


def load_pretrained_weights(model, path: str | Path):
    """Fill `model` (built from `pretrained_config(path)`) with the weights of the checkpoint in folder `path`.

    Reads model.safetensors; linear weights are transposed to (in, out). Tensors the checkpoint lacks (the MLM
    head of a plain BertModel, the classifier) keep their fresh initialisation: they are logged as a warning and
    listed in `model.missing_from_checkpoint`. Checkpoint tensors this model has no place for (e.g. BERT's
    next-sentence head) are logged and listed in `model.unused_from_checkpoint`. `MiniBERT.from_pretrained(path)`
    does both steps.

    Raises CheckpointError naming a missing file, a tensor whose shape disagrees with config.json (and both
    shapes), or a config this model cannot reproduce.
    """
    folder = Path(path)
    cfg = model.config
    tensors = {_canonical(k): v for k, v in _read_weights(folder).items()}
    loaded, missing = set(), []
    for hf_name, name, transpose in hf_name_map(cfg):
        if hf_name not in tensors:
            missing.append(name)
            continue
        value = tensors[hf_name].T if transpose else tensors[hf_name]
        target = model.params[name]
        if value.shape != target.shape:
            raise CheckpointError(
                f"checkpoint tensor {hf_name!r} has shape {tuple(tensors[hf_name].shape)}, but {CONFIG_FILE} implies "
                f"{tuple(target.T.shape if transpose else target.shape)} (MiniBERT {name} {tuple(target.shape)}): "
                "the weights and the config do not belong together")
        target[...] = value                                   # casts to the model's dtype
        loaded.add(hf_name)

    skip = set(_NOT_PARAMETERS) | ({_TIED_DECODER} if cfg.tie_word_embeddings else set())
    unused = sorted(k for k in tensors if k not in loaded and k not in skip)
    model.missing_from_checkpoint = missing
    model.unused_from_checkpoint = unused
    if missing:
        logger.warning("%s lacks %d tensors, which keep their random initialisation: %s", folder, len(missing),
                       ", ".join(missing))
    if unused:
        logger.warning("%s has %d tensors MiniBERT does not use: %s", folder, len(unused), ", ".join(unused))
    return model


def hf_state_dict(model) -> dict[str, np.ndarray]:
    """The model's weights under Hugging Face BertForMaskedLM names ("bert." prefix), (out, in) linear weights."""
    config_to_hf(model.config)                                # raises for architectures BERT does not have
    heads = ("cls.", "classifier.")
    out = {}
    for hf_name, name, transpose in hf_name_map(model.config):
        value = model.params[name]
        full = hf_name if hf_name.startswith(heads) else "bert." + hf_name
        out[full] = np.ascontiguousarray(value.T if transpose else value)
    return out


def save_pretrained(model, path: str | Path, vocab: list[str] | None = None) -> Path:
    """Write config.json and model.safetensors (and vocab.txt, given the tokens in id order) to folder `path`.

    `from_pretrained` reads it back exactly, and transformers' BertForMaskedLM / BertModel load it.
    Returns the folder.
    """
    from safetensors.numpy import save_file

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(config_to_hf(model.config), indent=2) + "\n")
    # "format": "pt" tells transformers the tensors follow PyTorch's layout (it checks this field).
    save_file(hf_state_dict(model), str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    if vocab is not None:
        if len(vocab) != model.config.vocab_size:
            raise CheckpointError(f"vocab has {len(vocab)} tokens but the model's vocab_size is {model.config.vocab_size}")
        (folder / VOCAB_FILE).write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return folder


# ------------------------------------------------------------------------------------------------------------------
# Tokenizer


def load_pretrained_tokenizer(path: str | Path):
    """The checkpoint's WordPiece tokenizer, from its vocab.txt (and do_lower_case in tokenizer_config.json).

    Returns a `tokenizers.BertWordPieceTokenizer`: `encode(text).ids` adds [CLS] ... [SEP] as BERT expects,
    `encode_batch`, `token_to_id("[MASK]")`. Its special-token ids are the checkpoint's own (bert-base and MiniLM:
    [PAD]=0 [UNK]=100 [CLS]=101 [SEP]=102 [MASK]=103), not mini_bert.config's fixed 0-4; that is why this is not
    a `mini_bert.data.tokenizer.WordPieceTokenizer`, which requires those fixed ids.
    """
    from tokenizers import BertWordPieceTokenizer

    folder = Path(path)
    vocab = folder if folder.is_file() else _require(folder / VOCAB_FILE, "the WordPiece vocabulary")
    lowercase = True
    config = vocab.parent / "tokenizer_config.json"
    if config.is_file():
        lowercase = bool(json.loads(config.read_text()).get("do_lower_case", True))
    return BertWordPieceTokenizer(str(vocab), lowercase=lowercase)
