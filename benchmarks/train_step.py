"""Time one full training step (forward, backward, clip, AdamW) of the NumPy model and of its PyTorch twin.

    python benchmarks/train_step.py [--batch 64] [--seq 64] [--compare-shape 32,128] [--repeats 10] [--threads 2]
                                    [key=value model overrides]

Batch 64 x 64 (the recipe's rows) of the notes' model with dropout on, 15% masking, logits at masked positions only
(both sides). The two are run alternately in one invocation, so that machine load affects both alike; it prints the median
step time, tokens/s, the ratio NumPy / PyTorch, and the GEMM-only floor: the same step's matrix products alone
(shapes, transpositions and thread split as the model runs them), so each run says how close the step is to what
its BLAS allows. PyTorch (optional extra `reference`) is skipped if absent.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from mini_bert.training.allocator import keep_freed_memory


def numpy_step_fn(cfg, batch, threads: int, analysis_every: int = 0):
    from threadpoolctl import threadpool_limits

    from mini_bert.core.model import MiniBERT
    from mini_bert.training.optimizer import AdamW, clip_grad_norm, decay_mask
    from mini_bert.training.trainer import GradientWorker

    model = MiniBERT(cfg, seed=0)
    worker = GradientWorker(model, threads, seed=0)
    opt = AdamW(model.store.flat, decay_mask(model.store), lr=1e-4)
    opt.use_threads(worker.pool, worker.threads)      # as the trainer does
    limits = threadpool_limits(1 if threads > 1 else os.cpu_count())
    monitor = None
    if analysis_every:
        from mini_bert.analysis.issues import TrainingMonitor
        monitor = TrainingMonitor(every=analysis_every)
    state = {"step": 0}

    def step():
        loss, cache = worker.loss_and_gradients(batch)
        norm = clip_grad_norm(worker.grads.flat, 1.0)
        opt.step(worker.grads.flat, 1e-4)
        state["step"] += 1
        if monitor is not None:   # exactly what the trainer does with training.analysis_every
            monitor.observe(state["step"], model, worker.grads, cache, 1e-4, loss, grad_norm=norm)

    return step, limits


def torch_step_fn(cfg, batch):
    import torch

    from mini_bert.core.model import MiniBERT
    from mini_bert.reference.torch_bert import TorchMiniBERT

    torch.set_num_threads(os.cpu_count())
    model = TorchMiniBERT.from_numpy(MiniBERT(cfg, seed=0))
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, eps=1e-6)
    ids = torch.from_numpy(batch.input_ids.astype(np.int64))
    am = torch.from_numpy(batch.attention_mask.astype(np.int64))
    tt = torch.from_numpy(batch.token_type_ids.astype(np.int64))
    pos = torch.from_numpy(batch.mask_positions)
    targets = torch.from_numpy(batch.target_ids.astype(np.int64))[pos]

    def step():
        opt.zero_grad(set_to_none=True)
        logits = model(ids, am, tt, masked_positions=pos)
        loss = torch.nn.functional.cross_entropy(logits, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return step


def gemm_operands(cfg, rows: int, seq: int, masked: int, rng) -> list[tuple]:
    """Every matrix product of one training step of `rows` x `seq` tokens with `masked` masked positions, as the
    model runs them (core/layers.py, core/attention.py, the tied decoder in core/gradients.py): (a, b, out) with the
    same shapes, transpositions (views, as the code passes them) and float32 dtype. Forward then backward."""
    D, F, H, V = cfg.hidden_size, cfg.intermediate_size, cfg.num_heads, cfg.vocab_size
    N, d, M, B, T = rows * seq, cfg.hidden_size // cfg.num_heads, masked, rows, seq
    r = lambda *shape: rng.standard_normal(shape, dtype=np.float32)  # noqa: E731
    out = lambda a, b: np.empty(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]) + (a.shape[-2], b.shape[-1]),  # noqa: E731
                                np.float32)
    pairs = []
    for _ in range(cfg.num_layers):
        heads = r(B, H, T, d)
        scores = r(B, H, T, T)
        pairs += [(r(N, D), r(D, 3 * D)),                          # qkv = x W_QKV
                  (heads, r(B, H, T, d).transpose(0, 1, 3, 2)),     # S = Q K^T
                  (scores, heads),                                  # C = A V
                  (r(N, D), r(D, D)),                               # out = C W_O
                  (r(N, D), r(D, F)), (r(N, F), r(F, D))]           # FFN
        pairs += [(r(N, D), r(F, D).T), (r(N, F).T, r(N, D)),      # FFN2: dx = dy W2^T, dW2 = x^T dy
                  (r(N, F), r(D, F).T), (r(N, D).T, r(N, F)),      # FFN1
                  (r(N, D), r(D, D).T), (r(N, D).T, r(N, D)),      # W_O
                  (scores.transpose(0, 1, 3, 2), heads),            # dV = A^T dC
                  (heads, r(B, H, T, d).transpose(0, 1, 3, 2)),     # dA = dC V^T
                  (scores, heads), (scores.transpose(0, 1, 3, 2), heads),   # dQ = dS K, dK = dS^T Q
                  (r(N, 3 * D), r(D, 3 * D).T), (r(N, D).T, r(N, 3 * D))]  # W_QKV
    pairs += [(r(M, D), r(D, D)), (r(M, D), r(V, D).T),              # MLM head: transform, tied decoder
              (r(M, V), r(V, D)), (r(M, V).T, r(M, D)),             # decoder: dx = dy E, dE = dy^T x
              (r(M, D), r(D, D).T), (r(M, D).T, r(M, D))]           # transform
    return [(a, b, out(a, b)) for a, b in pairs]


def gemm_floor_fn(cfg, batch, threads: int):
    """A step of matrix products only: each thread runs the products of its row block, as GradientWorker splits
    the batch, with BLAS on one thread per worker (or all cores when threads == 1). Nothing else is timed."""
    from concurrent.futures import ThreadPoolExecutor

    from mini_bert.training.step import split_batch

    rng = np.random.default_rng(0)
    blocks = [gemm_operands(cfg, p.input_ids.shape[0], p.input_ids.shape[1], int(p.mask_positions.sum()), rng)
              for p in split_batch(batch, threads)]
    pool = ThreadPoolExecutor(len(blocks)) if len(blocks) > 1 else None

    def run(products):
        for a, b, o in products:
            np.matmul(a, b, out=o)

    def step():
        if pool is None:
            run(blocks[0])
        else:
            list(pool.map(run, blocks))

    step.flops = sum(2 * o.size * a.shape[-1] for products in blocks for a, _, o in products)
    return step


def cpu_model() -> str:
    """The CPU's model name (lscpu's "Model name"), or the platform's processor string."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown"


