"""Argument types the commands share: argparse reports a bad value itself (usage line, exit code 2)."""

from __future__ import annotations

import argparse


def count(minimum: int):
    """An argparse type: an integer >= minimum, else argparse's own message and exit code 2."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value
    parse.__name__ = f"integer >= {minimum}"
    return parse


# A flag with an on and an off form (--name / --no-name), for settings whose default is on.
ON_OFF = argparse.BooleanOptionalAction
