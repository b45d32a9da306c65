"""Configuration: validated pydantic models, YAML files, and `key=value` overrides.

`python -m mini_bert.config [--config FILE] [key=value ...]` prints the resolved configuration.

Every section forbids unknown keys, so a typo in a YAML file or an override fails loudly with its path
(`training.lr: Input should be a valid number`), instead of being silently ignored.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Special token ids. The learning-path snippets in the notes rely on these values
# (e.g. `mask_tokens(batch, vocab_size, 4, 0.15)` passes [MASK]=4).
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 1, 2, 3, 4
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

ACTIVATIONS = ("relu", "gelu", "gelu_tanh")
NORM_POSITIONS = ("pre", "post")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Strict):
    """The encoder's shape and numerics. Defaults follow the notes (vocab 8192, hidden 192, 3 layers, 4 heads)."""

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
    dtype: Literal["float32", "float64"] = "float32"
    tie_word_embeddings: bool = True
    num_labels: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        # Raised as ValueError inside pydantic's ValidationError (itself a ValueError subclass).
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads}); "
                f"try num_heads in {[h for h in range(1, 17) if self.hidden_size % h == 0]}"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        if self.norm_position not in NORM_POSITIONS:
            raise ValueError(
                f"unknown norm_position {self.norm_position!r}; choose one of {', '.join(NORM_POSITIONS)}"
            )
        return self

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads
