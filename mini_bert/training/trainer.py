"""The pretraining loop: forward (MLM logits at masked positions only), loss, backward, clip, optimizer step;
periodic held-out evaluation, metrics (JSONL, CSV, optional TensorBoard), atomic checkpoints, exact resume.

    minibert train [--config FILE] [--resume] [key=value ...]
    minibert selftest

Data flow from the CLI: cli/train.py `run_train` -> `Trainer.train` (each step: `GradientWorker.loss_and_gradients`
in training/step.py, then `Trainer.apply_gradients`) -> core/gradients.py `MiniBERTGradients.mlm_loss_and_backward`.
Under `mpirun -n N` each rank trains on its rows of every batch and one Allreduce sums the gradients
(training/distributed.py, `self.world`); training.device=cuda puts the buffers on a GPU (training/device.py).

Phase 3 options (all off by default; see `build_optimizer` and `prepare_data`): training.optimizer=lion,
training.lookahead_k (Lookahead around it), training.agc_clip (unit-wise adaptive gradient clipping, before the
global-norm clip), training.layer_lr_decay (per-layer learning-rate multipliers), data.curriculum (easiest rows
first) and data.adaptive_masking (the mask rate follows the training loss and the validation accuracy).

Exact resume: everything that decides the next step is checkpointed — parameters, the optimizer's whole state
(AdamW's m, v and t; Lion's m; Lookahead's slow weights), the data stream's permutation (or the curriculum's step),
position and RNG, the adaptive masking rule's state, and each worker thread's dropout RNG — and the batch is split
across threads in a fixed way, so a resumed run repeats the uninterrupted run's losses bit for bit.
"""

from __future__ import annotations

import csv
import errno
import json
import math
import os
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from ..config import RunConfig
from ..core.model import MiniBERT
from ..errors import CheckpointError, ConfigError, DataError
from .advanced_optimizers import AdaptiveGradientClipper, Lion, Lookahead
from ..data.sources import atomic_write_text, check_output_path
from .checkpointing import (latest_checkpoint, load_checkpoint, prune_checkpoints, restore_replaced, rng_state,
                            save_checkpoint, set_rng_state)
from .curriculum import AdaptiveMasking, CurriculumBatches, linear_schedule
from .optimizer import AdamW, clip_grad_norm, clip_grad_norm_groups, layer_wise_lr_scales, decay_mask
from .scheduler import decay_progress, lr_at
from .device import resolve_device
from .distributed import detect_world
from .electra import ElectraWorker, build_electra, check_electra
from .step import GradientWorker, evaluate_mlm, first_nonfinite, split_batch

CSV_COLUMNS = ["step", "elapsed_s", "train_loss", "lr", "tokens_per_s", "grad_norm",
               "valid_loss", "valid_masked_acc", "valid_perplexity"]


class TrainingDiverged(RuntimeError):
    """A non-finite loss or gradient; the message names the first tensor that went non-finite."""


# ----------------------------------------------------------------------------------------------------------------
# Data


def corpus_tokenizer(train_text: list[str], vocab_size: int, lowercase: bool, log=print):
    """The WordPiece vocabulary of a corpus (`WordPieceTokenizer.train_fitted`: every token occurs in the text),
    trained once and then reused from the cache folder.

    Hugging Face's trainer breaks ties between equally frequent pairs in hash-map order, which differs from process
    to process (huggingface/tokenizers#1794): two trainings on the same text can learn slightly different pieces.
    Reusing the first one makes every later run on this machine use the same vocabulary, so runs stay comparable.
    """
    import hashlib

    from ..data.sources import cache_dir
    from ..data.tokenizer import WordPieceTokenizer

    digest = hashlib.sha256()
    for line in train_text:
        digest.update(line.encode("utf-8") + b"\n")
    key = f"{digest.hexdigest()[:16]}-v{vocab_size}-{'lower' if lowercase else 'cased'}-fitted"
    folder = cache_dir() / "tokenizers" / key
    if (folder / "vocab.txt").exists():
        log(f"reusing the WordPiece vocabulary trained earlier on this corpus ({folder})")
        return WordPieceTokenizer.load(folder)
    t0 = time.time()
    tokenizer = WordPieceTokenizer.train_fitted(train_text, vocab_size=vocab_size, lowercase=lowercase)
    log(f"trained a WordPiece vocabulary of {tokenizer.vocab_size} on {len(train_text):,} lines in "
        f"{time.time() - t0:.1f}s (every token occurs in them); cached in {folder}")
    tokenizer.save(folder)
    return tokenizer


