"""The `minibert` command (also `python -m mini_bert`): the only place that parses arguments.

Each command is one module here with `add_parser(subparsers, common)`, which adds its parser (inheriting the
shared flags it needs from `common`) and sets `func`: a callable that turns the parsed flags into library calls
and returns an exit code.

Exit codes (`EXIT_CODES`): 0 success; 1 a check that ran and failed (selftest, overfit, metrics --test); 2 a
mistake the user can fix (any MiniBertError: the message says what is wrong and what to do); 3 training diverged;
130 interrupted (Ctrl-C; a training run saves a checkpoint first). Any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

from .. import __version__
from ..errors import MiniBertError
from .arguments import count

# Modules that contribute subcommands, in help order.
COMMAND_MODULES = ["train", "evaluate", "probe", "finetune", "knowledge", "analyze", "report", "explore", "demo",
                   "config", "metrics", "profile", "memory", "gradcheck"]

EXIT_CODES: dict[type[BaseException], int] = {MiniBertError: 2, KeyboardInterrupt: 130}


def common_parsers() -> dict[str, argparse.ArgumentParser]:
    """Parent parsers for the flags several commands share, so each is spelled and documented once."""
    def parent(*args, **kwargs) -> argparse.ArgumentParser:
        p = argparse.ArgumentParser(add_help=False)
        p.add_argument(*args, **kwargs)
        return p
    return {
        "checkpoint": parent("--checkpoint", required=True, help="checkpoint folder, or run folder (its best/ or "
                                                                  "latest step)"),
        "data_dir": parent("--data-dir", default=None, help="data root (default: $MINIBERT_DATA_DIR or "
                                                              "../shared/data)"),
        "output": parent("--output", default=None, help="write the result (JSON) here"),
        "seed": parent("--seed", type=count(0), default=0, help="seed of every random choice the command makes"),
    }


def check_outputs(args: argparse.Namespace) -> None:
    """Every command's output paths, checked before its work starts (a result computed for minutes and then not
    writable is lost): --output is a file, --output-dir a folder."""
    from ..data.sources import check_output_path

    if getattr(args, "output", None):
        for path in getattr(args, "output_paths", lambda a: [a.output])(args):
            check_output_path(path, "--output")
    if getattr(args, "output_dir", None):
        check_output_path(args.output_dir, "--output-dir", folder=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="minibert", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = common_parsers()
    for name in COMMAND_MODULES:
        import_module(f"{__name__}.{name}").add_parser(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..training.allocator import keep_freed_memory

    keep_freed_memory()          # large NumPy temporaries reuse freed memory instead of fresh pages (see there)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        check_outputs(args)
        return int(args.func(args) or 0)
    except tuple(EXIT_CODES) as e:
        code = next(c for kind, c in EXIT_CODES.items() if isinstance(e, kind))
        message = "interrupted (Ctrl-C)" if isinstance(e, KeyboardInterrupt) else f"error: {e}"
        print(f"minibert {args.command}: {message}", file=sys.stderr)
        return code
