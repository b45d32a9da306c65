"""Evaluate a trained checkpoint: a thin wrapper over `minibert evaluate`.

    python scripts/evaluate_model.py --checkpoint runs/default --quick --output runs/default/evaluation.json
    python scripts/evaluate_model.py --overfit-one-batch             # can the model memorise one batch?

Every argument goes to `minibert evaluate` unchanged (`--help` lists them). The report is built by
mini_bert/evaluation/evaluate.py.
"""

import sys

from mini_bert.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
