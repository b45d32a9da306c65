"""The PyTorch reference run: TorchMiniBERT trained exactly like the NumPy trainer, for equal-wall-time comparisons.

    python benchmarks/reference_torch.py --numpy-run RUN_DIR [--max-minutes M] [--output-dir DIR] [--threads N]
    python benchmarks/reference_torch.py [--config FILE] [--max-minutes M] [--max-steps N] [--output-dir DIR]
                                         [--threads N] [key=value ...]

--numpy-run (recommended) takes the configuration and the tokenizer from the NumPy run's checkpoint (its best/ or
latest step_*), so the two runs cannot differ in either. Without it the config comes from --config and the
overrides, as for `minibert train`; then give the NumPy run's tokenizer as data.tokenizer=RUN_DIR/best, because
WordPiece training (Hugging Face `tokenizers`) breaks ties in a different order in every process, so a vocabulary
trained here would differ from the NumPy run's (other ids, other pieces), and so would the data.

Like for like with `minibert train` given the same config and overrides:
  data      the same `prepare_data(cfg)`: same tokenizer, same packed rows, the same MLMBatches stream with the
            same seed (so the same rows and the same masks, batch for batch), the same fixed validation batches;
  init      TorchMiniBERT.from_numpy(MiniBERT(cfg.model, seed=training.seed)): the NumPy run's initial weights;
  optimizer torch.optim.AdamW with the same betas, eps and weight decay, decayed exactly where the NumPy decay_mask
            decays (matrices and embeddings; not biases, not LayerNorm), global-norm clipping with
            torch.nn.utils.clip_grad_norm_, the learning rate of `lr_at` set before every step, same max_steps;
  metrics   `evaluate_mlm` itself on the twin's logits (masked accuracy pooled over all masked positions,
            perplexity = exp(mean loss)) at the same eval_every, written to metrics.jsonl with the trainer's record
            format (step, elapsed_s, train_loss, lr, tokens_per_s, grad_norm, valid_*).
  time      elapsed_s starts when the first step starts (data preparation and model construction excluded, as in
            the trainer) and includes batch drawing, the steps, evaluation and log writes, as in the trainer. The
            trainer also writes checkpoints inside its clock; this script writes none, which can only favour
            PyTorch (about 0.1 s a save for the default model, ~55 saves in a 40-minute run: ~5 s).
Only dropout differs: PyTorch draws its own masks (seeded with training.seed); with dropout 0 the two runs compute
the same losses step for step (tests/test_reference_torch.py checks this to 1e-4).

PyTorch uses --threads intra-op threads (default: the cores this process may run on); training.threads, the NumPy
trainer's batch split, is not used here. The output folder defaults to training.output_dir + "-torch", so the same
config and overrides as the NumPy run put the reference beside it. Exit status: 0 done, 3 diverged, 130 Ctrl-C
or SIGTERM.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pydantic import ValidationError

from mini_bert.config import ConfigError, RunConfig, load_config, parse_overrides
from mini_bert.core.model import MiniBERT
from mini_bert.core.parameters import parameter_specs
from mini_bert.reference.torch_bert import TorchMiniBERT
from mini_bert.training.checkpointing import CheckpointError, load_checkpoint
from mini_bert.training.scheduler import lr_at
from mini_bert.training.trainer import TrainingDiverged, evaluate_mlm, prepare_data
from mini_bert.training.allocator import keep_freed_memory

DECAYED_KINDS = ("matrix", "embedding")      # as mini_bert.training.optimizer.decay_mask
PROGRESS_EVERY_S = 30.0                      # a progress line at most this often between evaluations


class ReferenceRunError(ValueError):
    """The reference run cannot start (e.g. its output folder already holds a run); the message says what to do."""


# ----------------------------------------------------------------------------------------------------------------
# Model, optimizer, one step


def build_model_and_optimizer(cfg: RunConfig) -> tuple[TorchMiniBERT, torch.optim.AdamW]:
    """The twin of the NumPy run's initial model, and AdamW with the NumPy run's hyperparameters and decay groups."""
    t = cfg.training
    model = TorchMiniBERT.from_numpy(MiniBERT(cfg.model, seed=t.seed))
    model.train()
    decay, no_decay = decay_groups(model)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=t.lr, betas=(t.beta1, t.beta2), eps=t.adam_eps)
    return model, optimizer


def decay_groups(model: TorchMiniBERT) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """(decayed, not decayed) parameters, decided by the kind of the NumPy parameters each torch tensor holds.

    Read from the same ParamSpec kinds that the NumPy decay_mask reads, so the two sides cannot disagree (a shape
    rule such as `ndim >= 2` would agree today, but only by coincidence).
    """
    kind = {}
    for spec in parameter_specs(model.config):
        for name in spec.parts or (spec.name,):
            kind[name] = spec.kind
    params = dict(model.named_parameters())
    decay, no_decay, seen = [], [], set()
    for np_names, torch_name, _ in model.numpy_name_map():
        kinds = {kind[n] for n in np_names}
        if len(kinds) != 1:
            raise ValueError(f"{torch_name} mixes NumPy parameter kinds {sorted(kinds)}; cannot choose its decay")
        (decay if kinds.pop() in DECAYED_KINDS else no_decay).append(params[torch_name])
        seen.add(torch_name)
    if seen != set(params):
        raise ValueError(f"parameters missing from numpy_name_map: {sorted(set(params) - seen)}")
    return decay, no_decay


def batch_tensors(batch) -> tuple[torch.Tensor, ...]:
    """A NumPy Batch as tensors: ids, attention mask, token types (B, T) long, masked positions (B, T) bool, and the
    targets at the masked positions (N,) long, in row-major order like the logits rows."""
    pos = torch.from_numpy(np.ascontiguousarray(batch.mask_positions))
    targets = torch.from_numpy(batch.target_ids[batch.mask_positions].astype(np.int64))
    return (torch.from_numpy(batch.input_ids.astype(np.int64)), torch.from_numpy(batch.attention_mask.astype(np.int64)),
            torch.from_numpy(batch.token_type_ids.astype(np.int64)), pos, targets)


def train_step(model: TorchMiniBERT, optimizer: torch.optim.Optimizer, batch, lr: float, grad_clip: float,
               step: int) -> tuple[float, float]:
    """Forward (logits at masked positions), mean cross-entropy, backward, clip, AdamW. Returns (loss, grad norm
    before clipping). `step` (1-based) only names the step in a divergence message."""
    ids, mask, types, pos, targets = batch_tensors(batch)
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    logits = model(ids, mask, types, masked_positions=pos)          # (N, V)
    loss = F.cross_entropy(logits, targets)                           # mean over the N masked positions
    loss.backward()
    # The trainer clips to grad_clip when it is > 0; 0 disables clipping there, max_norm=inf does so here.
    norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip if grad_clip > 0 else math.inf))
    value = loss.item()
    if not (math.isfinite(value) and math.isfinite(norm)):
        raise TrainingDiverged(f"non-finite {'loss' if not math.isfinite(value) else 'gradient'} at step {step} of "
                               f"the PyTorch reference. Lower training.lr, raise warmup_ratio, or keep "
                               f"training.grad_clip > 0.")
    optimizer.step()
    return value, norm


# ----------------------------------------------------------------------------------------------------------------
# Evaluation: the trainer's own metric code, fed the twin's logits


class _NumpyLogits:
    """Presents the twin with MiniBERT's forward signature, returning NumPy logits, so that `evaluate_mlm` (the
    one implementation of the validation metrics) evaluates it exactly as it evaluates the NumPy model."""

    def __init__(self, model: TorchMiniBERT):
        self.model = model

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, training=False, masked_positions=None):
        logits = self.model(input_ids, attention_mask, token_type_ids, masked_positions=masked_positions)
        return logits.numpy(), None


def evaluate(model: TorchMiniBERT, batches) -> dict:
    """valid_loss, valid_masked_acc, valid_perplexity, valid_masked_tokens on the fixed validation batches."""
    model.eval()
    try:
        with torch.inference_mode():
            return evaluate_mlm(_NumpyLogits(model), batches)
    finally:
        model.train()


# ----------------------------------------------------------------------------------------------------------------
# The run


def default_threads() -> int:
    """The cores this process may run on (os.cpu_count() where affinity is not available)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def vocab_fingerprint(tokenizer) -> str:
    """SHA-1 of the vocabulary (tokens in id order): equal fingerprints mean the two runs tokenised alike."""
    return hashlib.sha1("\n".join(tokenizer.vocab).encode("utf-8")).hexdigest()


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def config_from_numpy_run(run_dir: str | Path, overrides: list[str] | None = None):
    """(RunConfig, tokenizer) of a NumPy run, read from its checkpoint (best/ or the latest step_*), with key=value
    overrides applied on top (e.g. training.max_minutes=40)."""
    ck = load_checkpoint(run_dir)
    data = _merge(ck.config.model_dump(), parse_overrides(overrides or []))
    try:
        cfg = RunConfig(**data)
    except ValidationError as e:
        raise ConfigError(f"{ck.path}/config.yaml + overrides: {e}") from None
    return cfg, ck.tokenizer


