"""Configuration: validated pydantic models, YAML files, and `key=value` overrides.

`minibert config [--config FILE] [key=value ...]` prints the resolved configuration.

Every section forbids unknown keys, so a typo in a YAML file or an override fails loudly with its path
(`training.lr: Input should be a valid number`), instead of being silently ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

# Special token ids. The learning-path snippets in the notes rely on these values
# (e.g. `mask_tokens(batch, vocab_size, 4, 0.15)` passes [MASK]=4).
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 1, 2, 3, 4
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

ACTIVATIONS = ("relu", "gelu", "gelu_tanh")
NORM_POSITIONS = ("pre", "post")


class _Strict(BaseModel):
    # every float must be finite: lr=inf or initializer_range=nan would only fail (or write NaN weights) later
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelConfig(_Strict):
    """The encoder's shape and numerics. Defaults follow the notes (vocab 8192, hidden 192, 3 layers, 4 heads, ReLU,
    post-LN, dropout 0.1); `pretraining_model()` is what `minibert train` builds (GELU, pre-LN, no dropout)."""

    vocab_size: int = Field(8192, ge=6)
    hidden_size: int = Field(192, ge=1)
    num_layers: int = Field(3, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(768, ge=1)
    max_position_embeddings: int = Field(128, ge=2)
    type_vocab_size: int = Field(2, ge=1)
    activation: str = "relu"
    norm_position: str = "post"
    embedding_layer_norm: bool = True
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    attention_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    layer_norm_eps: float = Field(1e-12, gt=0.0)
    initializer_range: float = Field(0.02, gt=0.0)
    # how E_pos starts (it is learned either way): N(0, initializer_range^2) like every embedding, or the
    # Transformer's sinusoids scaled to the same RMS, so that nearby positions start with similar vectors
    position_init: Literal["normal", "sinusoidal"] = "normal"
    dtype: Literal["float32", "float64"] = "float32"
    tie_word_embeddings: bool = True
    num_labels: int = Field(2, ge=1)
    classifier_pooling: Literal["cls", "mean"] = "cls"   # what the classifier's pooler reads: h_[CLS] or the token mean

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        # Raised as ValueError inside pydantic's ValidationError (itself a ValueError subclass).
        if self.hidden_size % self.num_heads:
            raise ConfigError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads}); "
                f"try num_heads in {[h for h in range(1, 17) if self.hidden_size % h == 0]}"
            )
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        if self.norm_position not in NORM_POSITIONS:
            raise ConfigError(
                f"unknown norm_position {self.norm_position!r}; choose one of {', '.join(NORM_POSITIONS)}"
            )
        return self

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads


# ----------------------------------------------------------------------------------------------------------------
# data.corpus: one corpus, or a mixture with weights


@dataclass(frozen=True)
class Component:
    name: str              # a key of CORPORA, or a path
    weight: float | None   # share of the training rows; None: a single corpus, or sizes as they come


def parse_corpus(spec: str) -> list[Component]:
    """"imdb" -> [imdb]; "imdb:0.7,brown:0.3" -> [imdb 0.7, brown 0.3]. Raises ConfigError on a weight that is not a
    positive number, weights on only some parts, weights not summing to 1, or a corpus named twice. Names are not
    resolved here (a path is checked when it is read)."""
    parts = [p.strip() for p in str(spec).split(",")]
    if not all(parts):
        raise ConfigError(f"data.corpus={spec!r} has an empty part; write e.g. imdb or imdb:0.7,brown:0.3")
    components = []
    for part in parts:
        name, sep, raw = part.rpartition(":")
        weight = None
        if sep and name and not raw.startswith(("/", "\\")):
            try:
                weight = float(raw)
            except ValueError:
                name = part          # a colon that is not a weight (a path such as C:\\corpus)
        else:
            name = part
        if weight is not None and not (math.isfinite(weight) and weight > 0):
            raise ConfigError(f"data.corpus={spec!r}: the weight of {name!r} is {raw}; weights are the corpora's "
                            f"shares of the training rows and must be positive numbers, e.g. imdb:0.7,brown:0.3")
        components.append(Component(name, weight))
    names = [c.name for c in components]
    if len(set(names)) != len(names):
        raise ConfigError(f"data.corpus={spec!r} names {sorted({n for n in names if names.count(n) > 1})} more than "
                        f"once; give each corpus once with its total weight")
    weights = [c.weight for c in components]
    if len(components) > 1 or weights[0] is not None:
        if any(w is None for w in weights):
            raise ConfigError(f"data.corpus={spec!r}: give every corpus of a mixture a weight (name:share), e.g. "
                            f"imdb:0.7,brown:0.3")
        if abs(sum(weights) - 1.0) > 1e-3:
            raise ConfigError(f"data.corpus={spec!r}: the weights sum to {sum(weights):g}; they are shares of the "
                            f"training rows and must sum to 1 (e.g. imdb:0.7,brown:0.3)")
    return components



class DataConfig(_Strict):
    """What to pretrain on and how to turn it into masked batches."""

    corpus: str = "imdb"                # a corpus (imdb, ptb, brown, ewt, sst2), a path, or imdb:0.7,brown:0.3
    data_dir: str | None = None         # root of corpora no package ships (default: MINIBERT_DATA_DIR or ../shared/data)
    lowercase: bool = True
    tokenizer: str | None = None        # an existing vocab.txt or folder; None trains WordPiece on the corpus
    max_seq_len: int = Field(64, ge=8)
    # how training rows are cut: "packed" fills every row with the next tokens of the text, whatever the sentence;
    # "sentences" packs whole sentences (data.readers.split_sentences), so each row starts where a sentence does
    # and its tail is padding. Held-out rows are packed either way, so every recipe is scored on the same rows.
    rows: Literal["packed", "sentences"] = "packed"
    mask_prob: float = Field(0.25, gt=0.0, lt=1.0)  # 25% (BERT: 15%): better masked LM and SST-2 than 20% (RESULTS.md)
    # select whole words (all of a word's pieces together: SST-2 gains, POS level; RESULTS.md) or single tokens
    masking: Literal["token", "whole_word"] = "whole_word"
    mask_fraction: float = Field(0.8, ge=0.0, le=1.0)    # of the selected positions: share that becomes [MASK]
    random_fraction: float = Field(0.1, ge=0.0, le=1.0)  # ... and share that becomes a random token (rest: kept)
    valid_batches: int = Field(16, ge=1)  # fixed masked validation batches (same every run: comparable curves)
    # Phase 3 data options (training/curriculum.py); the defaults are plain shuffled epochs at a fixed mask rate
    curriculum: Literal["none", "rarity", "length"] = "none"  # draw from the easiest rows first, by this measure
    curriculum_start: float = Field(0.3, gt=0.0, le=1.0)      # fraction of (easiest) rows available at step 0
    curriculum_steps: int = Field(0, ge=0)                     # steps until all rows are available (0: max_steps / 2)
    adaptive_masking: bool = False      # move the mask rate with the training loss and validation accuracy

    @field_validator("corpus")
    @classmethod
    def _check_corpus(cls, value: str) -> str:
        parse_corpus(value)       # weights positive and summing to 1; names are resolved when the data is read
        return value

    @model_validator(mode="after")
    def _check_fractions(self) -> "DataConfig":
        if self.mask_fraction + self.random_fraction > 1.0 + 1e-9:
            raise ConfigError(f"mask_fraction ({self.mask_fraction}) + random_fraction ({self.random_fraction}) "
                             f"must be at most 1: they split the selected positions (the rest stay unchanged)")
        return self


class TrainingConfig(_Strict):
    """The optimisation recipe and the run's bookkeeping."""

    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-3, gt=0.0)
    warmup_ratio: float = Field(0.03, ge=0.0, le=1.0)
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)
    weight_decay: float = Field(0.01, ge=0.0)
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    beta2: float = Field(0.999, ge=0.0, lt=1.0)
    adam_eps: float = Field(1e-6, gt=0.0)
    grad_clip: float = Field(1.0, ge=0.0)               # 0 disables clipping
    max_steps: int = Field(6500, ge=1)                  # the schedule's length (~40 min on 2 cores)
    max_minutes: float | None = Field(None, gt=0.0)     # also stop after this much wall time
    # with max_minutes: time a few steps at start-up and shorten the schedule (at most max_steps) so that warmup
    # and decay end when max_minutes does; at each evaluation the length is fitted again from the real steps, the
    # decay going on from where it was. Length and anchor are checkpointed: a resume goes on along the same curve
    schedule_to_budget: bool = False
    eval_every: int = Field(100, ge=1)
    checkpoint_every: int = Field(500, ge=1)
    keep_last: int = Field(2, ge=1)                     # step checkpoints kept besides `best`
    keep_every: int = Field(0, ge=0)                    # also keep every checkpoint at a multiple of N steps (0: off)
    log_every: int = Field(10, ge=1)
    seed: int = 0
    output_dir: str = "runs/default"
    # start a new run (step 0, fresh optimizer and schedule) from the weights and vocabulary of a checkpoint or run
    # folder whose model settings are these: a second stage of pretraining, e.g. objective=electra after masked LM
    init_from: str | None = None
    threads: int = Field(2, ge=1)                       # the batch is split across this many threads
    device: Literal["cpu", "cuda"] = "cpu"              # cuda: CuPy on a GPU (pip install 'mini-bert[gpu]')
    analysis_every: int = Field(0, ge=0)                # 0: no in-training analysis (costs nothing)
    tensorboard: bool = False
    # Phase 3 optimisation options (training/advanced_optimizers.py); the defaults are plain AdamW
    optimizer: Literal["adamw", "lion"] = "adamw"       # Lion uses beta1, beta2 and weight_decay too (no adam_eps)
    lookahead_k: int = Field(0, ge=0)                   # wrap it in Lookahead, syncing every k steps (0: off)
    lookahead_alpha: float = Field(0.5, gt=0.0, le=1.0)  # Lookahead's slow-weight step
    agc_clip: float = Field(0.0, ge=0.0)                # adaptive gradient clipping (0: off), before grad_clip
    layer_lr_decay: float = Field(1.0, gt=0.0, le=1.0)  # layer l of L gets lr * decay^(L-1-l) (1: off)
    # mlm: masked LM. electra: replaced-token detection (core/electra.py), a generator of generator_width of the
    # model's width trained beside the model, the loss L_gen + electra_weight * L_disc
    objective: Literal["mlm", "electra"] = "mlm"
    electra_weight: float = Field(50.0, gt=0.0)
    generator_width: float = Field(0.25, gt=0.0, le=1.0)
    # electra: per_model clips the generator's gradient and the discriminator's (with its head) to grad_clip each;
    # global clips them together, as the paper's code does: the generator's steps then follow the weighted
    # discriminator's norm, and measured at 40 minutes its generator stays on the frequent-token plateau (RESULTS.md)
    electra_clip: Literal["per_model", "global"] = "per_model"

    @model_validator(mode="after")
    def _check_budget(self) -> "TrainingConfig":
        if self.schedule_to_budget and self.max_minutes is None:
            raise ConfigError("schedule_to_budget needs training.max_minutes: the schedule is fitted to that budget")
        return self


