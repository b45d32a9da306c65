"""The `minibert` command: its subcommands, `python -m mini_bert`, the installed console script, exit codes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mini_bert import cli

REPO = Path(__file__).resolve().parent.parent
SUBCOMMANDS = ["train", "selftest", "evaluate", "probe-pos", "finetune-sst2", "analyze"]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def _subcommands() -> set[str]:
    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return set(sub.choices)


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_subcommand_is_registered(name):
    if name not in _subcommands():
        module = {"evaluate": "mini_bert.evaluation.evaluate"}.get(name)
        if module is not None and module in cli.COMMAND_MODULES:
            try:
                __import__(module)
            except ModuleNotFoundError:
                pytest.xfail(f"{module} is not written yet, so `minibert {name}` is missing")
    assert name in _subcommands()


def test_every_command_module_registers_a_subcommand():
    for name in cli.COMMAND_MODULES:
        try:
            module = __import__(name, fromlist=["register_cli"])
        except ModuleNotFoundError:
            continue          # reported by test_subcommand_is_registered
        assert callable(getattr(module, "register_cli", None)), f"{name} has no register_cli(subparsers)"


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

    def fake_train_command(args):
        seen["overrides"] = list(args.overrides)
        return 0

    from mini_bert.training import trainer

    monkeypatch.setattr(trainer, "train_command", fake_train_command)
    assert cli.main(["train", "--max-steps", "7", "--max-minutes", "1.5", "--output-dir", "runs/x",
                     "model.num_layers=1"]) == 0
    assert seen["overrides"] == ["model.num_layers=1", "training.max_steps=7", "training.max_minutes=1.5",
                                 "training.output_dir=runs/x"]
