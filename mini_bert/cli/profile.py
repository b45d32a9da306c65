"""`minibert profile`: where the time of one training step goes, stage by stage (analysis/profiler.py)."""

from __future__ import annotations

from .arguments import count

def add_parser(sub, common) -> None:
    p = sub.add_parser("profile", help="time one training step stage by stage: FLOPs, BLAS and elementwise work")
    p.add_argument("--batch", type=count(1), default=32, help="batch size (default 32)")
    p.add_argument("--seq", type=count(1), default=128, help="tokens per sequence (default 128)")
    p.add_argument("--repeats", type=count(1), default=5, help="median of this many steps (default 5)")
    p.add_argument("--threads", type=count(0), default=1, help="BLAS threads (default 1; 0 = leave as is)")
    p.add_argument("--config", default=None, help="a YAML file or configs/ name whose model section to use")
    p.add_argument("overrides", nargs="*", help="model.key=value settings, e.g. model.num_layers=6")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..analysis.profiler import format_report, profile_training_step
    from ..config import load_config

    cfg = load_config(args.config, args.overrides).model
    print(format_report(profile_training_step(cfg, args.batch, args.seq, args.repeats, threads=args.threads or None)))
    return 0
