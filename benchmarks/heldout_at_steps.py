"""Score a run's step checkpoints on the held-out masked-LM metric as the trainer measures it today.

    python benchmarks/heldout_at_steps.py RUN_DIR [RUN_DIR ...] [--data-dir DIR] [--output FILE.json]

Every `step_*` checkpoint in the folders (a step found in several of them once, from the first) is loaded and
scored on the trainer's own fixed held-out batches (`prepare_data`, BERT's 15% token-level masks, the same
positions in every run): masked-token accuracy and perplexity, one line per step. Use it to put a run whose logged curve was measured
differently (for example at its own training mask rate) on the same footing as the others at equal steps.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="folders holding step_* checkpoints")
    parser.add_argument("--data-dir", default=None, help="data root (default: $MINIBERT_DATA_DIR)")
    parser.add_argument("--output", type=Path, default=None, help="also write the rows here (JSON)")
    args = parser.parse_args()
    if args.data_dir:
        os.environ["MINIBERT_DATA_DIR"] = args.data_dir

    from mini_bert.training.checkpointing import list_step_checkpoints, load_checkpoint
    from mini_bert.training.step import evaluate_mlm
    from mini_bert.training.trainer import prepare_data

    by_step: dict[str, Path] = {}
    for folder in args.folders:                      # a step found in several folders is scored once (the first)
        for path in list_step_checkpoints(folder):
            by_step.setdefault(path.name, path)
    checkpoints = [by_step[name] for name in sorted(by_step)]
    if not checkpoints:
        raise SystemExit(f"no step_* checkpoint in {', '.join(map(str, args.folders))}")
    first = load_checkpoint(checkpoints[0])
    _, _, valid = prepare_data(first.config, tokenizer=first.tokenizer, log=lambda *a: None)
    rows = []
    for path in checkpoints:
        ck = load_checkpoint(path, need_tokenizer=False)
        if ck.config.data != first.config.data:
            raise SystemExit(f"{path} was trained on other data settings than {checkpoints[0]}")
        metrics = evaluate_mlm(ck.model, valid)
        step = int(path.name.split("_")[-1])
        rows.append({"step": step, "valid_masked_acc": metrics["valid_masked_acc"],
                     "valid_perplexity": metrics["valid_perplexity"]})
        print(f"step {step:>6}: held-out masked acc {metrics['valid_masked_acc']:.4f}, "
              f"perplexity {metrics['valid_perplexity']:.1f}", flush=True)
    if args.output:
        args.output.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
