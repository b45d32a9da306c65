"""`minibert config`: print the resolved configuration (defaults <- file <- key=value overrides)."""

from __future__ import annotations

import yaml


def add_parser(sub, common) -> None:
    p = sub.add_parser("config", help="print the resolved configuration and the model's size")
    p.add_argument("--config", help="a YAML path or a name under configs/ (e.g. debugging)")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. training.lr=3e-4 model.num_layers=2")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..config import load_config
    from ..core.parameters import parameter_specs

    cfg = load_config(args.config, args.overrides)
    print(yaml.safe_dump(cfg.model_dump(), sort_keys=False), end="")
    m = cfg.model
    n = sum(s.size for s in parameter_specs(m))
    print(f"# {n:,} parameters; head size {m.head_dim}; {m.num_layers} x {m.activation} {m.norm_position}-LN layers")
    return 0
