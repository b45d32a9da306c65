"""Configuration: every file under configs/ validates, the embedded defaults match mlm_pretraining.yaml, and bad
values (unknown keys, wrong types, malformed overrides) fail with messages that name their path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mini_bert.config import (CONFIG_DIR, ConfigError, ModelConfig, RunConfig, load_config, parse_overrides,
                              pretraining_model)

REPO = Path(__file__).resolve().parents[2]
MODEL_FILES = sorted((CONFIG_DIR / "model").glob("*.yaml"))
TRAINING_FILES = sorted((CONFIG_DIR / "training").glob("*.yaml"))


# ----------------------------------------------------------------------------------------------------------------
# The files under configs/


def test_the_config_tree_holds_the_planned_files():
    names = {p.relative_to(CONFIG_DIR).as_posix() for p in CONFIG_DIR.rglob("*.yaml")}
    assert {"model/base.yaml", "model/small.yaml", "model/large.yaml", "model/debug.yaml",
            "training/mlm_pretraining.yaml", "training/debugging.yaml"} <= names


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.name)
def test_model_files_validate_and_list_every_field(path):
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    ModelConfig(**data)
    # a field left out would silently take ModelConfig's relu / post-LN default instead of the recipe's
    assert set(data) == set(ModelConfig.model_fields), f"{path.name} should list every ModelConfig field"


@pytest.mark.parametrize("path", TRAINING_FILES, ids=lambda p: p.name)
def test_training_files_load_and_validate(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    # the name form (`--config debugging`) finds the same file
    assert load_config(path.stem) == cfg


def test_model_names_resolve_to_their_files():
    base = ModelConfig(**yaml.safe_load((CONFIG_DIR / "model" / "base.yaml").read_text()))
    assert base == pretraining_model() == RunConfig().model
    small = ModelConfig(**yaml.safe_load((CONFIG_DIR / "model" / "small.yaml").read_text()))
    large = ModelConfig(**yaml.safe_load((CONFIG_DIR / "model" / "large.yaml").read_text()))
    debug = ModelConfig(**yaml.safe_load((CONFIG_DIR / "model" / "debug.yaml").read_text()))
    assert (small.hidden_size, small.num_layers) == (128, 2)
    assert (large.hidden_size, large.num_layers, large.num_heads, large.intermediate_size) == (256, 4, 8, 1024)
    assert (debug.vocab_size, debug.hidden_size, debug.num_layers) == (512, 32, 1)


def test_mlm_pretraining_equals_the_embedded_defaults():
    # if this fails, config.py's defaults and configs/training/mlm_pretraining.yaml have drifted: change both
    assert load_config("mlm_pretraining") == RunConfig()
    assert load_config(None) == RunConfig()


def test_debugging_extends_the_recipe_with_the_debug_model():
    cfg = load_config("debugging")
    debug = ModelConfig(**yaml.safe_load((CONFIG_DIR / "model" / "debug.yaml").read_text()))
    assert cfg.model == debug
    assert cfg.data.max_seq_len <= cfg.model.max_position_embeddings
    assert cfg.training.max_minutes is not None and cfg.training.max_minutes <= 1.0
    # what debugging.yaml does not set comes from mlm_pretraining.yaml
    assert cfg.training.weight_decay == RunConfig().training.weight_decay
    assert cfg.data.mask_prob == RunConfig().data.mask_prob
    assert cfg.data.corpus == "ptb"          # the one corpus a package ships: the debugging run reads no data root


def test_training_files_fit_their_models():
    for path in TRAINING_FILES:
        cfg = load_config(path)
        assert cfg.data.max_seq_len <= cfg.model.max_position_embeddings, path.name


def test_every_config_value_line_has_a_comment():
    for path in CONFIG_DIR.rglob("*.yaml"):
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#") or stripped.endswith(":"):
                continue   # blank, comment, or a section header such as `training:`
            assert "#" in line, f"{path.relative_to(CONFIG_DIR)}:{lineno} has no comment: {line!r}"


# ----------------------------------------------------------------------------------------------------------------
# Validation errors


def _write(tmp_path, text: str) -> Path:
    p = tmp_path / "run.yaml"
    p.write_text(text, encoding="utf-8")
    return p


def test_unknown_key_is_rejected_with_its_path(tmp_path):
    p = _write(tmp_path, "training:\n  lrr: 0.001\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert "training.lrr" in msg and "unknown key" in msg


def test_unknown_section_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"optimiser: unknown key"):
        load_config(_write(tmp_path, "optimiser:\n  lr: 0.1\n"))


def test_wrong_types_list_every_bad_value_with_its_path(tmp_path):
    p = _write(tmp_path, "model:\n  hidden_size: wide\ntraining:\n  lr: fast\n  batch_size: -3\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    lines = str(err.value).splitlines()
    assert str(p) in lines[0]
    for path, got in (("model.hidden_size", "'wide'"), ("training.lr", "'fast'"), ("training.batch_size", "-3")):
        line = next((ln for ln in lines if ln.strip().startswith(path + ":")), None)
        assert line is not None, f"{path} missing from:\n{err.value}"
        assert got in line


def test_cross_field_check_says_how_to_fix(tmp_path):
    with pytest.raises(ConfigError, match=r"divisible by num_heads.*try num_heads in"):
        load_config(None, ["model.hidden_size=30", "model.num_heads=4"])


def test_model_name_that_does_not_exist(tmp_path):
    with pytest.raises(ConfigError, match=r"model config 'huge' not found"):
        load_config(_write(tmp_path, "model: huge\n"))


def test_config_name_that_does_not_exist():
    with pytest.raises(ConfigError, match=r"not found"):
        load_config("no_such_config")


def test_invalid_yaml_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "training: [unclosed\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_write(tmp_path, "- a\n- b\n"))


def test_extends_merges_nested_sections(tmp_path):
    (tmp_path / "parent.yaml").write_text("model: small\ntraining:\n  lr: 0.01\n  batch_size: 8\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: parent.yaml\ntraining:\n  batch_size: 4\n")
    cfg = load_config(child)
    assert cfg.training.lr == 0.01 and cfg.training.batch_size == 4
    assert cfg.model.hidden_size == 128


def test_an_extends_cycle_is_named_not_a_recursion_error(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\ntraining:\n  lr: 0.01\n")
    with pytest.raises(ConfigError, match=r"loops back.*a\.yaml -> .*b\.yaml -> .*a\.yaml"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "self.yaml").write_text("extends: self.yaml\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(tmp_path / "self.yaml")
    (tmp_path / "list.yaml").write_text("extends: [a.yaml]\n")
    with pytest.raises(ConfigError, match="extends must name one YAML file"):
        load_config(tmp_path / "list.yaml")


def test_rows_longer_than_the_models_positions_cannot_train_and_the_message_names_both_settings():
    cfg = load_config("debugging", ["data.max_seq_len=128"])     # a model-only use (profile, memory) is fine
    with pytest.raises(ConfigError) as err:
        cfg.check_trainable()
    message = str(err.value)
    assert "data.max_seq_len=128" in message and "model.max_position_embeddings" in message
    assert load_config("debugging", ["data.max_seq_len=64"]).check_trainable().data.max_seq_len == 64


# ----------------------------------------------------------------------------------------------------------------
# key=value overrides


def test_dotted_and_bare_overrides():
    cfg = load_config(None, ["training.lr=3e-4", "model.num_layers=2", "batch_size=8", "corpus=brown",
                             "max_minutes=null", "lowercase=false"])
    assert cfg.training.lr == 3e-4 and isinstance(cfg.training.lr, float)
    assert cfg.model.num_layers == 2
    assert cfg.training.batch_size == 8
    assert cfg.data.corpus == "brown"
    assert cfg.training.max_minutes is None
    assert cfg.data.lowercase is False


def test_overrides_apply_on_top_of_a_file():
    cfg = load_config("debugging", ["training.max_steps=7", "model.hidden_size=64"])
    assert cfg.training.max_steps == 7 and cfg.model.hidden_size == 64
    assert cfg.model.num_layers == 1   # the rest of the debug model is kept


def test_parse_overrides_builds_a_nested_dict():
    assert parse_overrides(["training.lr=0.5", "hidden_size=64", "data.tokenizer="]) == {
        "training": {"lr": 0.5}, "model": {"hidden_size": 64}, "data": {"tokenizer": None}}


@pytest.mark.parametrize("bad, words", [
    ("training.lr", ["not of the form key=value"]),
    ("=3", ["not of the form key=value"]),
    ("nosuchkey=1", ["'nosuchkey' is unknown", "section.key"]),
])
def test_malformed_overrides_are_explained(bad, words):
    with pytest.raises(ConfigError) as err:
        parse_overrides([bad])
    for w in words:
        assert w in str(err.value)


def test_override_with_a_bad_value_names_its_path():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["training.lr=fast", "training.typo=1"])
    msg = str(err.value)
    assert "overrides" in msg
    assert "training.lr" in msg and "'fast'" in msg
    assert "training.typo: unknown key" in msg


# ----------------------------------------------------------------------------------------------------------------
# python -m mini_bert.config


def _config_cli(*args):
    return subprocess.run([sys.executable, "-m", "mini_bert", "config", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_config_module_prints_the_resolved_config():
    r = _config_cli("--config", "debugging", "training.lr=0.25", "hidden_size=64")
    assert r.returncode == 0, r.stderr
    body = yaml.safe_load(r.stdout)   # the trailing summary line is a YAML comment
    cfg = RunConfig(**body)
    assert cfg == load_config("debugging", ["training.lr=0.25", "hidden_size=64"])
    assert "parameters" in r.stdout.splitlines()[-1]


def test_config_module_exits_2_on_a_bad_override():
    r = _config_cli("training.lr=fast")
    assert r.returncode == 2
    assert "training.lr" in r.stderr and "Traceback" not in r.stderr
    r = _config_cli("notakeyvalue")
    assert r.returncode == 2 and "key=value" in r.stderr
