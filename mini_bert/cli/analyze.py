"""`minibert analyze`: figures and a summary of what a checkpoint computes."""

from __future__ import annotations

from pathlib import Path


def add_parser(sub, common) -> None:
    from ..analysis.report import ANALYSES, DEFAULT_TEXT

    p = sub.add_parser("analyze", parents=[common["checkpoint"], common["seed"]],
                       help="figures and a summary of what a checkpoint computes")
    p.add_argument("--text", default=DEFAULT_TEXT, help="text to analyse (default: a sample sentence)")
    p.add_argument("--what", default="all", help=f"comma-separated: {','.join(ANALYSES)} or all (default)")
    p.add_argument("--output-dir", default=None,
                   help="where to write (default: RUN-analysis beside the run folder, which only training writes)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..analysis.report import default_output_dir, parse_what, run_analysis, step_checkpoints
    from ..training.checkpointing import load_model_and_tokenizer

    what = parse_what(args.what)
    ckpt = Path(args.checkpoint)
    model, tokenizer = load_model_and_tokenizer(ckpt)
    output_dir = Path(args.output_dir) if args.output_dir else default_output_dir(ckpt)
    checkpoints = step_checkpoints(ckpt) if "weights" in what else None
    summary = run_analysis(model, tokenizer, args.text, what, output_dir, checkpoints, seed=args.seed)
    print(f"wrote {summary} and {len(list(output_dir.glob('*.png')))} figures into {output_dir}")
    return 0
