"""`minibert knowledge`: what a checkpoint knows (BLiMP, word similarity, analogies, LAMA)."""

from __future__ import annotations


def add_parser(sub, common) -> None:
    from ..evaluation.knowledge import QUICK, WHAT

    p = sub.add_parser("knowledge", parents=[common[k] for k in ("checkpoint", "data_dir", "output", "seed")],
                       help="linguistic probes: BLiMP, word similarity, analogies, LAMA")
    p.add_argument("--what", default="all", help=f"comma-separated subset of {','.join(WHAT)}, or all (default)")
    p.add_argument("--quick", action="store_true",
                   help="random subsets (" + ", ".join(f"{k}={v}" for k, v in QUICK.items()) + "), under 2 minutes")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..evaluation.knowledge import format_knowledge_report, knowledge_checkpoint

    result = knowledge_checkpoint(args.checkpoint, what=args.what, quick=args.quick, data_dir=args.data_dir,
                                  output=args.output, seed=args.seed, log=lambda m: print(m, flush=True))
    print()
    print(format_knowledge_report(result))
    print(f"\n{result['seconds']:.1f} s" + (f"; wrote {args.output}" if args.output else ""))
    return 0
