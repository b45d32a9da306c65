"""`minibert probe-pos`: a POS probe per layer on UD English-EWT, with its baselines."""

from __future__ import annotations

from ..errors import MiniBertError
from .arguments import count


def add_parser(sub, common) -> None:
    from ..evaluation.probing import DEFAULT_MAX_SENTENCES, TAGSETS

    p = sub.add_parser("probe-pos", parents=[common[k] for k in ("checkpoint", "data_dir", "output", "seed")],
                       help="POS probe per layer on UD English-EWT, with baselines")
    p.add_argument("--max-sentences", type=count(1), default=DEFAULT_MAX_SENTENCES,
                   help=f"use at most N sentences of each split, a seeded random subset (default "
                        f"{DEFAULT_MAX_SENTENCES}: about 5 minutes on two cores for the base model; EWT has 12,544 "
                        f"train and 2,001 dev sentences, so N >= 12544 uses all of them)")
    p.add_argument("--max-fit-words", type=count(1), default=None,
                   help="choose each probe's L2 penalty with fits on at most N training words (default: 10,000); "
                        "the chosen probe is then refitted on every training word")
    p.add_argument("--tagset", choices=TAGSETS, default="upos")
    p.add_argument("--skip", default="", help="comma-separated baselines to leave out: random-init, control "
                                              "(the majority tag is always reported)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..evaluation.probing import format_probe_table, probe_pos_checkpoint

    skip = {x.strip() for x in args.skip.split(",") if x.strip()}
    unknown = skip - {"random-init", "control"}
    if unknown:
        raise MiniBertError(f"--skip takes random-init and/or control; got {', '.join(sorted(unknown))}")
    kwargs = {"random_model": "random-init" not in skip, "control_task": "control" not in skip}
    if args.max_fit_words is not None:
        kwargs["max_fit_examples"] = args.max_fit_words
    result = probe_pos_checkpoint(args.checkpoint, data_dir=args.data_dir, max_sentences=args.max_sentences,
                                  tagset=args.tagset, output=args.output, seed=args.seed, **kwargs)
    print(format_probe_table(result))
    if args.output:
        print(f"\nwrote {args.output}")
    return 0
