"""`minibert metrics --test`: every metric checked on inputs with a known answer (the notes' `metrics.py --test`)."""

from __future__ import annotations


def add_parser(sub, common) -> None:
    p = sub.add_parser("metrics", help="check every metric on inputs with a known answer (--test)")
    p.add_argument("--test", action="store_true", help="run the checks (the only action)")
    p.set_defaults(func=run, parser=p)


def run(args) -> int:
    from ..evaluation.metrics import self_test

    if not args.test:
        args.parser.print_help()
        return 0
    return self_test()
