"""Where the time of one training step goes: the model's own stages timed in place, their FLOPs, and BLAS against
elementwise work.

    minibert profile [--batch 32] [--seq 128] [--repeats 5] [--threads 1] [--config NAME] [model.key=value ...]

The profiler never computes anything itself. It runs the training step that training/step.py runs (the
GradientWorker's forward, loss and backward, then global-norm clipping and AdamW) with timing wrappers put, for
the duration of the measurement only, around the model's own stage methods and the two layer functions its
encoder layer calls. Each stage is charged its *self* time (its wall time minus that of the stages nested in it),
so the stages add up to the instrumented step; `untimed_step_seconds` is the same step without the wrappers, and
the two agree to within the wrappers' cost (a few microseconds per call). The stages:

    embeddings.forward / .backward     MiniBERT.embed (lookup, LayerNorm, dropout) / the scatter-add into E_*
    layer{l}.attention.forward / .backward   MiniBERT._attention_forward / MiniBERTGradients.attention_backward
    layer{l}.ffn.forward / .backward   the layer's ffn_forward / ffn_backward (two linears and the activation)
    layer{l}.norms.forward / .backward the rest of MiniBERT._encoder_layer / _encoder_layer_backward: LayerNorms,
                                       dropouts and residual sums
    encoder.forward / .backward        the encoder outside its layers: the padding bias and pre-LN's final
                                       LayerNorm; in backward also the embeddings' LayerNorm and dropout
    mlm_head.forward / .backward       MiniBERT.mlm_head / MiniBERTGradients.mlm_head_backward (gather the masked
                                       rows, dense + activation + LayerNorm, the tied decoder, and back)
    loss                               mlm_cross_entropy over the masked positions
    optimizer                          global-norm clipping and the AdamW update (elementwise over every parameter)

FLOPs count the matrix multiplications only (2 M K N each, a multiply and an add); the elementwise work (softmax,
LayerNorm, GELU, dropout, AdamW) is a few operations per element and is reported as time, not FLOPs. With
B batch, T tokens, D hidden, H heads, d = D/H, F FFN width, V vocab and N masked tokens, per layer:

    attention forward   2BT*D*3D (QKV) + 2BH*T*d*T (Q K^T) + 2BH*T*T*d (A V) + 2BT*D*D (W_O) = 8BTD^2 + 4BT^2 D
    attention backward  twice the forward (each matmul has two gradients)            = 16BTD^2 + 8BT^2 D
    FFN forward         2BT*D*F + 2BT*F*D = 4BTDF;   backward 8BTDF
    MLM head forward    2N*D*D + 2N*D*V;             backward twice that

"BLAS time" is measured by running each stage's matrix multiplications alone, on arrays of the same shapes; the
rest of the stage's time is elementwise work, memory traffic and Python overhead. Achieved GFLOP/s = FLOPs / time.
"""

from __future__ import annotations

import math
import statistics
import time
import types
from contextlib import contextmanager, nullcontext

import numpy as np

from ..config import ModelConfig, pretraining_model
from ..core import gradients as core_gradients
from ..core import model as core_model
from ..core.model import MiniBERT
from ..data.batches import Batch
from ..errors import MiniBertError
from ..training.checkpoint_utils import synthetic_batch
from ..training.optimizer import AdamW, clip_grad_norm, decay_mask
from ..training.step import GradientWorker

# ----------------------------------------------------------------------------------------------------------------
# FLOPs: each stage's matrix multiplications as (batch, M, K, N): `batch` independent (M, K) @ (K, N) products


