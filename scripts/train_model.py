"""Pretrain Mini-BERT with masked-language modelling: a thin wrapper over `minibert train`.

    python scripts/train_model.py --config debugging                 # the whole pipeline in about a minute
    python scripts/train_model.py --max-steps 4500 --output-dir runs/default
    python scripts/train_model.py --resume --output-dir runs/default # continue a stopped run exactly

Every argument goes to `minibert train` unchanged (`--help` lists them; key=value settings such as
training.lr=1e-3 override the configuration). The training loop itself is mini_bert/training/trainer.py.
"""

import sys

from mini_bert.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
