"""The `minibert` command: its subcommands, `python -m mini_bert`, the installed console script, exit codes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mini_bert import cli

REPO = Path(__file__).resolve().parents[2]
SUBCOMMANDS = ["train", "selftest", "evaluate", "probe-pos", "finetune-sst2", "knowledge", "analyze", "demo",
               "config", "metrics", "profile", "memory", "gradcheck"]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def _subcommands() -> set[str]:
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return set(sub.choices)


def test_every_command_is_registered():
    assert set(SUBCOMMANDS) == _subcommands()


def test_every_command_module_adds_its_parser():
    import importlib
    for name in cli.COMMAND_MODULES:
        module = importlib.import_module(f"mini_bert.cli.{name}")
        assert callable(getattr(module, "add_parser", None)), f"mini_bert.cli.{name} has no add_parser"


def test_version_comes_from_the_package_metadata(capsys):
    from importlib.metadata import version
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"minibert {version('mini-bert')}"


def test_a_bug_keeps_its_traceback_while_a_user_mistake_is_one_line(monkeypatch, capsys):
    from mini_bert.cli import config as config_command

    def broken(args):
        raise ValueError("an internal invariant failed")       # not a MiniBertError: a bug
    monkeypatch.setattr(config_command, "run", broken)
    parser_run = cli.build_parser().parse_args(["config"]).func
    assert parser_run is broken
    with pytest.raises(ValueError, match="internal invariant"):
        cli.main(["config"])
    monkeypatch.undo()
    assert cli.main(["config", "training.nope=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("minibert config: error:") and "training.nope" in err


def test_help_lists_the_subcommands(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for name in _subcommands():
        assert name in out


def test_python_dash_m_mini_bert_help():
    r = subprocess.run([sys.executable, "-m", "mini_bert", "--help"], cwd=REPO, env=ENV, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: minibert")
    for name in ("train", "selftest") + tuple(_subcommands()):
        assert name in r.stdout


def test_console_script_is_installed(tmp_path):
    exe = shutil.which("minibert")
    if exe is None:
        pytest.skip("the `minibert` console script is not on PATH: run `pip install -e .`")
    # run from elsewhere: the script must not depend on the current directory
    r = subprocess.run([exe, "train", "--help"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "--resume" in r.stdout and "--config" in r.stdout and "key=value" in r.stdout


def test_no_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([])
    assert exit_.value.code == 2
    assert "usage: minibert" in capsys.readouterr().err


def test_unknown_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["pretrain"])
    assert exit_.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_user_errors_exit_2_with_one_line(capsys, tmp_path):
    rc = cli.main(["train", "--no-progress", "--config", str(tmp_path / "nope.yaml")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("minibert train: error:") and "not found" in err


def test_train_shortcut_flags_become_overrides(monkeypatch):
    seen = {}

    def fake_load_config(path, overrides):
        seen["overrides"] = list(overrides)
        raise SystemExit(0)

    from mini_bert import config

    monkeypatch.setattr(config, "load_config", fake_load_config)
    with pytest.raises(SystemExit):
        cli.main(["train", "--max-steps", "7", "--max-minutes", "1.5", "--output-dir", "runs/x",
                  "model.num_layers=1"])
    assert seen["overrides"] == ["model.num_layers=1", "training.max_steps=7", "training.max_minutes=1.5",
                                 "training.output_dir=runs/x"]
