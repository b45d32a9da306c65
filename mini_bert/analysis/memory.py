"""Memory profiling: how many bytes a training step of a given model and batch shape holds, and where.

    minibert memory [--batch 32] [--seq 128] [--threads 2] [--segments K]
                                           [--config NAME] [key=value ...]

Every number is measured on real objects, not estimated from a formula: the parameter buffer, the gradient buffers
(the trainer's GradientWorker keeps one per thread), the optimizer the run's config builds (`trainer.build_optimizer`:
AdamW by default, training.optimizer=lion, training.lookahead_k > 0) split into its state (what its checkpoint
saves: AdamW's m and v, Lion's m, Lookahead's slow weights) and its workspace (the decay mask, scratch buffers that
keep the update free of temporaries, per-parameter LR scales), and the forward cache of one training step on a
synthetic batch of that shape, measured with `training.checkpoint_utils.memory_report` / `cache_nbytes` (each
buffer counted once, views included). With activation checkpointing (--segments K) the cache row shows the peak
that `checkpointed_loss_and_gradients` holds instead.

Shapes: B batch, T tokens, D hidden, F FFN width, L layers, H heads, V vocab, N masked tokens, P parameters.
Per layer the cache is dominated by the attention weights (B, H, T, T) and the FFN activations (B, T, F).
"""

from __future__ import annotations


import numpy as np

from ..errors import MiniBertError
from ..config import ModelConfig, RunConfig
from ..core.gradients import MiniBERTGradients
from ..core.model import MiniBERT
from ..training.checkpoint_utils import cache_nbytes, memory_report, synthetic_batch
from ..training.trainer import build_optimizer

MIB = 2.0 ** 20


def _arrays_held(obj, seen: set | None = None) -> list[np.ndarray]:
    """Every array an optimizer object holds, following nested optimizers (Lookahead's inner one)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return []
    seen.add(id(obj))
    if isinstance(obj, np.ndarray):
        return [obj]
    if isinstance(obj, dict):
        return [a for v in obj.values() for a in _arrays_held(v, seen)]
    if isinstance(obj, (list, tuple)):
        return [a for v in obj for a in _arrays_held(v, seen)]
    if hasattr(obj, "__dict__") and hasattr(obj, "step"):
        return _arrays_held(vars(obj), seen)
    return []


def memory_breakdown(config: RunConfig | ModelConfig | dict | None = None, batch_size: int = 32, seq_len: int = 128,
                     threads: int = 1, segments: int | None = None, seed: int = 0) -> dict:
    """Bytes held by one training step.

    config: a RunConfig (its model and its optimizer settings), or a ModelConfig / dict of model fields (with the
    default optimizer, AdamW); None: what `minibert train` builds by default.

    Returns {"rows": [{"name", "bytes", "what"}], "total_bytes", "num_parameters", "masked_tokens",
    "batch_size", "seq_len", "threads", "segments", "report" (memory_report's numbers)}. Row names:
    parameters, gradients, optimizer_state, optimizer_workspace, activations (full cache, or the checkpointed
    peak with segments), logits (the (N, V) logits and their gradient), batch.
    """
    if isinstance(config, RunConfig):
        run = config
    elif isinstance(config, (ModelConfig, dict)):
        run = RunConfig(model=config)
    else:
        run = RunConfig()
    cfg = run.model
    if threads < 1:
        raise MiniBertError(f"threads must be at least 1; got {threads}")
    if seq_len > cfg.max_position_embeddings:
        raise MiniBertError(f"seq_len {seq_len} exceeds max_position_embeddings={cfg.max_position_embeddings}")
    if batch_size < 1 or seq_len < 4:
        raise MiniBertError(f"need batch_size >= 1 and seq_len >= 4; got {batch_size} and {seq_len}")
    model = MiniBERT(cfg, seed=seed)
    P = model.num_parameters
    item = model.dtype.itemsize
    grads = [MiniBERTGradients(model) for _ in range(threads)]
    opt = build_optimizer(model, run)
    state = [a for a in opt.state_dict().values() if isinstance(a, np.ndarray)]     # what a checkpoint saves
    held = cache_nbytes(_arrays_held(opt), exclude=(model.store.flat,))
    batch = synthetic_batch(cfg.vocab_size, batch_size, seq_len, seed)
    N = int(batch["mask_positions"].sum())
    report = memory_report(model, batch, segments)
    checkpointed = segments is not None
    rows = [
        {"name": "parameters", "bytes": model.store.flat.nbytes, "what": f"P = {P:,} values x {item} bytes"},
        {"name": "gradients", "bytes": cache_nbytes([g.flat for g in grads]),
         "what": f"one P-sized buffer per worker thread ({threads})"},
        {"name": "optimizer_state", "bytes": cache_nbytes(state),
         "what": f"{getattr(opt, 'kind', type(opt).__name__)}: {len(state)} P-sized array(s) a checkpoint saves"},
        {"name": "optimizer_workspace", "bytes": held - cache_nbytes(state),
         "what": "decay mask, scratch buffers (and LR scales) it keeps between steps"},
        {"name": "activations",
         "bytes": report["checkpointed_peak_bytes"] if checkpointed else report["full_cache_bytes"],
         "what": (f"checkpointed peak, {segments} segment(s)" if checkpointed else
                  f"forward cache; largest layer {report['layer_cache_bytes'] / MIB:.1f} MiB")},
        {"name": "logits", "bytes": 2 * N * cfg.vocab_size * item, "what": f"logits and dlogits, (N={N}, V) each"},
        {"name": "batch", "bytes": cache_nbytes(batch), "what": "ids, targets, masks of the batch"},
    ]
    return {"rows": rows, "total_bytes": sum(r["bytes"] for r in rows), "num_parameters": P, "masked_tokens": N,
            "batch_size": batch_size, "seq_len": seq_len, "threads": threads, "segments": segments,
            "report": report, "config": cfg.model_dump()}


def format_table(b: dict) -> str:
    c = b["config"]
    lines = [f"Memory of one training step: {c['num_layers']} layers, D={c['hidden_size']}, H={c['num_heads']}, "
             f"F={c['intermediate_size']}, V={c['vocab_size']}, {c['dtype']}; batch {b['batch_size']} x "
             f"{b['seq_len']}", "", f"{'':22}{'MiB':>10}{'share':>8}   what"]
    total = b["total_bytes"]
    for r in b["rows"]:
        lines.append(f"{r['name']:22}{r['bytes'] / MIB:10.2f}{r['bytes'] / total:8.1%}   {r['what']}")
    lines.append(f"{'total':22}{total / MIB:10.2f}")
    rep = b["report"]
    if b["segments"] is None:
        lines += ["", f"Activation checkpointing with one segment per layer would hold "
                      f"{rep['checkpointed_peak_bytes'] / MIB:.1f} MiB of cache instead of "
                      f"{rep['full_cache_bytes'] / MIB:.1f} MiB (--segments K to see it in the table)."]
    return "\n".join(lines)
