"""SST-2 sentiment fine-tuning: does pretraining help a downstream task?

`minibert finetune-sst2 --checkpoint DIR [--epochs N] [--max-samples N] [--seeds 0,1,2] [--output F]`

Shapes: B batch, T tokens, D hidden, C = 2 classes.

The classifier is the model's own head: `[CLS] sentence [SEP]` -> encoder -> pooled p = tanh(u W_pool + b_pool),
where u is the mean of the tokens' last hidden states (PROTOCOL's pooling; "cls" reads h_[CLS] as BERT does) ->
dropout -> logits = p W_cls + b_cls (`MiniBERT.forward_classifier`). Every parameter is trained (the backward pass
runs through the whole encoder, `backward_from_class_logits`) with AdamW (bias-corrected), linear warmup over 10%
of the steps then linear decay, layer-wise learning-rate decay (layer l of L at 0.8^(L-1-l) of the rate, the
embeddings at 0.8^L), global-norm clipping, and early stopping on dev accuracy (the best weights are restored at
the end). Each epoch's batches group sentences of similar length (`length_grouped_batches`), so that
padding costs little. SST-2's sentences are read as distributed, Penn-Treebank tokenized (`do n't`, `-lrb-`);
`raw_text=True` spells them back as raw text (`don't`, `(`), the way the pretraining corpus writes them. One
PROTOCOL applies to the pretrained model, to random init and to the bag of words alike.

SST-2's test labels are held back, so the dev set (872 sentences) is used both to stop and to report, as in the
GLUE dev numbers papers quote; the baselines below are chosen the same way, so the comparison stays fair.
Three references come with the pretrained model's numbers:
  - bag-of-words: logistic regression on binary unigram + bigram features (`linear_models.py`), the classic
    strong linear baseline (~0.78-0.82 dev accuracy);
  - random init: the same fine-tuning from a randomly initialised model of the same config: what pretraining adds;
  - majority class: the dev accuracy of always answering the most frequent training label.
Several seeds (head initialisation, dropout, batch order) give mean +- sample standard deviation.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import scipy.sparse
from threadpoolctl import threadpool_limits

from ..config import CLS_ID, SEP_ID
from ..errors import MiniBertError
from ..core.gradients import MiniBERTGradients
from ..core.model import MiniBERT
from ..core.parameters import layer_of
from ..training.adapt import adapt_to_texts
from ..training.checkpointing import load_checkpoint
from ..data.batches import length_grouped_batches, pad_batch
from ..data.readers import load_sst2, untokenize_ptb
from ..training.optimizer import AdamW, clip_grad_norm, decay_mask, layer_wise_lr_scales
from ..training.scheduler import lr_at
from .linear_models import fit_with_held_out_l2

HEAD_PARAMETERS = ("W_pool", "b_pool", "W_cls", "b_cls")
# The fine-tuning protocol: one set of settings, applied identically to the pretrained model and to random init
# (`minibert finetune-sst2` and `minibert evaluate` use it; each can be overridden).
# Chosen on dev with the pretrained model's accuracy (docs/RESULTS.md, "The fine-tuning protocol").
# raw_text: True spells SST-2's Penn-Treebank tokens back as raw text (`do n't` -> `don't`, `-lrb-` -> `(`,
# `data/readers.untokenize_ptb`), the spelling of the pretraining corpus. Off: the text as distributed, as every
# published SST-2 number reads it; spelling it back moved no pretrained arm by more than 0.04 points (RESULTS.md).
PROTOCOL = {"epochs": 5, "lr": 5e-4, "batch_size": 32, "pooling": "mean", "warmup_ratio": 0.1, "patience": 4,
            "layer_lr_decay": 0.8, "group_by_length": True, "raw_text": False, "reinit_layers": 0}
# ONE_BLAS_THREAD: fine-tuning runs with one BLAS thread. Its matrices are small (a batch of short sentences), so
# a second thread gains little, and on a shared two-core machine spin-waiting BLAS threads made a training step
# about 3x slower in wall time (0.8 s against 0.28 s for the base model, batch 32 x 30 tokens).
BOW_L2_GRID = (1e-2, 3e-3, 1e-3, 3e-4, 1e-4)


# ----------------------------------------------------------------------------------------------------------------
# Text -> padded batches


def encode_for_classification(tokenizer, texts: list[str], max_len: int) -> list[np.ndarray]:
    """`[CLS] subwords [SEP]` id arrays (int64), the subwords truncated so that each row fits max_len."""
    if max_len < 3:
        raise MiniBertError(f"max_len must leave room for [CLS], one token and [SEP]; got {max_len}")
    out = []
    for ids in tokenizer.encode_batch(list(texts)):
        ids = list(ids)[:max_len - 2]
        out.append(np.array([CLS_ID, *ids, SEP_ID], dtype=np.int64))
    return out


def predict_labels(model, seqs: list[np.ndarray], batch_size: int = 128) -> np.ndarray:
    """Arg-max class of each sequence (eval mode: no dropout). Sorted by length so batches carry little padding."""
    order = np.argsort([len(s) for s in seqs], kind="stable")
    preds = np.empty(len(seqs), dtype=np.int64)
    with threadpool_limits(limits=1, user_api="blas"):      # see ONE_BLAS_THREAD
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            ids, mask = pad_batch([seqs[i] for i in idx])
            logits, _ = model.forward_classifier(ids, mask, training=False)   # (b, C)
            preds[idx] = logits.argmax(axis=1)
    return preds


# ----------------------------------------------------------------------------------------------------------------
# Fine-tuning


def reset_classifier_head(model, rng: np.random.Generator) -> None:
    """Fresh pooler and classifier weights (N(0, initializer_range^2), zero biases): MLM pretraining never trains
    them, and a new draw per seed makes the seeds differ in their head as well as in dropout and batch order."""
    std = model.config.initializer_range
    for name in HEAD_PARAMETERS:
        block = model.store.blocks[name]
        block[...] = rng.normal(0.0, std, size=block.shape) if name.startswith("W") else 0.0


def reinit_top_layers(model, n: int, seed: int) -> None:
    """Draw the top n encoder layers afresh, as a new model of the same config draws them (Zhang et al. 2021,
    "Revisiting few-sample BERT fine-tuning": the top layers specialise in the pretraining task). The draw comes
    from 20,000 + seed, so every fine-tuning seed gets its own. n = 0 (the protocol's default) draws nothing."""
    if n == 0:
        return
    first = model.config.num_layers - n
    fresh = MiniBERT(model.config, seed=20_000 + seed)
    for spec in model.store.specs:
        if (layer := layer_of(spec.name)) is not None and layer >= first:
            model.store.blocks[spec.name][...] = fresh.store.blocks[spec.name]


def epoch_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator,
                  group_by_length: bool) -> list[np.ndarray]:
    """One epoch's batches of indices: `length_grouped_batches`, or the next batch_size of a permutation."""
    if group_by_length:
        return length_grouped_batches(lengths, batch_size, rng)
    order = rng.permutation(len(lengths))
    return [order[k:k + batch_size] for k in range(0, len(order), batch_size)]