def matmul_shapes(cfg: ModelConfig, batch_size: int, seq_len: int, masked_tokens: int) -> dict[str, list[tuple]]:
    """stage name -> its matmuls [(batch, M, K, N)], forward and backward stages separately."""
    T, N = seq_len, masked_tokens
    D, F, V = cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    d, BT, BH = cfg.head_dim, batch_size * seq_len, batch_size * cfg.num_heads
    shapes: dict[str, list[tuple]] = {"embeddings.forward": [], "embeddings.backward": []}
    for l in range(cfg.num_layers):
        shapes[f"layer{l}.attention.forward"] = [
            (1, BT, D, 3 * D),        # qkv = x W_QKV
            (BH, T, d, T),            # S = Q K^T
            (BH, T, T, d),            # C = A V
            (1, BT, D, D)]            # out = context W_O
        shapes[f"layer{l}.attention.backward"] = [
            (1, BT, D, D), (1, D, BT, D),          # dcontext = dout W_O^T, dW_O = context^T dout
            (BH, T, T, d), (BH, T, d, T),          # dV = A^T dC, dA = dC V^T
            (BH, T, T, d), (BH, T, T, d),          # dQ = dS K, dK = dS^T Q
            (1, BT, 3 * D, D), (1, D, BT, 3 * D)]  # dx = dqkv W_QKV^T, dW_QKV = x^T dqkv
        shapes[f"layer{l}.ffn.forward"] = [(1, BT, D, F), (1, BT, F, D)]
        shapes[f"layer{l}.ffn.backward"] = [(1, BT, D, F), (1, F, BT, D),     # da = df W2^T, dW2 = a^T df
                                            (1, BT, F, D), (1, D, BT, F)]     # dx = dh W1^T, dW1 = x^T dh
        shapes[f"layer{l}.norms.forward"] = []
        shapes[f"layer{l}.norms.backward"] = []
    shapes["encoder.forward"], shapes["encoder.backward"] = [], []
    shapes["mlm_head.forward"] = [(1, N, D, D), (1, N, D, V)]                # dense, decoder
    shapes["mlm_head.backward"] = [(1, N, V, D), (1, D, N, V),               # dt = dlogits W_dec^T, dW_dec
                                   (1, N, D, D), (1, D, N, D)]               # dh, dW_mlm
    shapes["loss"] = []
    shapes["optimizer"] = []
    return shapes


def stage_flops(cfg: ModelConfig, batch_size: int, seq_len: int, masked_tokens: int) -> dict[str, int]:
    """stage name -> matmul FLOPs (2 M K N per product)."""
    return {name: sum(2 * b * m * k * n for b, m, k, n in mm)
            for name, mm in matmul_shapes(cfg, batch_size, seq_len, masked_tokens).items()}


# ----------------------------------------------------------------------------------------------------------------
# Timing the model's own stages