def pretraining_model() -> ModelConfig:
    """The model `minibert train` builds by default: the notes' shape with the pretraining recipe's changes —
    pre-LN, exact GELU, no dropout (a 40-minute run underfits; dropout only slows it) and a sinusoidal start for
    the learned position table (it leaves the frequent-token plateau sooner). docs/RESULTS.md measures each.
    Fine-tuning turns dropout back on (evaluation/downstream.py)."""
    return ModelConfig(activation="gelu", norm_position="pre", dropout=0.0, attention_dropout=0.0,
                       position_init="sinusoidal")


class RunConfig(_Strict):
    """Everything a pretraining run needs; a checkpoint stores it so that the run can be resumed or inspected."""

    model: ModelConfig = Field(default_factory=pretraining_model)
    data: DataConfig = Field(default_factory=DataConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)

    def check_trainable(self) -> "RunConfig":
        """The settings that only a training run needs to agree (a RunConfig that only carries a model, as a
        checkpoint of a fine-tuned or imported model does, need not): packed rows must fit the model's positions."""
        if self.data.max_seq_len > self.model.max_position_embeddings:
            raise ConfigError(f"data.max_seq_len={self.data.max_seq_len} is longer than the model's "
                              f"{self.model.max_position_embeddings} positions (model.max_position_embeddings); "
                              f"lower data.max_seq_len or raise model.max_position_embeddings")
        return self


