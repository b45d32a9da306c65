"""`minibert evaluate`: the full report of a checkpoint (intrinsic, POS probe, SST-2), or --overfit-one-batch."""

from __future__ import annotations

from ..errors import MiniBertError


def add_parser(sub, common) -> None:
    p = sub.add_parser("evaluate", parents=[common["data_dir"]],
                       help="full evaluation report of a checkpoint (or --overfit-one-batch)")
    p.add_argument("--checkpoint", help="checkpoint folder or run folder (required unless --overfit-one-batch)")
    p.add_argument("--quick", action="store_true", help="small sizes: under 3 minutes on two cores")
    p.add_argument("--output", default=None, help="write the JSON report here and a Markdown copy beside it")
    p.add_argument("--overfit-one-batch", action="store_true",
                   help="instead: the sanity check that a small model can memorise one batch")
    p.set_defaults(func=run, output_paths=output_paths)


def output_paths(args) -> tuple:
    """The report's two files (JSON and Markdown), checked before the evaluation starts."""
    from ..evaluation.evaluate import report_paths

    return report_paths(args.output)


def run(args) -> int:
    from ..evaluation.evaluate import evaluate_checkpoint, format_report, report_paths
    from ..training.sanity import overfit_one_batch

    if args.overfit_one_batch:
        result = overfit_one_batch(quick=args.quick)
        ok = result["final_loss"] < 0.05
        print("PASS: the model can memorise a batch" if ok else
              "FAIL: the loss did not fall below 0.05 — suspect the backward pass or the optimizer")
        return 0 if ok else 1
    if not args.checkpoint:
        raise MiniBertError("--checkpoint DIR is required (or pass --overfit-one-batch)")
    report = evaluate_checkpoint(args.checkpoint, quick=args.quick, data_dir=args.data_dir, output=args.output)
    print()
    print(format_report(report))
    if args.output:
        print("\nwrote {} and {}".format(*report_paths(args.output)))
    return 0
