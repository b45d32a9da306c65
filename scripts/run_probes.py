"""Run the probing tasks on a checkpoint: `minibert probe-pos` (what each layer knows about parts of speech), then
`minibert knowledge` (BLiMP, word similarity, analogies, LAMA cloze).

    python scripts/run_probes.py --checkpoint runs/default [--quick] [--output-dir runs/default/probes]

With --output-dir the two results are written there as pos_probe.json and knowledge.json. The exit code is the
worse of the two commands' (0 when both succeed). Both need the datasets under the data root (--data-dir, default
$MINIBERT_DATA_DIR or ../shared/data).
"""

import argparse
import sys
from pathlib import Path

from mini_bert.cli import main


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint folder or run folder")
    p.add_argument("--quick", action="store_true", help="small subsets: minutes, not tens of minutes")
    p.add_argument("--output-dir", default=None, help="write pos_probe.json and knowledge.json here")
    p.add_argument("--data-dir", default=None, help="data root (default: $MINIBERT_DATA_DIR or ../shared/data)")
    return p.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    common = ["--checkpoint", args.checkpoint] + (["--data-dir", args.data_dir] if args.data_dir else [])
    out = Path(args.output_dir) if args.output_dir else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    pos = main(["probe-pos", *common, *(["--max-sentences", "2000"] if args.quick else []),
                *(["--output", str(out / "pos_probe.json")] if out else [])])
    knowledge = main(["knowledge", *common, *(["--quick"] if args.quick else []),
                      *(["--output", str(out / "knowledge.json")] if out else [])])
    sys.exit(max(pos, knowledge))