# ----------------------------------------------------------------------------------------------------------------
# Files and overrides

CONFIG_DIR = Path(__file__).resolve().parent / "configs"     # package data: every install has them


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration ({source}):"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling; `minibert config` prints every valid key)"
        msg = msg.removeprefix("Value error, ")
        shown = e["type"] != "extra_forbidden" and e["loc"] and not isinstance(e["input"], dict)
        lines.append(f"  {path}: {msg}" + (f" (got {e['input']!r})" if shown else ""))
    return "\n".join(lines)


def resolve_config_path(name: str) -> Path:
    """A path, or a name under configs/ (`debugging`, `training/debugging`, `model/small`)."""
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    candidates = [CONFIG_DIR / f"{name}.yaml", CONFIG_DIR / "training" / f"{name}.yaml", CONFIG_DIR / "model" / f"{name}.yaml"]
    for c in candidates:
        if c.exists():
            return c
    raise ConfigError(f"config {name!r} not found: give a YAML path or one of the names under {CONFIG_DIR}")


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def _expand(data: dict, path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """`model: small` (a string) names configs/model/small.yaml; `extends: other.yaml` merges a base file first.
    `chain` is the files already being expanded: a file that extends itself, directly or not, is an error."""
    data = dict(data)
    chain = chain + (Path(path).resolve(),)
    base = data.pop("extends", None)
    if base is not None:
        if not isinstance(base, str):
            raise ConfigError(f"{path}: extends must name one YAML file (got {base!r})")
        base_path = (path.parent / base) if not Path(base).is_absolute() else Path(base)
        if base_path.resolve() in chain:
            cycle = " -> ".join(str(p) for p in chain + (base_path.resolve(),))
            raise ConfigError(f"{path}: `extends` loops back to a file it came from ({cycle}); remove one of the "
                              f"extends lines")
        data = _deep_merge(_expand(_read_yaml(base_path), base_path, chain), data)
    if isinstance(data.get("model"), str):
        model_path = CONFIG_DIR / "model" / f"{data['model']}.yaml"
        if not model_path.exists():
            raise ConfigError(f"{path}: model config {data['model']!r} not found in {model_path.parent}")
        data["model"] = _read_yaml(model_path)
    return data


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_overrides(overrides: list[str]) -> dict:
    """["training.lr=3e-4", "model.num_layers=2"] -> nested dict; values parsed as YAML scalars."""
    out: dict = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. training.lr=3e-4)")
        parts = key.strip().split(".")
        if len(parts) == 1:  # a bare key: find the one section that has it
            owners = [s for s, m in (("model", ModelConfig), ("data", DataConfig), ("training", TrainingConfig))
                      if parts[0] in m.model_fields]
            if len(owners) != 1:
                raise ConfigError(f"override key {key!r} is unknown; use section.key (model., data., training.)")
            parts = [owners[0], parts[0]]
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Embedded defaults <- YAML file (if any) <- key=value overrides, validated as one RunConfig."""
    data: dict = {}
    source = "defaults"
    if path is not None:
        p = resolve_config_path(str(path))
        data = _expand(_read_yaml(p), p)
        source = str(p)
    if overrides:
        data = _deep_merge(data, parse_overrides(overrides))
        source += " + overrides"
    # a partial section (`model.dropout=0`) changes those keys of the default section, not the whole section
    data = _deep_merge(RunConfig().model_dump(), data)
    try:
        return RunConfig(**data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source)) from None
