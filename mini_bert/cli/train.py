"""`minibert train` (pretraining) and `minibert selftest` (a 30-second end-to-end check)."""

from __future__ import annotations

import json
import sys

from .arguments import count


def add_parser(sub, common) -> None:
    p = sub.add_parser("train", help="pretrain with masked-language modelling (default: the IMDB recipe)")
    p.add_argument("--config", help="YAML file or name under configs/ (e.g. debugging); default: embedded defaults")
    p.add_argument("--resume", action="store_true", help="continue the run in training.output_dir exactly")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")
    p.add_argument("--max-steps", type=count(1), help="shortcut for training.max_steps=N")
    p.add_argument("--max-minutes", type=float, help="shortcut for training.max_minutes=M")
    p.add_argument("--output-dir", help="shortcut for training.output_dir=DIR")
    p.add_argument("overrides", nargs="*", help="key=value settings, e.g. training.lr=3e-4 model.num_layers=2")
    p.set_defaults(func=run_train)
    s = sub.add_parser("selftest", help="30-second end-to-end check: tiny model, a few steps, checkpoint round trip")
    s.set_defaults(func=run_selftest)


def run_train(args) -> int:
    from ..config import load_config
    from ..errors import MiniBertError
    from ..training.checkpointing import latest_checkpoint
    from ..training.distributed import RankLost, detect_world
    from ..training.trainer import Trainer, TrainingDiverged

    for flag, key in (("max_steps", "training.max_steps"), ("max_minutes", "training.max_minutes"),
                      ("output_dir", "training.output_dir")):
        if getattr(args, flag) is not None:
            args.overrides.append(f"{key}={getattr(args, flag)}")
    world = detect_world()                  # one process, or this process' rank under mpirun
    try:
        with world.startup():               # MPI: a mistake on any rank stops all of them (one message, exit 2)
            cfg = load_config(args.config, args.overrides)
        monitor = None
        if cfg.training.analysis_every:
            from ..analysis.issues import TrainingMonitor
            monitor = TrainingMonitor(every=cfg.training.analysis_every)
        trainer = Trainer(cfg, resume=args.resume, progress=not args.no_progress, monitor=monitor, world=world)
    except MiniBertError:
        if world.is_root:
            raise                           # printed once, by rank 0; every rank exits with 2
        return 2
    m = trainer.model
    trainer.log(f"model: {m.num_parameters:,} parameters ({cfg.model.num_layers} layers, hidden {cfg.model.hidden_size}, "
                f"{cfg.model.activation}, {cfg.model.norm_position}-LN); run folder {trainer.run_dir}")
    try:
        summary = trainer.train()
    except TrainingDiverged as e:
        print(f"minibert train: stopped: {e}", file=sys.stderr)
        return 3
    except RankLost as e:
        last = latest_checkpoint(trainer.run_dir)
        print(f"minibert train: stopped: {e}" + (f"; the last is {last}" if last else "")
              + f". Continue with `mpirun -n N python -m mini_bert train --resume` and the same settings.",
              file=sys.stderr, flush=True)
        return 1
    trainer.log(json.dumps({k: v for k, v in summary.items() if k != "issues"}, indent=None))
    for issue in summary.get("issues", []):
        trainer.log(f"issue: {issue}")
    if summary["stop_reason"] == "interrupted":
        trainer.log(f"interrupted: saved {latest_checkpoint(trainer.run_dir)}; continue with --resume")
        return 128 + summary.get("signal", 2)       # the shell's convention: 130 for SIGINT, 143 for SIGTERM
    return 0


def run_selftest(args) -> int:
    from ..training.sanity import selftest
    return selftest()