def classification_step(model, grads: MiniBERTGradients, opt: AdamW, seqs: list[np.ndarray], labels: np.ndarray,
                        idx: np.ndarray, rng: np.random.Generator, lr: float, max_grad_norm: float) -> float:
    """One fine-tuning step on the sequences `idx`: forward in training mode, cross-entropy, the backward through
    the classifier and the encoder, global-norm clipping, the optimizer step. Returns the batch's mean loss."""
    ids, mask = pad_batch([seqs[i] for i in idx])
    grads.zero_gradients()
    logits, cache = model.forward_classifier(ids, mask, training=True, rng=rng)       # (B, C)
    loss, dlogits = grads.compute_classification_loss_and_gradients(logits, labels[idx])
    grads.backward_from_class_logits(dlogits, cache)
    clip_grad_norm(grads.flat, max_grad_norm)
    opt.step(grads.flat, lr)
    return loss


def finetune_classifier(model, train_seqs: list[np.ndarray], train_labels, dev_seqs: list[np.ndarray], dev_labels,
                        epochs: int = 3, batch_size: int = 32, lr: float = 5e-4, warmup_ratio: float = 0.1,
                        weight_decay: float = 0.01, max_grad_norm: float = 1.0, seed: int = 0,
                        evals_per_epoch: int = 2, patience: int = 3, layer_lr_decay: float = 1.0,
                        group_by_length: bool = False, log=print) -> dict:
    """Fine-tune every parameter of `model` on (train_seqs, train_labels); keep the weights best on dev.

    AdamW with bias correction, linear warmup over `warmup_ratio` of the steps then linear decay to 0, global-norm
    clipping; `layer_lr_decay` < 1 scales layer l of L by decay^(L-1-l) and the embeddings by decay^L.
    `group_by_length` draws each epoch's batches from sentences of similar length (`length_grouped_batches`), so
    that a batch carries little padding: on GLUE's phrases, a third of the token positions a step of plain shuffling.

    Dev accuracy is measured `evals_per_epoch` times per epoch; training stops after `patience` evaluations
    without improvement. The model ends with its best weights. Returns {"dev_accuracy" (best), "best_step",
    "steps", "stopped_early", "history": [{step, epoch, train_loss, dev_accuracy}]}.
    """
    train_labels, dev_labels = np.asarray(train_labels), np.asarray(dev_labels)
    C = model.config.num_labels
    for name, labels, seqs in (("train", train_labels, train_seqs), ("dev", dev_labels, dev_seqs)):
        if len(labels) != len(seqs):
            raise MiniBertError(f"{name}: {len(seqs)} sequences but {len(labels)} labels")
        if len(labels) == 0:
            raise MiniBertError(f"{name}: no examples to fine-tune on")
        if labels.min() < 0 or labels.max() >= C:
            raise MiniBertError(f"{name} labels must lie in [0, {C - 1}] (the model's num_labels={C}); "
                             f"got values {sorted(set(labels.tolist()))[:5]}")
    if epochs < 1:
        raise MiniBertError(f"epochs must be >= 1; got {epochs}")
    log = log or (lambda *_: None)
    rng = np.random.default_rng(seed)                 # batch order and dropout
    grads = MiniBERTGradients(model)
    scales = layer_wise_lr_scales(model, layer_lr_decay) if layer_lr_decay < 1.0 else None
    opt = AdamW(model.store.flat, decay_mask(model.store), lr=lr, weight_decay=weight_decay, lr_scale=scales)
    steps_per_epoch = -(-len(train_seqs) // batch_size)
    lengths = np.array([len(s) for s in train_seqs])
    total = epochs * steps_per_epoch
    warmup = int(round(warmup_ratio * total))
    eval_at = {int(round(steps_per_epoch * (k + 1) / evals_per_epoch)) for k in range(evals_per_epoch)}

    best_acc, best_step, best_params = -1.0, 0, model.store.flat.copy()
    history, bad_evals, step, stopped = [], 0, 0, False
    running, n_running = 0.0, 0
    with threadpool_limits(limits=1, user_api="blas"):      # see ONE_BLAS_THREAD
        for epoch in range(epochs):
            for k, idx in enumerate(epoch_batches(lengths, batch_size, rng, group_by_length)):
                loss = classification_step(model, grads, opt, train_seqs, train_labels, idx, rng,
                                           lr_at(step, lr, warmup, total, kind="linear"), max_grad_norm)
                step += 1
                running, n_running = running + loss, n_running + 1
                if (k + 1) not in eval_at:
                    continue
                acc = float(np.mean(predict_labels(model, dev_seqs) == dev_labels))
                history.append({"step": step, "epoch": round(epoch + (k + 1) / steps_per_epoch, 2),
                                "train_loss": running / n_running, "dev_accuracy": acc})
                log(f"    step {step:>5}/{total}  train loss {running / n_running:.4f}  dev acc {acc:.4f}")
                running, n_running = 0.0, 0
                if acc > best_acc:
                    best_acc, best_step, bad_evals = acc, step, 0
                    best_params[...] = model.store.flat
                else:
                    bad_evals += 1
                    if bad_evals >= patience:
                        stopped = True
                        break
            if stopped:
                break
    model.store.flat[...] = best_params
    return {"dev_accuracy": best_acc, "best_step": best_step, "steps": step, "stopped_early": stopped,
            "history": history}


def _summary(runs: list[dict]) -> dict:
    accs = np.array([r["dev_accuracy"] for r in runs])
    return {"runs": runs, "mean": float(accs.mean()), "std": float(accs.std(ddof=1)) if len(accs) > 1 else 0.0}


# ----------------------------------------------------------------------------------------------------------------
# Bag-of-words baseline


def ngram_features(train_texts: list[str], other_texts: list[list[str]] | None = None, ngram_max: int = 2,
                   min_count: int = 1) -> tuple[scipy.sparse.csr_matrix, list[scipy.sparse.csr_matrix], list[str]]:
    """Binary bag of n-grams (lowercased whitespace tokens, n = 1..ngram_max), vocabulary from the training texts.

    Returns (X_train (N, F) CSR float32, [X for each list in other_texts], feature names). N-grams seen fewer
    than min_count times in training, or only outside training, are dropped.
    """
    def grams(text):
        toks = text.lower().split()
        return {" ".join(toks[i:i + n]) for n in range(1, ngram_max + 1) for i in range(len(toks) - n + 1)}

    counts: dict[str, int] = {}
    train_grams = [grams(t) for t in train_texts]
    for g in train_grams:
        for x in g:
            counts[x] = counts.get(x, 0) + 1
    names = sorted(x for x, c in counts.items() if c >= min_count)
    index = {x: i for i, x in enumerate(names)}

    def matrix(gram_sets):
        rows, cols = [], []
        for r, g in enumerate(gram_sets):
            c = [index[x] for x in g if x in index]
            rows.extend([r] * len(c))
            cols.extend(c)
        data = np.ones(len(rows), dtype=np.float32)
        return scipy.sparse.csr_matrix((data, (rows, cols)), shape=(len(gram_sets), len(names)))

    others = [matrix([grams(t) for t in texts]) for texts in (other_texts or [])]
    return matrix(train_grams), others, names


def bag_of_words_baseline(train_texts, train_labels, dev_texts, dev_labels, seed: int = 0) -> dict:
    """Unigram + bigram logistic regression; L2 chosen on 10% of train held out. Returns its dev accuracy."""
    X_train, (X_dev,), names = ngram_features(train_texts, [dev_texts])
    clf = fit_with_held_out_l2(X_train, np.asarray(train_labels), BOW_L2_GRID, rng=np.random.default_rng(seed))
    return {"dev_accuracy": clf.accuracy(X_dev, np.asarray(dev_labels)), "l2": clf.l2, "features": len(names),
            "held_out_accuracy": {str(k): v for k, v in clf.held_out_accuracy.items()}}


# ----------------------------------------------------------------------------------------------------------------
# The experiment


# What every fine-tuning run of one `run_sst2` call shares: set in this process, or in each worker process.
_JOB_CONTEXT: dict = {}


def _set_job_context(context: dict) -> None:
    _JOB_CONTEXT.update(context)


def _finetune_job(arm: str, seed: int) -> dict:
    """One fine-tuning run: "pretrained" starts from the checkpoint's weights with a fresh head drawn from `seed`,
    "adapted" from the weights after task-adaptive MLM (both with their top `reinit_layers` layers drawn afresh),
    "random_init" from a new model of the same config (initialised from 10,000 + seed)."""
    c = _JOB_CONTEXT
    if arm in ("pretrained", "adapted"):
        model = c["model"]
        model.store.flat[...] = c["initial" if arm == "pretrained" else "adapted"]
        reset_classifier_head(model, np.random.default_rng(seed))
        reinit_top_layers(model, c["reinit_layers"], seed)
    else:
        model = MiniBERT(c["model"].config, seed=10_000 + seed)
    log = c["log"]
    if log == "labelled":               # a worker process: its lines interleave with the others', so name the run
        log = lambda msg: print(f"[{arm.replace('_', ' ')}, seed {seed}] {msg.strip()}", flush=True)  # noqa: E731
    run = finetune_classifier(model, *c["data"], epochs=c["epochs"], seed=seed, log=log, **c["kwargs"])
    return {"seed": seed, **run}


def run_sst2(model, tokenizer, train_texts, train_labels, dev_texts, dev_labels, epochs: int = 3,
             seeds=(0, 1, 2), random_init: bool = True, bag_of_words: bool = True, log=print,
             dropout: float | None = 0.1, n_jobs: int = 1, pooling: str | None = None, adapt_steps: int = 0,
             pretrained: bool = True, adapt: dict | None = None, reinit_layers: int = 0, **finetune_kwargs) -> dict:
    """Fine-tune `model` once per seed (each from the same starting weights), plus the baselines.

    `dropout` (BERT's 0.1 by default) is used for fine-tuning whatever the pretraining used — the default
    pretraining recipe has none; None keeps the checkpoint's own. `pooling` ("cls" or "mean") sets what the
    classifier's pooler reads for both arms (None keeps the checkpoint's). `adapt_steps` > 0 adds the arm
    "adapted": task-adaptive MLM on the training sentences (`training/adapt.py`, seed 0; `adapt` holds its other
    settings, such as lr and mask_prob), then the same fine-tuning. `pretrained`, `random_init` and
    `bag_of_words` False leave that arm out (each arm's runs are seeded, so an arm measured before need not run
    again). `reinit_layers` > 0 draws the top layers of the pretrained and adapted arms afresh before fine-tuning
    (`reinit_top_layers`; random init is random throughout). `n_jobs` > 1 runs the fine-tunings (seeds x arms) in
    that many processes, for machines with more cores; the numbers are the same.
    The model is left with its original weights and config. Returns a JSON-serialisable dict (see the module
    docstring).
    """
    if dropout is not None or pooling is not None:
        saved = (model.config.dropout, model.config.attention_dropout, model.config.classifier_pooling)
        if dropout is not None:
            model.config.dropout = model.config.attention_dropout = dropout
        if pooling is not None:
            model.config.classifier_pooling = pooling
        try:
            return run_sst2(model, tokenizer, train_texts, train_labels, dev_texts, dev_labels, epochs, seeds,
                            random_init, bag_of_words, log, None, n_jobs, None, adapt_steps, pretrained,
                            adapt, reinit_layers, **finetune_kwargs)
        finally:
            model.config.dropout, model.config.attention_dropout, model.config.classifier_pooling = saved
    seeds = list(seeds)
    if not seeds:
        raise MiniBertError("give at least one seed")
    check_arms(pretrained, random_init, adapt_steps)
    if not 0 <= reinit_layers <= model.config.num_layers:
        raise MiniBertError(f"--reinit-layers must lie in [0, {model.config.num_layers}] (the model's layers); "
                            f"got {reinit_layers}")
    log = log or (lambda *_: None)
    train_labels, dev_labels = np.asarray(train_labels), np.asarray(dev_labels)
    max_len = model.config.max_position_embeddings
    train_seqs = encode_for_classification(tokenizer, train_texts, max_len)
    dev_seqs = encode_for_classification(tokenizer, dev_texts, max_len)
    t0 = time.perf_counter()
    values, counts = np.unique(train_labels, return_counts=True)
    result: dict = {"task": "sst2", "train_size": len(train_texts), "dev_size": len(dev_texts), "epochs": epochs,
                    "seeds": seeds,
                    "majority_class": float(np.mean(dev_labels == values[np.argmax(counts)]))}
    if bag_of_words:
        result["bag_of_words"] = bag_of_words_baseline(train_texts, train_labels, dev_texts, dev_labels)
        log(f"  bag-of-words (uni+bigrams): dev acc {result['bag_of_words']['dev_accuracy']:.4f}")

    arms = ((["pretrained"] if pretrained else []) + (["adapted"] if adapt_steps else [])
            + (["random_init"] if random_init else []))
    context = {"model": model, "initial": model.store.flat.copy(), "epochs": epochs, "kwargs": finetune_kwargs,
               "data": (train_seqs, train_labels, dev_seqs, dev_labels), "reinit_layers": reinit_layers}
    if adapt_steps:
        log(f"  task-adaptive MLM on the {len(train_texts):,} training sentences, {adapt_steps} steps:")
        result["adaptation"] = adapt_to_texts(model, tokenizer, list(train_texts), adapt_steps, log=log,
                                              **(adapt or {}))
        context["adapted"] = model.store.flat.copy()
        model.store.flat[...] = context["initial"]
    jobs = [(arm, seed) for arm in arms for seed in seeds]
    try:
        if n_jobs <= 1:
            _set_job_context({**context, "log": log})
            runs = []
            for arm, seed in jobs:
                log(f"  {arm.replace('_', ' ')}, seed {seed}:")
                runs.append(_finetune_job(arm, seed))
        else:
            # each run is independent and seeded, so the processes compute exactly what one process would
            log(f"  {len(jobs)} fine-tuning runs in {min(n_jobs, len(jobs))} processes (one BLAS thread each)")
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(min(n_jobs, len(jobs)), mp_context=ctx, initializer=_set_job_context,
                                     initargs=({**context, "log": "labelled" if log else None},)) as pool:
                runs = list(pool.map(_finetune_job, *zip(*jobs)))
            for (arm, seed), run in zip(jobs, runs):
                log(f"  {arm.replace('_', ' ')}, seed {seed}: dev acc {run['dev_accuracy']:.4f} "
                    f"(best at step {run['best_step']} of {run['steps']})")
    finally:
        model.store.flat[...] = context["initial"]
        _JOB_CONTEXT.clear()
    for arm in arms:
        result[arm] = _summary([run for (a, _), run in zip(jobs, runs) if a == arm])
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def format_sst2_table(result: dict) -> str:
    """The result of `run_sst2` as a small Markdown table."""
    n = len(result["seeds"])
    lines = [f"SST-2 dev accuracy ({result['dev_size']} sentences; fine-tuned on {result['train_size']}, "
             f"{result['epochs']} epoch(s), {n} seed(s))", "", "| model | dev accuracy |", "|---|---|"]
    for key, name in (("pretrained", "fine-tuned checkpoint"),
                      ("adapted", f"task-adaptive MLM ({result.get('adaptation', {}).get('steps')} steps), "
                                  f"then fine-tuned"),
                      ("random_init", "fine-tuned random init")):
        if key in result:
            r = result[key]
            lines.append(f"| {name} | {r['mean']:.4f} +- {r['std']:.4f} |")
    if "bag_of_words" in result:
        bow = result["bag_of_words"]["dev_accuracy"]
        lines.append(f"| bag of words (uni+bigram logistic regression) | {bow:.4f} |")
    lines.append(f"| majority class | {result['majority_class']:.4f} |")
    return "\n".join(lines)


def check_arms(pretrained: bool, random_init: bool, adapt_steps: int) -> None:
    """At least one fine-tuning arm, or a MiniBertError saying how to keep one."""
    if not (pretrained or random_init or adapt_steps):
        raise MiniBertError("every fine-tuning arm is left out (--skip pretrained,random-init without "
                            "--adapt-steps): keep the pretrained or the random-init arm, or give --adapt-steps N > 0 "
                            "for the task-adaptive one")


def check_protocol(settings: dict) -> None:
    """Fine-tuning settings that make sense, or a MiniBertError naming the flag: a rate of 0, below 0 or infinite
    trains nothing or diverges, a batch of 0 rows divides by zero."""
    lr, batch, warmup = settings["lr"], settings["batch_size"], settings["warmup_ratio"]
    if not (math.isfinite(lr) and lr > 0):
        raise MiniBertError(f"--lr must be a finite learning rate above 0 (the protocol's is {PROTOCOL['lr']}); "
                            f"got {lr}")
    if batch < 1:
        raise MiniBertError(f"--batch-size must be >= 1 sentence (the protocol's is {PROTOCOL['batch_size']}); "
                            f"got {batch}")
    if not (0.0 <= warmup < 1.0):
        raise MiniBertError(f"--warmup-ratio must lie in [0, 1): the share of steps spent warming up; got {warmup}")
    if settings["reinit_layers"] < 0:
        raise MiniBertError(f"--reinit-layers must be >= 0 (0 keeps every pretrained layer); got "
                            f"{settings['reinit_layers']}")
    if settings["patience"] < 1:
        raise MiniBertError(f"--patience must be >= 1 dev evaluation; got {settings['patience']}")
    if not (0.0 < settings["layer_lr_decay"] <= 1.0):
        raise MiniBertError(f"--layer-lr-decay must lie in (0, 1] (1: off); got {settings['layer_lr_decay']}")


def finetune_sst2_checkpoint(checkpoint_dir, data_dir=None, epochs: int | None = None,
                             max_samples: int | None = None, seeds=(0, 1, 2), output=None, model=None, tokenizer=None,
                             log=print, train_set: str = "sentences", **kwargs) -> dict:
    """Load a checkpoint (unless model and tokenizer are given) and SST-2, run `run_sst2` with the fine-tuning
    PROTOCOL; any of its settings (epochs, lr, batch_size, pooling, warmup_ratio, patience, layer_lr_decay,
    group_by_length, raw_text, reinit_layers) can be given to override it, for every arm alike.

    train_set: "sentences" (the 6,920 training sentences) or "glue" (GLUE's 67,349 training phrases); dev is the
    872 dev sentences either way (GLUE's dev file holds the same sentences).

    max_samples caps the training sentences (a random subset fixed by seed 0); dev is always all 872 sentences.
    Task-adaptive MLM (adapt_steps > 0) on a loaded checkpoint masks as its pretraining did: whole words when its
    data.masking is whole_word, single tokens otherwise (an `adapt` dict with whole_word overrides it).
    """
    settings = {**PROTOCOL, **({} if epochs is None else {"epochs": epochs}),
                **{k: kwargs.pop(k) for k in list(kwargs) if k in PROTOCOL}}
    epochs, raw_text = settings.pop("epochs"), settings.pop("raw_text")
    kwargs.update(settings)
    if max_samples is not None and max_samples <= 0:
        raise MiniBertError(f"--max-samples must be a positive number of sentences; got {max_samples} "
                         "(omit it to use all 6,920)")
    if epochs < 1:
        raise MiniBertError(f"--epochs must be >= 1; got {epochs}")
    if kwargs.get("adapt_steps", 0) < 0:
        raise MiniBertError(f"--adapt-steps must be >= 0 (0 turns task-adaptive pretraining off); got "
                            f"{kwargs['adapt_steps']}")
    check_protocol({"epochs": epochs, **settings})
    check_arms(kwargs.get("pretrained", True), kwargs.get("random_init", True), kwargs.get("adapt_steps", 0))
    if train_set not in ("sentences", "glue"):
        raise MiniBertError(f"--train-set must be 'sentences' or 'glue'; got {train_set!r}")
    if kwargs.get("n_jobs", 1) < 1:
        raise MiniBertError(f"--jobs must be >= 1 (the number of fine-tuning processes); got {kwargs['n_jobs']}")
    if model is None or tokenizer is None:
        ck = load_checkpoint(checkpoint_dir, need_tokenizer=True)
        model, tokenizer = ck.model, ck.tokenizer
        if kwargs.get("adapt_steps", 0):      # task-adaptive MLM continues with the masking the model was trained on
            kwargs["adapt"] = {"whole_word": ck.config.data.masking == "whole_word", **(kwargs.get("adapt") or {})}
    train_texts, train_labels = load_sst2("train", data_dir, fmt=train_set)
    dev_texts, dev_labels = load_sst2("dev", data_dir)
    if raw_text:
        train_texts, dev_texts = [untokenize_ptb(t) for t in train_texts], [untokenize_ptb(t) for t in dev_texts]
    if max_samples is not None and max_samples < len(train_texts):
        keep = np.sort(np.random.default_rng(0).choice(len(train_texts), size=max_samples, replace=False))
        train_texts, train_labels = [train_texts[i] for i in keep], train_labels[keep]
    result = run_sst2(model, tokenizer, train_texts, train_labels, dev_texts, dev_labels, epochs=epochs,
                      seeds=seeds, log=log, **kwargs)
    result["train_set"] = train_set
    result["protocol"] = {"epochs": epochs, **settings, "raw_text": raw_text}
    result["checkpoint"] = str(checkpoint_dir) if checkpoint_dir is not None else None
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return result