class StageTimer:
    """Self time per stage: a stage's wall time minus the time of the stages called inside it."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self._children: list[float] = []       # per open stage: the time its nested stages took
        self.layer: int | None = None          # the encoder layer being run, for the layer functions' names

    def wrap(self, name, fn):
        """fn, timed under `name` (a string, or a function of fn's arguments returning one)."""
        def timed(*args, **kwargs):
            stage = name(*args) if callable(name) else name
            self._children.append(0.0)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - t0
                nested = self._children.pop()
                self.seconds[stage] = self.seconds.get(stage, 0.0) + elapsed - nested
                self.calls[stage] = self.calls.get(stage, 0) + 1
                if self._children:
                    self._children[-1] += elapsed
        return timed

    def in_layer(self, fn, position: int):
        """fn with its layer index argument (at `position`) recorded while it runs."""
        def run(*args, **kwargs):
            outer, self.layer = self.layer, args[position]
            try:
                return fn(*args, **kwargs)
            finally:
                self.layer = outer
        return run


# (object, attribute, stage name): instance methods (and the gradients' attention backward) are wrapped on the
# instances, the two layer functions and the loss in the namespaces of core/model.py and core/gradients.py that
# call them.
def _stages(model, grads, timer: StageTimer):
    layer = lambda part: (lambda *a: f"layer{timer.layer}.{part}")          # noqa: E731
    return [
        (model, "embed", "embeddings.forward"),
        (model, "encode_from_embeddings", "encoder.forward"),
        (model, "_encoder_layer", lambda x, l, *a: f"layer{l}.norms.forward"),
        (model, "_attention_forward", lambda x, l, *a: f"layer{l}.attention.forward"),
        (core_model, "ffn_forward", layer("ffn.forward")),
        (model, "mlm_head", "mlm_head.forward"),
        (core_gradients, "mlm_cross_entropy", "loss"),
        (grads, "mlm_head_backward", "mlm_head.backward"),
        (grads, "backward_from_hidden", "encoder.backward"),
        (grads, "_encoder_layer_backward", lambda dx, c, l: f"layer{l}.norms.backward"),
        (grads, "attention_backward", layer("attention.backward")),
        (core_gradients, "ffn_backward", layer("ffn.backward")),
        (grads, "_embedding_lookup_backward", "embeddings.backward"),
    ]


@contextmanager
def instrumented(model, grads, timer: StageTimer):
    """Put the timing wrappers in place for the `with` block, and take them away after it. A stage the model no
    longer has (renamed or removed) raises AttributeError here, so the profiler cannot time a path training does
    not take."""
    saved = []
    try:
        for obj, attr, name in _stages(model, grads, timer):
            original = getattr(obj, attr)                   # AttributeError if the model changed
            own = isinstance(obj, types.ModuleType) or attr in vars(obj)
            saved.append((obj, attr, original if own else _MISSING))
            fn = timer.wrap(name, original)
            if attr in ("_encoder_layer", "_encoder_layer_backward"):
                fn = timer.in_layer(fn, 1 if attr == "_encoder_layer" else 2)
            setattr(obj, attr, fn)
        yield timer
    finally:
        for obj, attr, original in reversed(saved):
            if original is _MISSING:
                delattr(obj, attr)                          # the instance falls back to its class's method
            else:
                setattr(obj, attr, original)


_MISSING = object()


def _as_batch(b: dict) -> Batch:
    return Batch(b["input_ids"].astype(np.int32), b["target_ids"].astype(np.int32), b["mask_positions"],
                 b["attention_mask"].astype(np.int32), b["token_type_ids"].astype(np.int32))


def training_step_fn(model, batch: Batch, lr: float = 1e-4):
    """The step the trainer takes (one thread): GradientWorker.loss_and_gradients, clipping, AdamW. Returns
    (step(timer=None) -> loss, worker): with a StageTimer the optimizer is timed as the stage "optimizer"."""
    worker = GradientWorker(model, 1, seed=0)
    opt = AdamW(model.store.flat, decay_mask(model.store), lr=lr)

    def step(timer: StageTimer | None = None) -> float:
        loss, _ = worker.loss_and_gradients(batch)
        update = lambda: (clip_grad_norm(worker.grads.flat, 1.0), opt.step(worker.grads.flat, lr))  # noqa: E731
        (timer.wrap("optimizer", update) if timer is not None else update)()
        return loss
    return step, worker


def blas_seconds(shapes: list[tuple], dtype, repeats: int, rng: np.random.Generator) -> float:
    """Best-of-repeats time of running the matmuls `shapes` [(batch, M, K, N)] alone on random arrays."""
    if not shapes:
        return 0.0
    operands = []
    for b, m, k, n in shapes:
        lead = () if b == 1 else (b,)
        operands.append((rng.standard_normal((*lead, m, k)).astype(dtype),
                         rng.standard_normal((*lead, k, n)).astype(dtype)))
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for a, w in operands:
            a @ w
        best = min(best, time.perf_counter() - t0)
    return best


def profile_training_step(config: ModelConfig | dict | None = None, batch_size: int = 32, seq_len: int = 128,
                          repeats: int = 5, seed: int = 0, threads: int | None = None) -> dict:
    """Time one training step stage by stage (see the module docstring) on a synthetic masked batch.

    config: a ModelConfig or dict (None: the model `minibert train` builds). Instrumented and untimed steps
    alternate, `repeats` of each after one warm-up step; the medians are reported.
    threads: BLAS threads during the measurement (None: leave as is). Returns {"stages": [{"name", "seconds",
    "calls", "flops", "gflops_per_s", "blas_seconds", "blas_share"}], "total_seconds" (sum of the stages),
    "untimed_step_seconds", "total_flops", "blas_seconds", "blas_share", "loss", "masked_tokens", "batch_size",
    "seq_len", "repeats", "threads", "config"}.
    """
    from threadpoolctl import threadpool_limits

    cfg = ModelConfig(**config) if isinstance(config, dict) else (config or pretraining_model())
    if seq_len > cfg.max_position_embeddings:
        raise MiniBertError(f"seq_len {seq_len} exceeds max_position_embeddings={cfg.max_position_embeddings}; "
                            "lower --seq or raise model.max_position_embeddings")
    if batch_size < 1 or seq_len < 4 or repeats < 1:
        raise MiniBertError(f"need batch_size >= 1, seq_len >= 4 and repeats >= 1; got {batch_size}, {seq_len}, "
                            f"{repeats}")
    model = MiniBERT(cfg, seed=seed)
    batch = _as_batch(synthetic_batch(cfg.vocab_size, batch_size, seq_len, seed))
    N = int(batch.mask_positions.sum())
    step, worker = training_step_fn(model, batch)
    per_stage: dict[str, list[float]] = {}
    timed, untimed = [], []
    with threadpool_limits(threads) if threads else nullcontext():
        loss = step()                                                    # warm-up: buffers, page faults
        for _ in range(repeats):
            timer = StageTimer()
            with instrumented(model, worker.grads, timer):
                t0 = time.perf_counter()
                step(timer)
                timed.append(time.perf_counter() - t0)
            for name, sec in timer.seconds.items():
                per_stage.setdefault(name, []).append(sec)
            calls = timer.calls
            t0 = time.perf_counter()
            step()
            untimed.append(time.perf_counter() - t0)
        shapes = matmul_shapes(cfg, batch_size, seq_len, N)
        rng = np.random.default_rng(seed)
        blas = {name: blas_seconds(shapes.get(name, []), model.dtype, repeats, rng) for name in per_stage}
    worker.close()
    flops = stage_flops(cfg, batch_size, seq_len, N)
    order = {name: i for i, name in enumerate(shapes)}
    stages = []
    for name in sorted(per_stage, key=lambda n: order.get(n, len(order))):
        s = statistics.median(per_stage[name])
        b = min(blas[name], s)
        stages.append({"name": name, "seconds": s, "calls": calls[name], "flops": flops.get(name, 0),
                       "gflops_per_s": flops.get(name, 0) / s / 1e9 if s > 0 else 0.0,
                       "blas_seconds": b, "blas_share": b / s if s > 0 else 0.0})
    total = sum(s["seconds"] for s in stages)
    total_blas = sum(s["blas_seconds"] for s in stages)
    return {"stages": stages, "total_seconds": total, "untimed_step_seconds": statistics.median(untimed),
            "timed_step_seconds": statistics.median(timed), "total_flops": sum(s["flops"] for s in stages),
            "blas_seconds": total_blas, "blas_share": total_blas / total if total > 0 else 0.0,
            "loss": loss, "masked_tokens": N, "batch_size": batch_size, "seq_len": seq_len, "repeats": repeats,
            "threads": threads, "config": cfg.model_dump()}


def format_report(r: dict) -> str:
    """The profile as a plain-text table, then the totals and what they mean."""
    c = r["config"]
    lines = [f"One training step: {c['num_layers']} layers, D={c['hidden_size']}, H={c['num_heads']}, "
             f"F={c['intermediate_size']}, V={c['vocab_size']}, {c['activation']}, {c['norm_position']}-LN; batch "
             f"{r['batch_size']} x {r['seq_len']} ({r['masked_tokens']} masked tokens); median of {r['repeats']}, "
             f"{r['threads'] or 'default'} BLAS thread(s)", "",
             f"{'stage':<28}{'ms':>9}{'share':>8}{'MFLOP':>11}{'GFLOP/s':>9}{'BLAS ms':>9}{'BLAS %':>8}"]
    total = r["total_seconds"]
    for s in r["stages"]:
        lines.append(f"{s['name']:<28}{1e3 * s['seconds']:9.2f}{s['seconds'] / total:8.1%}{s['flops'] / 1e6:11.1f}"
                     f"{s['gflops_per_s']:9.2f}{1e3 * s['blas_seconds']:9.2f}{s['blas_share']:8.0%}")
    lines += ["", f"{'sum of stages':<28}{1e3 * total:9.2f}{'':8}{r['total_flops'] / 1e6:11.1f}"
                  f"{r['total_flops'] / total / 1e9:9.2f}{1e3 * r['blas_seconds']:9.2f}{r['blas_share']:8.0%}",
              f"{'the same step, untimed':<28}{1e3 * r['untimed_step_seconds']:9.2f}"
              f"   (stages sum to {total / r['untimed_step_seconds']:.1%} of it)",
              "", f"Matrix multiplications (BLAS) take {r['blas_share']:.0%} of the step's time; the other "
                  f"{1 - r['blas_share']:.0%} is elementwise work (softmax, LayerNorm, the activation, dropout, the "
                  "embedding scatter-add, AdamW: a few operations per element, bound by memory bandwidth) and, for "
                  "small shapes, Python and NumPy call overhead."]
    return "\n".join(lines)
