"""The `minibert` command (also `python -m mini_bert`).

Subcommands are registered by the modules that implement them: each exposes `register_cli(subparsers)`, which adds
its parser and sets `func` to a callable taking the parsed args and returning an exit code.
Errors a user can fix (bad config, missing file, ...) are printed as one clear message and exit with code 2;
Ctrl-C outside a training loop (which saves and stops by itself) prints one line and exits with 130 (128 + SIGINT).
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

# Modules that contribute subcommands, in help order.
COMMAND_MODULES = [
    "mini_bert.training.trainer",          # train, selftest
    "mini_bert.evaluation.evaluate",       # evaluate
    "mini_bert.evaluation.probing",        # probe-pos
    "mini_bert.evaluation.downstream",     # finetune-sst2
    "mini_bert.evaluation.knowledge",      # knowledge
    "mini_bert.tools.analyze",             # analyze
]


class UserError(Exception):
    """A problem the user can fix; the CLI prints the message (what is wrong and what to do) and exits with 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minibert", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        try:
            module = import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:      # not written yet in this checkout
                continue
            raise
        module.register_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .utils.allocator import keep_freed_memory

    keep_freed_memory()          # large NumPy temporaries reuse freed memory instead of fresh pages (see there)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (UserError, ValueError, FileNotFoundError) as e:
        print(f"minibert {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"minibert {args.command}: interrupted (Ctrl-C)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
