"""The README is a user guide: its set-up commands are the ones CI runs, every concrete `minibert` command it shows
is one the CLI accepts, it stays under 200 lines, and it speaks of the product, not of how it was built."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from mini_bert import cli

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")


def concrete_commands() -> list[str]:
    """Every `minibert ...` in backticks that has no placeholder syntax ([optional], a|b, ...)."""
    found = re.findall(r"`(minibert [^`]+)`", README)
    return sorted({c for c in found if not re.search(r"[\[\]|]|\.\.\.|\bDIR\b|\bNAME\b|\bCOMMAND\b", c)})


def test_the_readme_starts_with_the_two_set_up_commands():
    first_block = README.split("```")[1].strip().splitlines()
    assert first_block[1:] == ["pip install -e . && minibert train", 'pip install -e ".[test]" && python -m pytest']


@pytest.mark.parametrize("command", concrete_commands())
def test_every_concrete_command_in_the_readme_parses(command):
    argv = shlex.split(command)[1:]
    parser = cli.build_parser()
    if argv == ["--version"]:
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(argv)
        assert exit_.value.code == 0
        return
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    assert argv[0] in sub.choices, f"the README names a command the CLI lacks: {command}"
    if len(argv) > 1:                                    # a command named in prose needs no arguments to exist
        args = parser.parse_args(argv)                   # SystemExit(2) on a flag the CLI lacks
        assert callable(args.func)


def test_the_readme_is_a_short_user_guide():
    assert len(README.splitlines()) < 200
    assert concrete_commands(), "the learning path should show runnable commands"
    assert not re.search(r"\bsession[s]?\b|\bissue ?#?\d+|\bI (did|ran|tried|measured)\b", README, re.I)