def blas_description() -> str:
    """The BLAS NumPy runs on and the kernel it chose (threadpoolctl)."""
    from threadpoolctl import threadpool_info

    blas = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return ", ".join(f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture', '?')})" for i in blas) \
        or "unknown"


def main() -> None:
    from mini_bert.config import ModelConfig, parse_overrides
    from mini_bert.data.batches import Batch
    from mini_bert.data.masking import mask_tokens

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64, help="rows per step (default 64: the recipe's 64 x 64)")
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--compare-shape", default=None, metavar="B,T",
                    help="also time NumPy's step on batches of B x T, alternately: the tokens/s of two row shapes "
                         "paired in one run (e.g. 32,128, the earlier recipe's)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2, help="NumPy: batch split across this many threads")
    ap.add_argument("--mask-prob", type=float, default=0.15)
    ap.add_argument("--analysis-every", type=int, default=0,
                    help="also time a NumPy step with in-training analysis every N steps (the overhead)")
    ap.add_argument("overrides", nargs="*", help="model settings, e.g. activation=gelu norm_position=pre")
    args = ap.parse_args()
    # the process setting `minibert` uses; it applies to both sides (PyTorch allocates through malloc too)
    keep_freed_memory()
    cfg = ModelConfig(**parse_overrides([o if o.startswith("model.") else "model." + o
                                         for o in args.overrides]).get("model", {}))
    rng = np.random.default_rng(0)
    ids = rng.integers(5, cfg.vocab_size, (args.batch, args.seq)).astype(np.int32)
    ids[:, 0], ids[:, -1] = 2, 3
    inp, tgt, pos = mask_tokens(ids, cfg.vocab_size, 4, args.mask_prob, rng)
    batch = Batch(inp, tgt, pos, np.ones_like(ids), np.zeros_like(ids))
    tokens = ids.size

    np_step, limits = numpy_step_fn(cfg, batch, args.threads)
    runners = {"numpy": np_step}
    tokens_of = {"numpy": tokens}
    if args.compare_shape:
        b, t = (int(x) for x in args.compare_shape.split(","))
        other = rng.integers(5, cfg.vocab_size, (b, t)).astype(np.int32)
        other[:, 0], other[:, -1] = 2, 3
        o_inp, o_tgt, o_pos = mask_tokens(other, cfg.vocab_size, 4, args.mask_prob, rng)
        name = f"numpy {b}x{t}"
        runners[name] = numpy_step_fn(cfg, Batch(o_inp, o_tgt, o_pos, np.ones_like(other), np.zeros_like(other)),
                                      args.threads)[0]
        tokens_of[name] = other.size
    if args.analysis_every:
        runners[f"numpy+analysis/{args.analysis_every}"] = numpy_step_fn(cfg, batch, args.threads,
                                                                        args.analysis_every)[0]
    floor = gemm_floor_fn(cfg, batch, args.threads)
    runners["GEMM-only floor"] = floor
    try:
        runners["torch"] = torch_step_fn(cfg, batch)
    except ImportError:
        print("PyTorch not installed: timing NumPy only (pip install 'mini-bert[reference]')")
    times = {k: [] for k in runners}
    with limits:
        for _ in range(3):                 # warm-up: the first steps also fill malloc's free lists
            for name, fn in runners.items():
                fn()
        for _ in range(args.repeats):
            for name, fn in runners.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    print(f"one training step, batch {args.batch} x {args.seq}, {cfg.num_layers} layers, hidden {cfg.hidden_size}, "
          f"{cfg.activation}, {cfg.norm_position}-LN, dropout {cfg.dropout}, {int(pos.sum())} masked tokens, "
          f"{os.cpu_count()} cores, {args.repeats} repeats")
    print(f"  CPU: {cpu_model()}; BLAS: {blas_description()}")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:<20} median {med * 1000:8.1f} ms   min {min(ts) * 1000:8.1f} ms   "
              f"{tokens_of.get(name, tokens) / med:9.0f} tokens/s")
    for name in times:
        if name.startswith("numpy ") and "x" in name:
            rate = lambda n: tokens_of[n] / statistics.median(times[n])  # noqa: E731
            print(f"  tokens/s, {args.batch}x{args.seq} against {name[6:]}: {rate('numpy') / rate(name):.3f}x")
    floor_s = statistics.median(times["GEMM-only floor"])
    print(f"  NumPy step / its GEMM-only floor: {statistics.median(times['numpy']) / floor_s:.2f}x "
          f"(the floor: {floor.flops / 1e9:.2f} GFLOP in {floor_s * 1000:.1f} ms = {floor.flops / floor_s / 1e9:.0f} "
          f"GFLOP/s)")
    if "torch" in times:
        ratio = statistics.median(times["numpy"]) / statistics.median(times["torch"])
        print(f"  NumPy / PyTorch step time: {ratio:.2f}x")
    for name in times:
        if name.startswith("numpy+analysis"):
            extra = statistics.median(times[name]) / statistics.median(times["numpy"]) - 1
            print(f"  in-training analysis overhead ({name}): {extra * 100:+.1f}% per step")


if __name__ == "__main__":
    main()
