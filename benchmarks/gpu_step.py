"""One training step on a GPU: the NumPy code on CuPy (training.device=cuda) against its PyTorch twin, paired.

    python benchmarks/gpu_step.py [--repeats 20] [--agree-steps 20] [--no-compile]
    python benchmarks/gpu_step.py --dry-run          # the same code on the CPU with NumPy, tiny shapes

For two shapes, the default `minibert train` model (pretraining_model(): vocab 8192, hidden 192, 3 layers, batch
64 x 64) and a BERT-base-sized one (vocab 30522, hidden 768, 12 layers, 12 heads, FFN 3072, batch 32 x 128), it
times a full step (forward with logits at the masked positions only, backward, global-norm clip, AdamW):
  numpy    the trainer's own parts on the device of training.device=cuda (training/device.py): the flat buffers on
           the GPU, GradientWorker, clip_grad_norm, AdamW;
  eager    TorchMiniBERT (mini_bert/reference/torch_bert.py) built from the same initial weights, on the same GPU,
           with torch.optim.AdamW decayed where the NumPy decay_mask decays;
  compile  the same twin through torch.compile, if it compiles (the error is printed if not).
The sides alternate step by step, after warm-up steps, so that clocks and load fall on them alike; each timed step
ends with a device synchronisation. Then, over --agree-steps steps of fresh batches from one seed, it compares each
side's losses with the NumPy run on the CPU (the largest relative difference): the GPU runs the same computation.
For BERT-base the agreement uses batches of 8 rows, so that the CPU run stays short.

--dry-run runs all of it on the CPU with NumPy (the numpy side on training.device=cpu, the twin on the CPU) on two
tiny shapes, to check the script itself where there is no GPU; its times mean nothing.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))       # reference_torch.py, beside this file


@dataclass
class Shape:
    name: str
    model: dict           # ModelConfig settings on top of pretraining_model()
    batch: int
    seq: int
    agree_batch: int      # rows of the agreement batches


SHAPES = [
    Shape("default model (minibert train)", {}, 64, 64, 64),
    Shape("BERT-base size (12 x 768)", {"vocab_size": 30522, "hidden_size": 768, "num_layers": 12, "num_heads": 12,
                                        "intermediate_size": 3072, "max_position_embeddings": 512}, 32, 128, 8),
]
DRY_SHAPES = [
    Shape("tiny, 1 layer", {"vocab_size": 300, "hidden_size": 32, "num_layers": 1, "num_heads": 2,
                            "intermediate_size": 64, "max_position_embeddings": 32}, 4, 16, 4),
    Shape("tiny, 2 layers", {"vocab_size": 300, "hidden_size": 48, "num_layers": 2, "num_heads": 4,
                             "intermediate_size": 96, "max_position_embeddings": 32}, 4, 16, 2),
]
LR, CLIP = 1e-4, 1.0


def model_config(shape: Shape):
    from mini_bert.config import ModelConfig, pretraining_model

    return ModelConfig(**{**pretraining_model().model_dump(), **shape.model})


def batches(cfg, rows: int, seq: int, count: int, seed: int) -> list:
    """`count` synthetic MLM batches (random ids, [CLS] ... [SEP], 15% masked) from one seed."""
    from mini_bert.data.batches import Batch
    from mini_bert.data.masking import mask_tokens

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        ids = rng.integers(5, cfg.vocab_size, (rows, seq)).astype(np.int32)
        ids[:, 0], ids[:, -1] = 2, 3
        inp, tgt, pos = mask_tokens(ids, cfg.vocab_size, 4, 0.15, rng)
        out.append(Batch(inp, tgt, pos, np.ones_like(ids), np.zeros_like(ids)))
    return out


class NumpySide:
    """The trainer's step on a device of training/device.py (`cpu` or `cuda`)."""

    def __init__(self, cfg, device_name: str):
        from mini_bert.core.model import MiniBERT
        from mini_bert.training.device import resolve_device
        from mini_bert.training.optimizer import AdamW, decay_mask
        from mini_bert.training.step import GradientWorker

        self.device = resolve_device(device_name)
        self.model = MiniBERT(cfg, seed=0)
        self.device.move_model(self.model)
        self.worker = GradientWorker(self.model, 1, seed=0)
        self.device.move_gradients(self.worker.grads)
        self.opt = AdamW(self.model.store.flat, decay_mask(self.model.store), lr=LR)

    def step(self, batch) -> float:
        from mini_bert.training.optimizer import clip_grad_norm

        loss, _ = self.worker.loss_and_gradients(self.device.put(batch))
        clip_grad_norm(self.worker.grads.flat, CLIP)
        self.opt.step(self.worker.grads.flat, LR)
        return loss

    def sync(self) -> None:
        if self.device.name == "cuda":
            self.device.xp.cuda.Device().synchronize()


