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
SUBCOMMANDS = ["train", "selftest", "evaluate", "probe-pos", "finetune-sst2", "knowledge", "analyze", "report",
               "explore", "demo", "config", "metrics", "profile", "memory", "gradcheck"]
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


# ----------------------------------------------------------------------------------------------------------------
# Output paths and numeric flags are checked before any work: a missing checkpoint is not even looked at


@pytest.mark.parametrize("command", [["probe-pos"], ["finetune-sst2"], ["knowledge"], ["evaluate"]])
def test_an_output_that_cannot_be_written_is_refused_before_the_work(command, tmp_path, capsys):
    note = tmp_path / "notes.txt"
    note.write_text("mine\n")
    missing_checkpoint = str(tmp_path / "no-such-checkpoint")
    for output, words in ((note / "result.json", ["lies under", "which is a file"]),
                          (tmp_path, ["is a folder", "result.json"]),
                          (Path("/proc/minibert/result.json"), ["cannot be written"])):
        capsys.readouterr()
        assert cli.main([*command, "--checkpoint", missing_checkpoint, "--output", str(output)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"minibert {command[0]}: error: --output {output}"), err
        assert all(w in err for w in words), err
    assert note.read_text() == "mine\n"


def test_evaluate_checks_both_report_files_before_the_work(tmp_path, capsys):
    (tmp_path / "report.md").mkdir()                     # --output report.json also writes report.md
    assert cli.main(["evaluate", "--checkpoint", str(tmp_path / "none"), "--output", str(tmp_path / "report.json")]) == 2
    assert "report.md is a folder" in capsys.readouterr().err


def test_analyze_output_dir_that_is_a_file_is_refused(tmp_path, capsys):
    note = tmp_path / "notes.txt"
    note.write_text("mine\n")
    assert cli.main(["analyze", "--checkpoint", str(tmp_path / "none"), "--output-dir", str(note)]) == 2
    assert "--output-dir" in capsys.readouterr().err and note.read_text() == "mine\n"


def test_an_unknown_arm_to_skip_is_refused(tmp_path, capsys):
    assert cli.main(["finetune-sst2", "--checkpoint", str(tmp_path / "none"), "--skip", "random,pretrained"]) == 2
    assert "--skip takes pretrained, random-init and/or bag-of-words; got random" in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["finetune-sst2", "--batch-size", "0"], ["--batch-size", ">= 1"]),
    (["finetune-sst2", "--epochs", "0"], ["--epochs", ">= 1"]),
    (["finetune-sst2", "--adapt-steps", "-1"], ["--adapt-steps", ">= 0"]),
    (["finetune-sst2", "--jobs", "0"], ["--jobs", ">= 1"]),
    (["finetune-sst2", "--reinit-layers", "-1"], ["--reinit-layers", ">= 0"]),
    (["finetune-sst2", "--adapt-rows", "rows"], ["--adapt-rows", "invalid choice", "packed", "single"]),
    (["probe-pos", "--max-fit-words", "-5"], ["--max-fit-words", ">= 1"]),
    (["knowledge", "--seed", "-1"], ["--seed", ">= 0"]),
    (["profile", "--threads", "-1"], ["--threads", ">= 0"]),
    (["memory", "--segments", "0"], ["--segments", ">= 1"]),
    (["train", "--max-steps", "0"], ["--max-steps", ">= 1"]),
    (["finetune-sst2", "--batch-size", "many"], ["--batch-size", "expected an integer"]),
])
def test_counts_out_of_range_are_usage_errors(argv, words, capsys, tmp_path):
    needs_checkpoint = argv[0] in ("finetune-sst2", "probe-pos", "knowledge")
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv + (["--checkpoint", str(tmp_path)] if needs_checkpoint else []))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert all(w in err for w in words), err


def test_finetune_passes_the_adaptation_rows_and_the_reinit_to_the_library(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr("mini_bert.evaluation.downstream.finetune_sst2_checkpoint",
                        lambda *a, **k: seen.update(k) or {"seeds": [0], "dev_size": 1, "train_size": 1,
                                                           "epochs": 1, "majority_class": 0.5})
    assert cli.main(["finetune-sst2", "--checkpoint", str(tmp_path), "--adapt-steps", "5", "--adapt-rows",
                     "single", "--reinit-layers", "1"]) == 0
    assert seen["adapt"] == {"packing": "single"} and seen["reinit_layers"] == 1 and seen["adapt_steps"] == 5
    assert cli.main(["finetune-sst2", "--checkpoint", str(tmp_path), "--adapt-steps", "5"]) == 0
    assert seen["adapt"] == {"packing": "single"} and seen["reinit_layers"] == 0           # the defaults
    assert cli.main(["finetune-sst2", "--checkpoint", str(tmp_path), "--adapt-steps", "5", "--adapt-rows",
                     "packed"]) == 0
    assert seen["adapt"] == {"packing": "packed"}


@pytest.mark.parametrize("setting, value, words", [
    ("lr", -1.0, ["--lr", "finite learning rate above 0"]),
    ("lr", float("inf"), ["--lr", "finite"]),
    ("lr", 0.0, ["--lr", "above 0"]),
    ("warmup_ratio", 1.5, ["--warmup-ratio", "[0, 1)"]),
    ("layer_lr_decay", 0.0, ["--layer-lr-decay", "(0, 1]"]),
    ("pretrained", False, ["every fine-tuning arm is left out", "--adapt-steps"]),
])
def test_fine_tuning_settings_that_make_no_sense_are_refused_before_loading(setting, value, words, tmp_path):
    from mini_bert.errors import MiniBertError
    from mini_bert.evaluation.downstream import finetune_sst2_checkpoint

    with pytest.raises(MiniBertError) as err:          # the checkpoint does not exist: it is never opened
        finetune_sst2_checkpoint(tmp_path / "none", **{setting: value,
                                                       **({"random_init": False} if setting == "pretrained" else {})})
    assert all(w in str(err.value) for w in words), err.value
