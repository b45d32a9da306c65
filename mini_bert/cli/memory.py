"""`minibert memory`: where the memory of one training step goes (parameters, optimizer state, activations)."""

from __future__ import annotations

from .arguments import count

def add_parser(sub, common) -> None:
    p = sub.add_parser("memory", help="memory of one training step, by buffer, with activation checkpointing")
    p.add_argument("--batch", type=count(1), default=32, help="batch size (default 32)")
    p.add_argument("--seq", type=count(1), default=128, help="tokens per sequence (default 128)")
    p.add_argument("--threads", type=count(1), default=1, help="gradient worker threads (default 1)")
    p.add_argument("--segments", type=count(1), default=None, help="activation checkpointing with K segments")
    p.add_argument("--config", default=None, help="a YAML file or configs/ name (its model and optimizer)")
    p.add_argument("overrides", nargs="*", help="key=value settings, e.g. model.num_layers=6 training.optimizer=lion")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..analysis.memory import format_table, memory_breakdown
    from ..config import load_config

    cfg = load_config(args.config, args.overrides)
    print(format_table(memory_breakdown(cfg, args.batch, args.seq, args.threads, args.segments)))
    return 0