class TorchSide:
    """TorchMiniBERT from the same initial weights, AdamW decayed like the NumPy decay_mask; optionally compiled."""

    def __init__(self, cfg, device: str, compile_model: bool):
        import torch

        from mini_bert.core.model import MiniBERT
        from mini_bert.reference.torch_bert import TorchMiniBERT
        from reference_torch import decay_groups

        self.torch, self.device = torch, torch.device(device)
        self.model = TorchMiniBERT.from_numpy(MiniBERT(cfg, seed=0)).to(self.device)
        self.model.train()
        decay, no_decay = decay_groups(self.model)
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                                      {"params": no_decay, "weight_decay": 0.0}], lr=LR, eps=1e-6)
        self.forward = torch.compile(self.model) if compile_model else self.model

    def step(self, batch) -> float:
        torch = self.torch
        from reference_torch import batch_tensors

        ids, mask, types, pos, targets = (t.to(self.device) for t in batch_tensors(batch))
        self.opt.zero_grad(set_to_none=True)
        logits = self.forward(ids, mask, types, masked_positions=pos)
        loss = torch.nn.functional.cross_entropy(logits, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), CLIP)
        self.opt.step()
        return float(loss.item())

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()


def build_sides(cfg, device: str, compile_model: bool, log) -> dict:
    sides = {"numpy": NumpySide(cfg, device)}
    try:
        import torch  # noqa: F401
    except ImportError:
        log("  PyTorch not installed: timing the NumPy side only (pip install 'mini-bert[reference]')")
        return sides
    sides["eager"] = TorchSide(cfg, device, compile_model=False)
    if compile_model:
        sides["compile"] = TorchSide(cfg, device, compile_model=True)
    return sides


def time_steps(sides: dict, batch, repeats: int, log) -> dict:
    """Median seconds per step of each side, alternating; a side whose warm-up fails is reported and dropped."""
    for name in list(sides):
        try:
            for _ in range(3):
                sides[name].step(batch)
            sides[name].sync()
        except Exception as e:                 # torch.compile may fail on a machine without a compiler
            log(f"  {name}: failed in warm-up ({type(e).__name__}: {str(e).splitlines()[0][:160]}); left out")
            del sides[name]
    times = {name: [] for name in sides}
    for _ in range(repeats):
        for name, side in sides.items():
            t0 = time.perf_counter()
            side.step(batch)
            side.sync()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def agreement(cfg, shape: Shape, device: str, compile_model: bool, steps: int, log) -> dict:
    """Largest relative loss difference over `steps` steps between each side on `device` and NumPy on the CPU."""
    data = batches(cfg, shape.agree_batch, shape.seq, steps, seed=1)
    cpu = NumpySide(cfg, "cpu")
    reference = [cpu.step(b) for b in data]
    out = {}
    for name, side in build_sides(cfg, device, compile_model, lambda *a: None).items():
        try:
            losses = [side.step(b) for b in data]
        except Exception as e:
            log(f"  agreement, {name}: failed ({type(e).__name__}: {str(e).splitlines()[0][:160]})")
            continue
        out[name] = max(abs(a - b) / abs(b) for a, b in zip(losses, reference))
    out["first_loss"], out["last_loss"] = reference[0], reference[-1]
    return out


def describe_device(device: str) -> str:
    from mini_bert.training.device import resolve_device

    text = resolve_device(device).describe()
    try:
        import torch
        text += f"; torch {torch.__version__}" + (f" ({torch.cuda.get_device_name()})" if device == "cuda" else "")
    except ImportError:
        pass
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20, help="timed steps per side (alternating)")
    ap.add_argument("--agree-steps", type=int, default=20, help="steps of the loss agreement against the CPU")
    ap.add_argument("--no-compile", action="store_true", help="leave out the torch.compile side")
    ap.add_argument("--dry-run", action="store_true", help="the same code on the CPU (NumPy), tiny shapes")
    args = ap.parse_args(argv)
    device, shapes = ("cpu", DRY_SHAPES) if args.dry_run else ("cuda", SHAPES)
    compile_model = not args.no_compile and not args.dry_run
    log = print
    from mini_bert.errors import MiniBertError
    from mini_bert.training.allocator import keep_freed_memory

    keep_freed_memory()
    try:
        log(f"device: {describe_device(device)}" + ("  [dry run: CPU, tiny shapes; times mean nothing]"
                                                    if args.dry_run else ""))
    except MiniBertError as e:
        print(f"gpu_step: {e} (or run with --dry-run)", file=sys.stderr)
        return 2
    for shape in shapes:
        cfg = model_config(shape)
        batch = batches(cfg, shape.batch, shape.seq, 1, seed=0)[0]
        sides = build_sides(cfg, device, compile_model, log)
        params = sides["numpy"].model.num_parameters
        log(f"{shape.name}: {params:,} parameters, batch {shape.batch} x {shape.seq} "
            f"({int(batch.mask_positions.sum())} masked tokens), {args.repeats} alternating steps per side")
        medians = time_steps(sides, batch, args.repeats, log)
        tokens = shape.batch * shape.seq
        for name, s in medians.items():
            ratio = f"  numpy / {name}: {medians['numpy'] / s:.2f}x" if name != "numpy" else ""
            log(f"  {name:<8} median {s * 1000:9.2f} ms  {tokens / s:12,.0f} tokens/s{ratio}")
        agree = agreement(cfg, shape, device, compile_model, args.agree_steps, log)
        log(f"  losses against NumPy on the CPU over {args.agree_steps} steps of {shape.agree_batch} x {shape.seq} "
            f"(CPU loss {agree.pop('first_loss'):.4f} -> {agree.pop('last_loss'):.4f}): largest relative difference "
            + ", ".join(f"{name} {d:.1e}" for name, d in agree.items()))
        if not all(math.isfinite(d) for d in agree.values()):
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
