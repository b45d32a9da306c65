"""`minibert report`: one self-contained HTML page about a run, to open in a browser."""

from __future__ import annotations


def add_parser(sub, common) -> None:
    from ..analysis.report import DEFAULT_TEXT

    p = sub.add_parser("report", parents=[common["checkpoint"], common["seed"]],
                       help="one HTML page (opens from disk, no network): curves, issues, attention, gradients, "
                            "POS and SST-2 results")
    p.add_argument("--output", default=None,
                   help="the HTML file to write (default: RUN-analysis/report.html beside the run folder, which "
                        "only training writes)")
    p.add_argument("--sentence", default=None, help=f"the sentence whose attention and gradients are shown "
                                                    f"(default: {DEFAULT_TEXT!r}, shortened to fit the model)")
    p.add_argument("--results", nargs="+", default=[], metavar="FILE",
                   help="result JSON files of probe-pos / finetune-sst2 / evaluate --output to show, besides those "
                        "found in RUN-eval/ and RUN-analysis/")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..analysis.html_report import write_report

    path = write_report(args.checkpoint, output=args.output, sentence=args.sentence, results=args.results,
                        seed=args.seed)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB); open it in a browser: file://{path.resolve()}")
    return 0
