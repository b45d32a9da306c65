"""One place to build or load models and tokenizers (the notes' `ModelFactory`, "Code duplication").

    from mini_bert import ModelFactory
    model = ModelFactory.create_model("small")             # configs/model/small.yaml, fresh weights
    model = ModelFactory.load_model("runs/default")        # a run folder, a checkpoint folder, or a HF BERT folder
    tokenizer = ModelFactory.create_tokenizer(8192)        # the PTB WordPiece vocabulary (trained once, then cached)

Each method is a thin door onto the function that does the work, so there is still one way to do each thing:
configs/model/*.yaml + ModelConfig for shapes, `training.checkpointing.load_checkpoint` for Mini-BERT checkpoints,
`MiniBERT.from_pretrained` for Hugging Face folders, and `training.trainer.corpus_tokenizer` for vocabularies.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from .errors import MiniBertError, MissingFileError
from .config import CONFIG_DIR, ConfigError, ModelConfig
from .core.model import MiniBERT


class ModelFactory:
    """Static constructors for MiniBERT models and WordPiece tokenizers."""

    @staticmethod
    def model_config(config_name: str | Path | ModelConfig = "default") -> ModelConfig:
        """"default" -> ModelConfig() (the notes' shape); a name under configs/model (base, small, large, debug) or
        a path to a model YAML file -> that file, validated; a ModelConfig -> itself."""
        if isinstance(config_name, ModelConfig):
            return config_name
        if not isinstance(config_name, (str, Path)):
            raise TypeError(f"config_name must be a name, a YAML path or a ModelConfig; got "
                            f"{type(config_name).__name__}")
        if config_name == "default":
            return ModelConfig()
        path = Path(config_name)
        if isinstance(config_name, str) and path.suffix not in (".yaml", ".yml"):
            path = CONFIG_DIR / "model" / f"{config_name}.yaml"
        if not path.exists():
            names = sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))
            raise ConfigError(f"model config {config_name!r} not found; use 'default', one of {names} "
                              f"(configs/model), a .yaml path, or a ModelConfig")
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of ModelConfig fields to values")
        try:
            return ModelConfig(**data)
        except ValueError as e:
            raise ConfigError(f"{path} is not a valid model config: {e}") from None

    @staticmethod
    def create_model(config_name: str | Path | ModelConfig = "default", seed: int = 0) -> MiniBERT:
        """A freshly initialised MiniBERT (weights drawn from a Generator seeded with `seed`).

        config_name: "default" (ModelConfig(): vocab 8192, hidden 192, 3 layers, 4 heads, ReLU, post-LN), a name
        under configs/model ("base" is what `minibert train` builds), a model YAML path, or a ModelConfig.
        """
        return MiniBERT(ModelFactory.model_config(config_name), seed=seed)

    @staticmethod
    def load_model(checkpoint_path: str | Path) -> MiniBERT:
        """A trained MiniBERT from disk.

        checkpoint_path: a Mini-BERT checkpoint folder (model.safetensors + config.yaml), a run folder (its best/,
        else its latest step checkpoint), or a Hugging Face BERT folder (config.json + weights), converted by
        `MiniBERT.from_pretrained`. The tokenizer of a checkpoint is not needed here (see `create_tokenizer`).
        """
        path = Path(checkpoint_path)
        if not path.exists():
            raise MissingFileError(f"{path} does not exist; pass a checkpoint folder, a run folder (runs/...) or a "
                                    f"Hugging Face BERT folder with config.json")
        if (path / "config.json").exists() and not (path / "config.yaml").exists():
            return MiniBERT.from_pretrained(path)
        from .training.checkpointing import load_checkpoint
        return load_checkpoint(path, need_tokenizer=False).model

    @staticmethod
    def create_tokenizer(vocab_size: int | None = 8192, vocab_path: str | Path | None = None, corpus: str = "ptb",
                         lowercase: bool = True, data_dir: str | None = None, log=print):
        """A WordPieceTokenizer.

        vocab_path: a vocab.txt or a folder holding one (a checkpoint, a saved tokenizer): loaded as it is, and
        `vocab_size` must then match its size. Without it, the `vocab_size` vocabulary of `corpus` ("ptb",
        "brown", or a text file/folder; see data_loader.load_corpus) is trained on its training split once and
        reused from the cache afterwards (trainer.corpus_tokenizer), so every caller gets the same pieces.
        """
        from .data.tokenizer import WordPieceTokenizer

        if vocab_path is not None:
            if not Path(vocab_path).exists():
                raise MissingFileError(f"vocabulary {vocab_path} does not exist; pass a vocab.txt or a folder "
                                        f"holding one, or vocab_path=None to train one on a corpus")
            tokenizer = WordPieceTokenizer.load(vocab_path)
            if vocab_size is not None and tokenizer.vocab_size != vocab_size:
                raise MiniBertError(f"{vocab_path} holds {tokenizer.vocab_size} tokens, not vocab_size={vocab_size}; "
                                 f"pass vocab_size={tokenizer.vocab_size} (or None to accept any size)")
            return tokenizer
        if vocab_size is None:
            raise MiniBertError("vocab_size=None needs a vocab_path; give the size of the vocabulary to train")
        from .data.corpora import load_corpus
        from .training.trainer import corpus_tokenizer

        return corpus_tokenizer(load_corpus(corpus, "train", data_dir), vocab_size, lowercase, log)