def train_reference(cfg: RunConfig, output_dir: str | Path, threads: int | None = None, log=print,
                    tokenizer=None) -> dict:
    """Train the PyTorch twin as the NumPy trainer would train MiniBERT; write output_dir/metrics.jsonl and
    output_dir/run_info.json. Returns a summary (stop_reason, steps, elapsed_s, last evaluation, ...).

    tokenizer: the NumPy run's (see config_from_numpy_run); None loads data.tokenizer or trains one, as the
    trainer does (a trained one may differ from the NumPy run's: a warning says so).

    Raises ReferenceRunError if output_dir already holds metrics.jsonl (nothing is overwritten), TrainingDiverged
    on a non-finite loss or gradient.
    """
    out = Path(output_dir)
    metrics_path = out / "metrics.jsonl"
    if metrics_path.exists():
        raise ReferenceRunError(f"{metrics_path} already exists; nothing was overwritten. Choose another "
                                f"--output-dir or delete that run")
    threads = default_threads() if threads is None else int(threads)
    if threads < 1:
        raise ReferenceRunError(f"--threads must be >= 1; got {threads}")
    torch.set_num_threads(threads)
    t = cfg.training
    torch.manual_seed(t.seed)                  # dropout masks: PyTorch's own, but reproducible

    if tokenizer is None and cfg.data.tokenizer is None:
        log("warning: training a WordPiece vocabulary here; it will likely differ from the NumPy run's (tie order "
            "varies between processes). For like-for-like data use --numpy-run RUN_DIR or data.tokenizer=RUN_DIR/best")
    tokenizer, stream, valid = prepare_data(cfg, tokenizer, log=log)
    model, optimizer = build_model_and_optimizer(cfg)
    warmup_steps = int(round(t.warmup_ratio * t.max_steps))      # as the trainer rounds it
    out.mkdir(parents=True, exist_ok=True)
    info = {"framework": f"torch {torch.__version__}", "threads": threads, "vocab_sha1": vocab_fingerprint(tokenizer),
            "parameters": sum(p.numel() for p in model.parameters()), "config": cfg.model_dump()}
    (out / "run_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    log(f"PyTorch {torch.__version__} reference, {threads} threads, {info['parameters']:,} parameters; "
        f"writing {metrics_path}")

    step, elapsed, stop_reason, last_eval, best = 0, 0.0, "max_steps", {}, None
    window_loss, window_tokens, window_steps = 0.0, 0, 0
    jsonl = open(metrics_path, "a", encoding="utf-8")
    # Ctrl-C and SIGTERM end the run as "interrupted", also when a script started it in the background, where the
    # shell leaves SIGINT ignored (Python then never raises KeyboardInterrupt)
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    previous = ({sig: signal.signal(sig, signal.default_int_handler) for sig in stop_signals}
                if threading.current_thread() is threading.main_thread() else {})
    t_start = window_t0 = last_print = time.perf_counter()
    try:
        while step < t.max_steps:
            lr = lr_at(step, t.lr, warmup_steps, t.max_steps, t.schedule, t.min_lr_ratio)
            batch = stream.next_batch()
            loss, norm = train_step(model, optimizer, batch, lr, t.grad_clip, step + 1)
            step += 1
            elapsed = time.perf_counter() - t_start
            window_loss += loss
            window_steps += 1
            window_tokens += int(batch.attention_mask.sum())
            record = None
            out_of_time = t.max_minutes is not None and elapsed >= t.max_minutes * 60
            # the last step gets a record whatever stops the run, so the log shows the clock reaching max_minutes
            if step % t.log_every == 0 or step == t.max_steps or out_of_time:
                dt = time.perf_counter() - window_t0
                record = {"step": step, "elapsed_s": round(elapsed, 3), "train_loss": window_loss / window_steps,
                          "lr": lr, "tokens_per_s": window_tokens / dt if dt > 0 else 0.0, "grad_norm": norm}
                if time.perf_counter() - last_print >= PROGRESS_EVERY_S:
                    log(f"step {step}/{t.max_steps}: loss {record['train_loss']:.3f}, lr {lr:.2e}, "
                        f"{record['tokens_per_s']:.0f} tokens/s ({elapsed / 60:.1f} min)")
                    last_print = time.perf_counter()
                window_loss, window_tokens, window_steps, window_t0 = 0.0, 0, 0, time.perf_counter()
            if step % t.eval_every == 0 or step == t.max_steps:
                last_eval = evaluate(model, valid)
                record = record or {"step": step, "elapsed_s": round(elapsed, 3)}
                record.update(last_eval)
                window_t0 = time.perf_counter()   # tokens/s measures training, not evaluation
                if best is None or last_eval["valid_loss"] < best:
                    best = last_eval["valid_loss"]
                log(f"step {step}: valid masked acc {last_eval['valid_masked_acc']:.4f}, "
                    f"perplexity {last_eval['valid_perplexity']:.1f} ({elapsed / 60:.1f} min)")
                last_print = time.perf_counter()
            if record is not None:
                jsonl.write(json.dumps(record) + "\n")
                jsonl.flush()
            if out_of_time:
                stop_reason = "max_minutes"
                break
    except KeyboardInterrupt:
        stop_reason = "interrupted"
    finally:
        jsonl.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    summary = {"stop_reason": stop_reason, "steps": step, "elapsed_s": round(elapsed, 3), "best_valid_loss": best,
               **last_eval}
    info["summary"] = summary
    (out / "run_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return summary


# ----------------------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--numpy-run", help="the NumPy run folder: take its config and tokenizer (recommended)")
    ap.add_argument("--config", help="YAML file or name under configs/, as for `minibert train`")
    ap.add_argument("--max-minutes", type=float, help="shortcut for training.max_minutes=M")
    ap.add_argument("--max-steps", type=int, help="shortcut for training.max_steps=N (the schedule's length)")
    ap.add_argument("--output-dir", help="where metrics.jsonl goes (default: training.output_dir + '-torch')")
    ap.add_argument("--threads", type=int, default=None,
                    help=f"torch.set_num_threads (default: the cores available, here {default_threads()})")
    ap.add_argument("overrides", nargs="*", help="key=value settings, e.g. training.lr=3e-4 model.num_layers=2")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # the process setting `minibert` uses; it applies to both sides (PyTorch allocates through malloc too)
    keep_freed_memory()
    overrides = list(args.overrides)
    for flag, key in (("max_minutes", "training.max_minutes"), ("max_steps", "training.max_steps")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    try:
        if args.numpy_run and args.config:
            raise ReferenceRunError("give --numpy-run or --config, not both: --numpy-run takes the run's own config")
        tokenizer = None
        if args.numpy_run:
            cfg, tokenizer = config_from_numpy_run(args.numpy_run, overrides)
        else:
            cfg = load_config(args.config, overrides)
        output_dir = args.output_dir or cfg.training.output_dir.rstrip("/") + "-torch"
        summary = train_reference(cfg, output_dir, args.threads, tokenizer=tokenizer)
    except (ConfigError, ReferenceRunError, CheckpointError) as e:
        print(f"reference_torch: {e}", file=sys.stderr)
        return 2
    except TrainingDiverged as e:
        print(f"reference_torch: stopped: {e}", file=sys.stderr)
        return 3
    print(json.dumps(summary))
    return 130 if summary["stop_reason"] == "interrupted" else 0


if __name__ == "__main__":
    sys.exit(main())