def prepare_data(cfg: RunConfig, tokenizer=None, log=print):
    """Corpus (or mixture) -> tokenizer (trained unless given) -> packed rows (cached) -> training stream + fixed
    validation batches. A mixture's corpora are packed separately and mixed by row in their weights
    (`mixture_rows`); its validation rows are each corpus' held-out rows in the same shares."""
    from ..config import parse_corpus
    from ..data.batches import MLMBatches, fixed_validation_batches, mixture_rows, pack_corpus
    from ..data.corpora import HOLDOUT_EVERY, corpus_lines
    from ..data.readers import split_sentences
    from ..data.tokenizer import WordPieceTokenizer

    d, m, t = cfg.data, cfg.model, cfg.training
    components = parse_corpus(d.corpus)
    train_text = [corpus_lines(c.name, "train", d.data_dir) for c in components]
    valid_text = [corpus_lines(c.name, "valid", d.data_dir) for c in components]
    for c, train_lines, valid_lines in zip(components, train_text, valid_text):
        if not any(line.strip() for line in train_lines):
            n = len(train_lines) + len(valid_lines)
            raise DataError(f"data.corpus {c.name!r} has {n} line(s) and no training text once its held-out lines "
                            f"are set aside (every {HOLDOUT_EVERY}th line, or the last one of a shorter corpus); "
                            f"give it more lines: one line per sentence or paragraph, a few thousand at least for "
                            f"a useful vocabulary")
    if tokenizer is None:
        tokenizer = WordPieceTokenizer.load(d.tokenizer) if d.tokenizer else corpus_tokenizer(
            [line for lines in train_text for line in lines], m.vocab_size, d.lowercase, log)
    if tokenizer.vocab_size != m.vocab_size:
        raise ConfigError(f"the tokenizer has {tokenizer.vocab_size} tokens but model.vocab_size is {m.vocab_size}; "
                          f"set model.vocab_size={tokenizer.vocab_size}")
    if d.rows == "sentences":
        train_text = [[s for line in lines for s in split_sentences(line)] for lines in train_text]
    train = [pack_corpus(lines, tokenizer, d.max_seq_len, log=log) for lines in train_text]
    valid = [pack_corpus(lines, tokenizer, d.max_seq_len, log=log) for lines in valid_text]
    if len(components) == 1:
        (train_ids, train_tt), (valid_ids, valid_tt) = train[0], valid[0]
    else:
        weights = [c.weight for c in components]
        train_ids, train_tt = mixture_rows(train, weights)
        n_valid = d.valid_batches * t.batch_size
        take = [max(1, int(round(w * n_valid))) for w in weights]
        valid_ids = np.concatenate([ids[:k] for (ids, _), k in zip(valid, take)])
        valid_tt = np.concatenate([tt[:k] for (_, tt), k in zip(valid, take)])
    if d.curriculum == "none":
        stream = MLMBatches(train_ids, train_tt, t.batch_size, m.vocab_size, d.mask_prob, seed=t.seed,
                            **masking_options(cfg, tokenizer))
    else:
        # competence grows linearly from curriculum_start to 1 (all rows) over curriculum_steps
        steps = d.curriculum_steps or max(1, t.max_steps // 2)
        stream = CurriculumBatches(train_ids, train_tt, t.batch_size, m.vocab_size,
                                   linear_schedule(d.curriculum_start, 1.0, steps), d.curriculum, d.mask_prob,
                                   seed=t.seed)
    valid = fixed_validation_batches(valid_ids, valid_tt, t.batch_size, m.vocab_size, max_batches=d.valid_batches)
    log(f"corpus {d.corpus}: {len(train_ids):,} training and {len(valid_ids):,} validation sequences of "
        f"{d.max_seq_len} tokens ({int((train_ids > 0).sum()):,} training tokens)")
    return tokenizer, stream, valid


def masking_options(cfg: RunConfig, tokenizer) -> dict:
    """mask_tokens' keyword arguments for data.masking, data.mask_fraction and data.random_fraction (the held-out
    batches always use BERT's 15% token-level 80/10/10 rule, HELD_OUT_MASK_PROB, so every recipe's curve is
    measured on the same task)."""
    d = cfg.data
    options = {"mask_fraction": d.mask_fraction, "random_fraction": d.random_fraction}
    if d.masking == "whole_word":
        options["continuation"] = tokenizer.continuation_mask()
    return options


def adaptive_masking(cfg: RunConfig) -> AdaptiveMasking | None:
    """The mask-rate rule of data.adaptive_masking (None when off): it starts at data.mask_prob and moves within
    [0.10, 0.40] (widened to include mask_prob)."""
    d = cfg.data
    if not d.adaptive_masking:
        return None
    return AdaptiveMasking(start=d.mask_prob, min_ratio=min(0.10, d.mask_prob), max_ratio=max(0.40, d.mask_prob))


# ----------------------------------------------------------------------------------------------------------------
# The optimizer


def build_optimizer(model: MiniBERT, cfg: RunConfig):
    """The optimizer of training.optimizer over model.store.flat: AdamW or Lion (both with training.beta1/beta2 and
    weight_decay on matrices only), per-parameter LR multipliers layer_wise_lr_scales(model, layer_lr_decay) when
    layer_lr_decay < 1, wrapped in Lookahead(k=lookahead_k, alpha=lookahead_alpha) when lookahead_k > 0.
    Every one of them has step(grads_flat, lr), state_dict(), load_state_dict() and `kind` (recorded in checkpoints).
    """
    t = cfg.training
    flat, mask = model.store.flat, decay_mask(model.store)
    scales = None
    if t.layer_lr_decay < 1.0:
        scales = layer_wise_lr_scales(model, t.layer_lr_decay)
    if t.optimizer == "lion":
        opt = Lion(flat, mask, lr=t.lr, betas=(t.beta1, t.beta2), weight_decay=t.weight_decay, lr_scale=scales)
    else:
        opt = AdamW(flat, mask, lr=t.lr, betas=(t.beta1, t.beta2), eps=t.adam_eps, weight_decay=t.weight_decay,
                    lr_scale=scales)
    if t.lookahead_k > 0:
        opt = Lookahead(opt, flat, k=t.lookahead_k, alpha=t.lookahead_alpha)
    return opt


# Settings whose checkpointed state only fits a run that uses the same ones (what a resume must not change).
STATEFUL_SETTINGS = (("training", "optimizer"), ("training", "lookahead_k"), ("data", "curriculum"),
                     ("data", "adaptive_masking"), ("training", "objective"), ("training", "generator_width"))


def steps_for_budget(steps_done: int, seconds: float, max_minutes: float, cap: int) -> int:
    """The schedule length that ends at max_minutes when the steps go on costing what steps_done of them took
    (seconds, evaluations included): at most cap, and never before the steps already taken."""
    return max(steps_done, min(cap, int(max_minutes * 60 * steps_done / seconds)))


def initial_weights(cfg: RunConfig, log=print):
    """training.init_from: (the model with that checkpoint's weights, its tokenizer). Its model settings must be
    cfg.model's, and data.tokenizer unset (the checkpoint's vocabulary is the one its embeddings were trained on)."""
    source = cfg.training.init_from
    if cfg.data.tokenizer:
        raise ConfigError(f"training.init_from={source} brings its checkpoint's vocabulary; leave data.tokenizer "
                          f"unset (it is {cfg.data.tokenizer})")
    start = load_checkpoint(source)
    if start.config.model != cfg.model:
        changed = [f"model.{k}: {getattr(start.config.model, k)!r} there, {getattr(cfg.model, k)!r} here"
                   for k in type(cfg.model).model_fields if getattr(start.config.model, k) != getattr(cfg.model, k)]
        raise ConfigError(f"training.init_from={source}: its model differs from this run's ({'; '.join(changed)}); "
                          f"set the model.* settings to the checkpoint's")
    log(f"starting from the weights and vocabulary of {start.path}")
    return start.model, start.tokenizer


def check_resumable(cfg: RunConfig, saved: RunConfig, where) -> None:
    """Refuse to resume a checkpoint with a different model or different stateful settings (STATEFUL_SETTINGS)."""
    if saved.model != cfg.model:
        raise ConfigError(f"--resume: the model config differs from the checkpoint's ({where}); "
                          "resume with the same configuration")
    changed = [(f"{sec}.{key}", getattr(getattr(saved, sec), key), getattr(getattr(cfg, sec), key))
               for sec, key in STATEFUL_SETTINGS
               if getattr(getattr(saved, sec), key) != getattr(getattr(cfg, sec), key)]
    if changed:
        raise ConfigError(f"--resume: {where} was trained with "
                          + ", ".join(f"{k}={old} (this configuration says {new})" for k, old, new in changed)
                          + "; its saved state only fits those settings. Resume with "
                          + " ".join(f"{k}={str(old).lower() if isinstance(old, bool) else old}"
                                     for k, old, _ in changed))


def check_distributed(cfg: RunConfig, ranks: int) -> None:
    """What an MPI run of `ranks` ranks needs: a global batch that splits evenly, and none of the options that
    decide on one rank's own measurements (each would need its own agreement step)."""
    t = cfg.training
    if t.batch_size % ranks:
        lower, upper = t.batch_size // ranks * ranks, -(-t.batch_size // ranks) * ranks
        raise ConfigError(f"training.batch_size={t.batch_size} (the global batch) does not split evenly across "
                          f"{ranks} MPI ranks; use a multiple of {ranks}, e.g. "
                          f"{' or '.join(str(b) for b in (lower, upper) if b > 0)}")
    refused = [(t.analysis_every > 0, "training.analysis_every > 0 (the in-training analysis reads one process' "
                                      "activations)"),
               (t.schedule_to_budget, "training.schedule_to_budget (it times one process' steps)"),
               (t.device != "cpu", f"training.device={t.device} (each rank trains on the CPU)")]
    for bad, what in refused:
        if bad:
            raise ConfigError(f"{what} is not available with {ranks} MPI ranks; train in one process for it")


def data_digest(tokenizer, stream) -> str:
    """SHA-256 of the vocabulary and the training rows, so that all ranks can check they train on the same data."""
    import hashlib

    digest = hashlib.sha256("\n".join(tokenizer.vocab).encode("utf-8"))
    for rows in (stream.sequences, stream.token_type_ids):
        digest.update(np.ascontiguousarray(rows).tobytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# The run folder


def _csv_step(line: str) -> int | None:
    """The step of a metrics.csv row (None for the header); ValueError for a torn row."""
    if line.startswith("step"):
        return None
    cells = line.split(",")
    if len(cells) != len(CSV_COLUMNS):
        raise ValueError(f"a row of {len(cells)} cells, not {len(CSV_COLUMNS)}")
    return int(cells[0])


class RunFolderLock:
    """One owner per run folder: an OS lock (flock) on RUN/train.lock, held by the live process, so a crash never
    leaves a stale lock. A second training into the same folder is refused with the holder's process id."""

    def __init__(self, run_dir: Path):
        import fcntl
        import os

        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / "train.lock"
        self._file = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise CheckpointError(f"{run_dir} is in use by a training that is still running (process {holder}); "
                                  f"nothing was written. Wait for it, stop it, or choose another "
                                  f"training.output_dir") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"{os.getpid()}\n")
        self._file.flush()

    def release(self) -> None:
        if not self._file.closed:
            self._file.close()                     # closing the file releases the flock


# ----------------------------------------------------------------------------------------------------------------
# The trainer


class Trainer:
    def __init__(self, cfg: RunConfig, resume: bool = False, log=print, progress: bool = True, monitor=None,
                 world=None):
        """monitor: what observes every step when training.analysis_every > 0 (`analysis.issues.TrainingMonitor`,
        which `minibert train` passes in; anything with its observe(...) and issues()).
        world: the processes training together (training/distributed.py); default `detect_world()`: one process,
        or the MPI ranks when launched by mpirun. Only rank 0 logs, evaluates and writes."""
        from .allocator import keep_freed_memory

        # about 15% off a step: temporaries stop costing page faults (training/allocator.py). Before any thread starts,
        # the tokenizer's included: a thread keeps the malloc arena it was first given.
        keep_freed_memory()
        self.world = detect_world() if world is None else world
        if not self.world.is_root:
            log, progress = (lambda *a, **k: None), False
        self.cfg, self.log, self.progress = cfg, log, progress
        self._lock = None
        try:
            with self.world.startup():      # a mistake on any rank stops every rank here, with exit code 2
                self._start(cfg, resume, monitor)
        except BaseException:
            if self._lock is not None:
                self._lock.release()           # a trainer that failed to start holds nothing
            raise

    def _start(self, cfg: RunConfig, resume: bool, monitor) -> None:
        t, world, log = cfg.training, self.world, self.log
        world.check_same("configuration", {**cfg.model_dump(), "--resume": resume})
        self.device = resolve_device(t.device)               # before any work: a missing CuPy or GPU is a ConfigError
        if self.device.name != "cpu":
            if t.analysis_every:
                raise ConfigError(f"training.analysis_every > 0 reads activations with NumPy on the host; it is not "
                                  f"available with training.device={t.device}")
            log(f"device: {self.device.describe()}")
        if world.size > 1:
            check_distributed(cfg, world.size)
        cfg.check_trainable()
        self.electra = t.objective == "electra"
        if self.electra:
            check_electra(cfg, world.size, t.device)
        self.run_dir = check_output_path(t.output_dir, "training.output_dir", folder=True)   # before data prep
        existing = latest_checkpoint(self.run_dir)
        if resume and existing is None:
            raise CheckpointError(f"--resume: no checkpoint in {self.run_dir}; start a new run without --resume "
                                  f"(or point training.output_dir at the run to resume)")
        if not resume and existing is not None:
            raise CheckpointError(f"{self.run_dir} already holds a run ({existing.name}); nothing was overwritten. "
                                  f"Resume it with --resume, or choose another training.output_dir")
        self.state: dict = {"step": 0, "elapsed_s": 0.0, "best_valid_loss": None}
        tokenizer = None
        if resume:
            ck = load_checkpoint(existing)
            check_resumable(cfg, ck.config, existing)
            self.model, tokenizer, self.state = ck.model, ck.tokenizer, ck.trainer_state
            self.cfg = cfg = cfg.model_copy(update={"training": cfg.training.model_copy(
                update={"output_dir": str(self.run_dir)})})
        else:
            self.model = MiniBERT(cfg.model, seed=t.seed)
            if t.init_from:
                self.model, tokenizer = initial_weights(cfg, log)
        if self.electra:          # the model becomes the discriminator of a pair, trained with its generator
            pair = build_electra(cfg)
            pair.discriminator.load_state_dict(self.model.state_dict())      # its seed's, init_from's or resumed
            if resume:
                if ck.auxiliary is None:
                    raise CheckpointError(f"{existing} has no auxiliary.safetensors (the ELECTRA generator); it "
                                          f"cannot be resumed with training.objective=electra")
                try:
                    pair.load_auxiliary_state_dict(ck.auxiliary)
                except ValueError as e:
                    raise CheckpointError(f"{existing / 'auxiliary.safetensors'}: {e}") from None
            self.model = pair
        with world.root_first():              # rank 0 trains and caches the tokenizer; the other ranks reuse it
            self.tokenizer, self.stream, self.valid = prepare_data(cfg, tokenizer, log)
        if world.size > 1:                     # the digest reads every row: only where there is something to compare
            world.check_same("data (tokenizer and training rows)", data_digest(self.tokenizer, self.stream))
        if world.is_root:
            self._lock = RunFolderLock(self.run_dir)       # before the first byte is written into the run folder
            restore_replaced(self.run_dir / "best")         # a kill while best/ was being replaced must not lose it
        # checked again under the lock: another run may have written its first checkpoint meanwhile
        if not resume and latest_checkpoint(self.run_dir) is not None:
            raise CheckpointError(f"{self.run_dir} already holds a run; nothing was overwritten. Resume it with "
                                  f"--resume, or choose another training.output_dir")
        self.device.move_model(self.model)
        threads = 1 if self.device.name == "cuda" else t.threads      # a GPU parallelises within each op
        if self.electra:
            self.worker = ElectraWorker(self.model, threads, t.seed, t.electra_weight, first_stream=0)
        else:
            self.worker = GradientWorker(self.model, threads, t.seed, first_stream=world.rank * threads)
        for g in self.worker.thread_grads:
            self.device.move_gradients(g)
        world.attach(self.worker.grads)                # the Allreduce buffer (nothing to do in one process)
        self.threads = self.worker.threads
        # the validation batches cut into the row blocks that the training threads take (see evaluate)
        self._valid_blocks = [self.device.put(block) for b in self.valid for block in split_batch(b, self.threads)]
        self.optimizer = build_optimizer(self.model, cfg)
        if hasattr(self.optimizer, "use_threads"):      # AdamW's update is elementwise: split it like the batch
            self.optimizer.use_threads(self.worker.pool, self.threads)
        self.agc = (AdaptiveGradientClipper(self.model.store.flat, self.model.store, clip=t.agc_clip)
                    if t.agc_clip > 0 else None)
        self.masking = adaptive_masking(cfg)
        self.group_norms: dict[str, float] = {}      # apply_gradients: each model's norm before a per-model clip
        self.max_steps = t.max_steps                # the schedule's length
        self.decay_from = None                      # lr_at's decay anchor, once the length has been fitted again
        if t.schedule_to_budget:                    # fitted at start-up, again at each evaluation; checkpointed
            if "max_steps" not in self.state:
                self.state["max_steps"] = self.fit_schedule()
            self.max_steps = self.state["max_steps"]
            self.decay_from = tuple(self.state["decay_from"]) if "decay_from" in self.state else None
        self.warmup_steps = self.state.get("warmup_steps", int(round(t.warmup_ratio * self.max_steps)))
        if t.schedule_to_budget:
            self.state["warmup_steps"] = self.warmup_steps      # fixed from start-up: a refit moves only the end
        if resume:
            if ck.optimizer_state is None:
                raise CheckpointError(f"{existing} has no optimizer state; it cannot be resumed exactly")
            if ck.optimizer_kind != self.optimizer.kind:
                raise CheckpointError(f"{existing} holds the state of optimizer {ck.optimizer_kind}, but this "
                                      f"configuration builds {self.optimizer.kind}; resume with the run's "
                                      f"training.optimizer and training.lookahead_k")
            try:
                self.optimizer.load_state_dict(self.device.put_state(ck.optimizer_state))
                self.stream.load_state_dict(self.state["data"])
                if self.masking is not None:
                    self.masking.load_state_dict(self.state["adaptive_masking"])
            except (KeyError, ValueError) as e:
                raise CheckpointError(f"{existing}: its saved state does not fit this run ({e!r}); resume with the "
                                      f"settings the run was started with") from None
            if self.masking is not None:
                self.stream.mask_prob = self.masking.ratio
            # the dropout streams of all ranks' threads, rank by rank: this rank's come after the earlier ranks'
            saved = self.state["thread_rngs"][world.rank * self.threads:]
            for r, s in zip(self.worker.rngs, saved):
                set_rng_state(r, s)
            self.log(f"resumed {existing} at step {self.state['step']}")
        if t.analysis_every and monitor is None:
            raise ConfigError("training.analysis_every > 0 needs a monitor: pass Trainer(cfg, monitor="
                              "TrainingMonitor(every=...)) from mini_bert.analysis.issues (minibert train does)")
        self.monitor = monitor

    def fit_schedule(self, timed_steps: int = 3) -> int:
        """The schedule's length for training.schedule_to_budget: max_minutes divided by the measured cost of a
        step (gradients of a validation batch, timed after one untimed call, plus 5% for clipping and the optimizer)
        with its share of an evaluation; at most max_steps. Nothing is trained: weights, optimizer and data stream
        are untouched."""
        from threadpoolctl import threadpool_limits

        t = self.cfg.training
        batch = self.device.put(self.valid[0])
        with threadpool_limits(1) if self.threads > 1 else nullcontext():     # as in train()
            self.worker.loss_and_gradients(batch)
            t0 = time.perf_counter()
            for _ in range(timed_steps):
                self.worker.loss_and_gradients(batch)
            step_s = 1.05 * (time.perf_counter() - t0) / timed_steps
            t0 = time.perf_counter()
            self.evaluate()
            per_step = step_s + (time.perf_counter() - t0) / t.eval_every
        steps = max(1, min(t.max_steps, int(t.max_minutes * 60 / per_step)))
        self.log(f"schedule fitted to {t.max_minutes:g} minutes: {steps:,} steps ({per_step * 1000:.0f} ms per step "
                 f"with its share of evaluation)")
        return steps

    def refit_schedule(self, step: int, seconds: float) -> None:
        """training.schedule_to_budget, at every evaluation: fit the schedule's length again to the budget from the
        real cost of the steps so far (`seconds` for `step` steps, evaluations and best/ included). Timing a few
        gradient calls before the first step (`fit_schedule`) misjudges a step by up to about a tenth either way,
        and a step's cost drifts during a run, which would end the schedule before the budget, or leave the rate
        above zero when the budget stops the run. The decay goes on from the progress it had reached at `step`
        (lr_at's decay_from), so the rate never jumps; warmup keeps its start-up length. The new length and the
        anchor are checkpointed with the rest of the state."""
        t = self.cfg.training
        fitted = steps_for_budget(step, seconds, t.max_minutes, t.max_steps)
        first = not self.state.get("schedule_refitted")
        if fitted != self.max_steps:
            anchor = max(step, self.warmup_steps)
            self.decay_from = (anchor, decay_progress(anchor, self.warmup_steps, self.max_steps, self.decay_from))
            self.state["decay_from"] = list(self.decay_from)
            if first or abs(fitted - self.max_steps) >= 0.01 * self.max_steps:
                self.log(f"schedule fitted again to {t.max_minutes:g} minutes at step {step}: {fitted:,} steps "
                         f"(was {self.max_steps:,}; {seconds / step * 1000:.0f} ms per step so far)")
        self.state["max_steps"], self.state["schedule_refitted"] = fitted, True
        self.max_steps = fitted

    def apply_gradients(self, loss: float, lr: float) -> tuple[float, float]:
        """After `worker.loss_and_gradients`: sum the ranks' gradients and loss (MPI), adaptive clipping (if on),
        global-norm clipping (ELECTRA with training.electra_clip=per_model: the generator and the discriminator
        each to grad_clip), the non-finite check, the optimizer step. Returns (loss, the global grad norm before
        clipping)."""
        loss = self.world.reduce(loss)                          # MPI: the one Allreduce of gradients and loss
        g = self.worker.grads
        if self.agc is not None:
            # unit-wise first: it bounds each unit's step relative to its weights, whatever the loss scale
            self.agc(g.flat)
        t = self.cfg.training
        if self.electra and t.electra_clip == "per_model":
            norms = clip_grad_norm_groups(self.model.model_slices(g.flat), t.grad_clip)
            self.group_norms = {f"{name}_grad_norm": n for name, n in norms.items()}
            norm = math.sqrt(sum(n * n for n in norms.values()))          # the global norm before clipping
        else:
            norm = clip_grad_norm(g.flat, t.grad_clip)
        if not (math.isfinite(loss) and math.isfinite(norm)):
            # a non-finite parameter is the cause when there is one; else name the first gradient that overflowed
            bad_param = first_nonfinite(self.model.params.items())
            bad_grad = None if bad_param else first_nonfinite(g.gradients.items())
            raise TrainingDiverged(
                f"non-finite {'loss' if not math.isfinite(loss) else 'gradient'} at step {self.state['step'] + 1}"
                + (f"; first non-finite parameter: {bad_param}" if bad_param else "")
                + (f"; first non-finite gradient: {bad_grad}" if bad_grad else "")
                + ". The last good checkpoint is untouched. Lower training.lr, raise warmup_ratio, or keep "
                  "training.grad_clip > 0.")
        self.optimizer.step(g.flat, lr)
        return loss, norm

    # ------------------------------------------------------------------------------------------------------------

    def _trainer_state(self, thread_rngs: list) -> dict:
        state = {**self.state, "data": self.stream.state_dict(), "thread_rngs": thread_rngs, "threads": self.threads,
                 "ranks": self.world.size, "optimizer": self.optimizer.kind}
        if self.masking is not None:
            state["adaptive_masking"] = self.masking.state_dict()
        return state

    def save(self, name: str | None = None) -> Path | None:
        """Write a checkpoint (step_NNNNNNN, or `name`); never one with non-finite weights: a step whose update
        overflowed raises TrainingDiverged here, and the checkpoints already on disk stay as they are.
        With MPI every rank calls it (the weights are the same everywhere; the dropout generators of all ranks are
        gathered) and rank 0 writes; the others return None."""
        bad = first_nonfinite(self.model.params.items())
        if bad is not None:
            raise TrainingDiverged(f"non-finite weights after step {self.state['step']} (first: {bad}); nothing was "
                                   f"written and the last good checkpoint is untouched. Lower training.lr, raise "
                                   f"training.warmup_ratio, or keep training.grad_clip > 0.")
        thread_rngs = [s for rank in self.world.gather([rng_state(r) for r in self.worker.rngs]) for s in rank]
        if not self.world.is_root:
            return None
        path = self.run_dir / (name or f"step_{self.state['step']:07d}")
        try:
            self._sync_logs()       # the metrics a checkpoint covers are on disk before the checkpoint is
            save_checkpoint(path, self.cfg, self.model, self.tokenizer, self.optimizer, self._trainer_state(thread_rngs))
        except OSError as e:
            raise self._unwritable(e, path) from None
        if name is None:
            prune_checkpoints(self.run_dir, self.cfg.training.keep_last, self.cfg.training.keep_every)
        return path

    def _unwritable(self, e: OSError, what: Path) -> BaseException:
        """A full disk (or quota, or a filesystem turned read-only) as the message it deserves; else `e` itself."""
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
            return e
        last = latest_checkpoint(self.run_dir)
        kept = f"the last checkpoint, {last.name}, is intact" if last else "no checkpoint had been written yet"
        return CheckpointError(f"could not write {what}: {e.strerror}; {kept}. Free space, then continue with "
                               f"--resume (it sets aside anything half-written)")

    def _sync_logs(self) -> None:
        """flush and fsync metrics.jsonl and metrics.csv (each line is already flushed when written)."""
        for f in (getattr(self, "_jsonl", None), getattr(self, "_csv_file", None)):
            if f is not None and not f.closed:
                f.flush()
                os.fsync(f.fileno())

    def _open_logs(self):
        if not self.world.is_root:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        step = self.state["step"]
        jsonl, csvp = self.run_dir / "metrics.jsonl", self.run_dir / "metrics.csv"
        # A run killed after its last checkpoint logged steps that will be redone: drop them. A crash or a full disk
        # can also leave a torn last line: it is dropped and reported, not a reason to refuse the resume.
        for p, step_of in ((jsonl, lambda line: json.loads(line)["step"]), (csvp, _csv_step)):
            if p.exists():
                kept, torn = [], 0
                for ln in p.read_text(encoding="utf-8").splitlines():
                    if not ln.strip():
                        continue
                    try:
                        s = step_of(ln)
                    except (ValueError, KeyError, TypeError):
                        torn += 1
                        continue
                    if s is None or s <= step:
                        kept.append(ln)
                if torn:
                    self.log(f"{p}: dropped {torn} unreadable line(s) (a torn write, as a crash or a full disk leaves)")
                atomic_write_text(p, "".join(ln + "\n" for ln in kept))
        new_csv = not csvp.exists() or csvp.stat().st_size == 0
        self._jsonl = open(jsonl, "a", encoding="utf-8")
        self._csv_file = open(csvp, "a", encoding="utf-8", newline="")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        if new_csv:
            self._csv.writeheader()
        self._tb = None
        if self.cfg.training.tensorboard:
            try:
                from tensorboardX import SummaryWriter
                self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError:
                self.log("training.tensorboard is on but tensorboardX is not installed: pip install 'mini-bert[tensorboard]'")

    def _write_metrics(self, record: dict) -> None:
        if not self.world.is_root:
            return
        try:
            self._jsonl.write(json.dumps(record) + "\n")
            self._jsonl.flush()
            self._csv.writerow(record)
            self._csv_file.flush()
        except OSError as e:     # a torn line may be left: --resume drops it (see _open_logs)
            raise self._unwritable(e, self.run_dir / "metrics.jsonl") from None
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self._tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        """Release the run folder (train() does this when it returns)."""
        if self._lock is not None:
            self._lock.release()

    def _close_logs(self):
        if not self.world.is_root:
            return
        self._jsonl.close()
        self._csv_file.close()
        if self._tb is not None:
            self._tb.close()

    def evaluate(self) -> dict:
        # the training threads' pool evaluates batches in parallel: with BLAS limited to one thread per worker,
        # a serial evaluation would leave a core idle. Each batch goes in the training threads' row blocks: between
        # training steps this measured 2.0 s per evaluation instead of 2.3 s (PTB recipe, 2 threads, commit 36115a0,
        # before the one-arena setting of training/allocator.py). Same counts; sums differ by rounding.
        return self.worker.evaluate(self._valid_blocks)

    def _evaluate_everywhere(self) -> dict:
        """Rank 0 evaluates; with MPI its result is shared, so every rank takes the same decisions from it."""
        return self.world.share(self.evaluate() if self.world.is_root else None)

    def train(self) -> dict:
        """Run until max_steps or max_minutes; returns a summary. Ctrl-C saves a checkpoint and returns."""
        from threadpoolctl import threadpool_limits
        from tqdm import tqdm

        t = self.cfg.training
        self._open_logs()
        interrupted = {"flag": False, "signal": None}
        # Ctrl-C, and the SIGTERM that `timeout`, Slurm, systemd and `docker stop` send (SIGHUP: a closed terminal)
        stop_signals = [sig for sig in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if sig]
        previous_handlers = {sig: signal.getsignal(sig) for sig in stop_signals}

        def on_signal(signum, frame):  # finish the current step, then save and stop
            interrupted["flag"], interrupted["signal"] = True, signum
            self.world.on_signal(signum)     # MPI: under mpirun a signal means the job is being torn down

        for sig in stop_signals:
            signal.signal(sig, on_signal)
        start_step = self.state["step"]
        t_start = time.perf_counter() - self.state["elapsed_s"]
        bar = tqdm(total=self.max_steps, initial=start_step, disable=not self.progress, unit="step",
                   dynamic_ncols=True, file=sys.stderr)
        # the loss sum of the current logging window is checkpointed: a run stopped mid-window logs, once resumed,
        # the same averages as an uninterrupted run (tokens/s restarts: it measures this process's speed)
        window_loss, window_steps = self.state.get("log_window", (0.0, 0))
        window_tokens, window_t0 = 0, time.perf_counter()
        stop_reason = "max_steps"
        last_eval: dict = {}
        # one BLAS thread per worker when the batch is split across threads or processes (MPI ranks share the
        # machine's cores); else let BLAS use the cores
        limits = threadpool_limits(1) if self.threads > 1 or self.world.size > 1 else nullcontext()
        try:
            with limits:
                while self.state["step"] < self.max_steps:
                    step = self.state["step"]
                    lr = lr_at(step, t.lr, self.warmup_steps, self.max_steps, t.schedule, t.min_lr_ratio,
                               self.decay_from)
                    mask_prob = self.stream.mask_prob     # the rate this batch was masked with
                    batch = self.stream.next_batch()
                    part, n_total = self.world.shard(batch)      # this rank's rows (all of them in one process)
                    loss, cache = self.worker.loss_and_gradients(self.device.put(part), n_total)
                    loss, norm = self.apply_gradients(loss, lr)
                    self.state["step"] = step = step + 1
                    self.state["elapsed_s"] = elapsed = time.perf_counter() - t_start
                    window_loss += loss
                    window_steps += 1
                    window_tokens += int(batch.attention_mask.sum())
                    record = None
                    extra = {}
                    if self.monitor is not None:
                        extra = self.monitor.observe(step, self.model, self.worker.grads, cache, lr, loss, grad_norm=norm)
                    if step % t.log_every == 0 or step == self.max_steps or extra:
                        dt = time.perf_counter() - window_t0
                        record = {"step": step, "elapsed_s": round(elapsed, 3),
                                  "train_loss": window_loss / window_steps, "lr": lr,
                                  "tokens_per_s": window_tokens / dt if dt > 0 else 0.0, "grad_norm": norm, **extra}
                        bar.set_postfix(loss=f"{record['train_loss']:.3f}", lr=f"{lr:.2e}",
                                        tok_s=f"{record['tokens_per_s']:.0f}", refresh=False)
                        window_loss, window_tokens, window_steps, window_t0 = 0.0, 0, 0, time.perf_counter()
                        record.update(self.worker.last_stats)    # ELECTRA: the last step's replaced-token figures
                        record.update(self.group_norms)          # ELECTRA, per-model clip: each model's norm
                        if self.agc is not None:
                            record["agc_clipped"] = self.agc.last_fraction   # fraction of units clipped
                        if self.masking is not None:
                            self.stream.mask_prob = self.masking.update(train_loss=record["train_loss"])
                    self.state["log_window"] = (window_loss, window_steps)
                    if step % t.eval_every == 0 or step == self.max_steps:
                        last_eval = self._evaluate_everywhere()
                        record = record or {"step": step, "elapsed_s": round(elapsed, 3)}
                        record.update(last_eval)
                        window_t0 = time.perf_counter()   # tokens/s measures training, not evaluation
                        if self.masking is not None:
                            self.stream.mask_prob = self.masking.update(
                                valid_masked_acc=last_eval["valid_masked_acc"])
                        best, now = self.state["best_valid_loss"], last_eval[self.worker.selection_key]
                        if best is None or now < best:
                            self.state["best_valid_loss"] = now
                            self.save("best")
                        who, rtd = ("generator's ", f"; replaced-token acc {last_eval['valid_rtd_acc']:.4f}") \
                            if "valid_rtd_acc" in last_eval else ("", "")
                        (bar.write if self.progress else self.log)(
                            f"step {step}: {who}valid masked acc {last_eval['valid_masked_acc']:.4f}, perplexity "
                            f"{last_eval['valid_perplexity']:.1f}{rtd} ({elapsed / 60:.1f} min)")
                        if t.schedule_to_budget and step % t.eval_every == 0 and step < self.max_steps:
                            self.refit_schedule(step, time.perf_counter() - t_start)
                            bar.total = self.max_steps
                    if record is not None:
                        if self.masking is not None:
                            record["mask_prob"] = mask_prob
                        self._write_metrics(record)
                    bar.update(1)
                    out_of_time = t.max_minutes is not None and elapsed >= t.max_minutes * 60
                    # MPI: every rank stops at the same step (one step after a rank asks); one process: as asked
                    stop_now, out_of_time = self.world.agree_stop(interrupted["flag"], out_of_time)
                    if step % t.checkpoint_every == 0 or step == self.max_steps or out_of_time or stop_now:
                        self.save()
                    if stop_now:
                        stop_reason = "interrupted"
                        break
                    if out_of_time:
                        stop_reason = "max_minutes"
                        break
        finally:
            bar.close()
            self._close_logs()
            self.close()
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
            self.worker.close()
        summary = {"stop_reason": stop_reason, "steps": self.state["step"] - start_step, **self.state, **last_eval}
        if interrupted["signal"] is not None:
            summary["signal"] = int(interrupted["signal"])
        for key in ("data", "thread_rngs", "log_window", "adaptive_masking"):
            summary.pop(key, None)
        if self.monitor is not None:
            summary["issues"] = [str(i) for i in self.monitor.issues()]
        return summary
