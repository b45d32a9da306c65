"""Analyse a training run: loss components by ablation, parameter updates between checkpoints and training issues,
written as figures, JSON and a Markdown summary by `mini_bert.analysis.training_analyzer.TrainingAnalyzer`.

    python scripts/analyze_training.py runs/default [--output-dir DIR] [--mode mean|zero] [--max-batches 4]

Output (default <run>/training_analysis): loss_components.png/.json, weight_evolution.png/.json, summary.md/.json.
"""

import argparse
import sys
from pathlib import Path

from mini_bert.analysis.training_analyzer import ABLATION_MODES, TrainingAnalyzer


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a run folder written by `minibert train` (metrics.jsonl, step_* checkpoints)")
    p.add_argument("--output-dir", default=None, help="where to write (default: <run_dir>/training_analysis)")
    p.add_argument("--mode", choices=ABLATION_MODES, default="mean", help="mean-ablation (default) or removal")
    p.add_argument("--scale", type=float, default=1.0, help="ablation strength in [0, 1] (default 1)")
    p.add_argument("--max-batches", type=int, default=2, help="validation batches per ablation (default 2)")
    p.add_argument("--no-components", action="store_true", help="skip the ablations (the slow part)")
    return p.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    out = Path(args.output_dir) if args.output_dir else Path(args.run_dir) / "training_analysis"
    try:
        analyzer = TrainingAnalyzer(args.run_dir, max_batches=args.max_batches)
        if not args.no_components:
            analyzer.plot_loss_components(out, mode=args.mode, scale=args.scale)
        analyzer.analyze_parameter_updates(output_dir=out)
        print(analyzer.summary(output_dir=out))
    except (ValueError, FileNotFoundError) as e:
        print(f"analyze_training: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"wrote {out / 'summary.md'} and its figures")
