"""The training-issue rules: each fires on the log it describes, and every setting a suggestion names is a key the
configuration accepts (a suggestion the config would reject sends the user nowhere)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from mini_bert.analysis.issues import RULES, detect_training_issues
from mini_bert.config import load_config


def _log(n=200, loss=None, **series):
    loss = np.linspace(6.0, 3.0, n) if loss is None else loss
    out = []
    for i in range(n):
        e = {"step": 10 * i, "train_loss": float(loss[i]), "lr": 1e-3, "grad_norm": 1.0}
        for k, v in series.items():
            e[k] = v[i] if isinstance(v, (list, np.ndarray)) else v
        out.append(e)
    return out


CASES = {
    "divergence": _log(loss=np.r_[np.linspace(6, 3, 100), np.full(100, math.nan)]),
    "loss_spike": _log(loss=np.where(np.arange(200) == 120, 9.0, np.linspace(6, 3, 200))),
    "exploding_gradients": _log(grad_norm=np.where(np.arange(200) == 150, 100.0, 1.0)),
    "vanishing_gradients": _log(**{"grad_norm/embeddings": 1.0, "grad_norm/layer_0": 1e-6, "grad_norm/head": 1.0}),
    "dead_relu": _log(**{"dead_units/layer_0": np.linspace(0.0, 0.9, 200)}),
    "lr_too_high": _log(update_ratio=0.5),
    "lr_too_low": _log(update_ratio=1e-7),
    "loss_plateau": _log(loss=np.full(200, 5.0)),
    "attention_collapse": _log(**{"attention_entropy/layer_0": 0.01}),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_each_rule_fires_on_its_symptom(kind):
    assert kind in {i.kind for i in detect_training_issues(CASES[kind])}


def test_a_healthy_log_raises_nothing():
    assert detect_training_issues(_log(update_ratio=1e-3)) == []


def test_every_suggested_setting_is_a_key_the_config_accepts():
    named = set()
    for history in CASES.values():
        for issue in detect_training_issues(history):
            named |= set(re.findall(r"\b(?:model|data|training)\.[a-z_]+", issue.suggestion))
    assert named, "the suggestions should name the settings to change"
    for key in sorted(named):
        section, field = key.split(".")
        value = load_config().model_dump()[section][field]     # KeyError: a key the config does not have
        load_config(None, [f"{key}={value if value is not None else 'null'}"])


def test_the_rules_are_small_named_functions():
    assert len(RULES) >= 8 and all(r.__doc__ for r in RULES)
