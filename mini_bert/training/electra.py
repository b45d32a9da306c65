"""training.objective=electra: the step's loss and gradients, and the held-out metrics, of replaced-token
detection (core/electra.py holds the math).

    ElectraWorker.loss_and_gradients(batch)  ->  ElectraGradients.electra_loss_and_backward (core/electra.py),
                                                 one call per row block, each on its own thread and buffer

The held-out metrics are the generator's masked-LM accuracy and perplexity (the trainer's usual keys) and the
discriminator's replaced-token loss and accuracy on the same 15%-masked batches, each corrupted with samples drawn
from a generator seeded by the batch's index, so an evaluation is a fixed function of the weights.
"""

from __future__ import annotations

import math

import numpy as np

from ..config import RunConfig
from ..core.electra import Electra, ElectraGradients, binary_cross_entropy, generator_config, rtd_head_forward
from ..errors import ConfigError
from .step import GradientWorker, evaluate_mlm, split_batch


def build_electra(cfg: RunConfig) -> Electra:
    """The discriminator of cfg.model and its generator (training.generator_width), seeded by training.seed."""
    return Electra(cfg.model, generator_config(cfg.model, cfg.training.generator_width), seed=cfg.training.seed)


def check_electra(cfg: RunConfig, ranks: int, device: str) -> None:
    """The settings ELECTRA runs with: one process on the CPU, no in-training analysis, no per-layer rates."""
    t = cfg.training
    problems = [(ranks > 1, "runs in one process (not under mpirun)"),
                (device != "cpu", "runs on the CPU (training.device=cpu)"),
                (t.analysis_every > 0, "has no in-training analysis (training.analysis_every=0)"),
                (t.layer_lr_decay < 1.0, "has no per-layer learning rates (training.layer_lr_decay=1)")]
    for bad, what in problems:
        if bad:
            raise ConfigError(f"training.objective=electra {what}; change that setting or use objective=mlm")


class ElectraWorker(GradientWorker):
    """GradientWorker for ELECTRA: the batch split into fixed row blocks computed in parallel, each block's loss
    scaled so that the blocks add up to the whole batch (generator: its share of the masked tokens;
    discriminator: divided by the real tokens of the whole batch). The replacements are sampled from each
    thread's generator, whose state a checkpoint saves, so a resumed run draws the same samples."""

    gradients_class = ElectraGradients
    # best/ is chosen by the generator's held-out masked loss: fixed batches and masks make it comparable across
    # steps. The replaced-token loss is not: its task grows harder as the generator's samples grow plausible.
    selection_key = "valid_generator_loss"

    def __init__(self, model: Electra, threads: int, seed: int, weight: float, first_stream: int = 0):
        super().__init__(model, threads, seed, first_stream)
        self.weight = weight

    def loss_and_gradients(self, batch, n_total: int | None = None) -> tuple[float, None]:
        parts = split_batch(batch, self.threads)
        n = max(1, int(batch.mask_positions.sum()))
        real = int(np.asarray(batch.attention_mask).sum())
        args = [(part, rng, self.weight, int(part.mask_positions.sum()) / n, real)
                for part, rng in zip(parts, self.rngs)]
        if self.pool is None or len(parts) == 1:
            results = [self.grads.electra_loss_and_backward(*args[0])]
        else:
            futures = [self.pool.submit(g.electra_loss_and_backward, *a) for g, a in zip(self.thread_grads, args)]
            results = [f.result() for f in futures]
        g0 = self.grads.flat
        for g in self.thread_grads[1:len(results)]:
            g0 += g.flat
        stats = [s for _, s in results]
        self.last_stats = {"rtd_acc": sum(s["rtd_correct"] for s in stats) / max(1, real),
                           "replaced_fraction": sum(s["replaced"] for s in stats) / max(1, real)}
        return sum(loss for loss, _ in results), None

    def evaluate(self, batches) -> dict:
        return evaluate_electra(self.model, batches, self.weight, self.pool)


def evaluate_electra(model: Electra, batches, weight: float, pool=None) -> dict:
    """The generator's masked-LM metrics (valid_loss is L_gen + weight * L_disc, as in training) and the
    discriminator's replaced-token loss and accuracy, over fixed masked batches."""
    mlm = evaluate_mlm(model.generator, batches, pool)

    def one(item):
        i, b = item
        logits, _ = model.generator.forward(b.input_ids, b.attention_mask, b.token_type_ids,
                                            masked_positions=b.mask_positions)
        corrupted, replaced = model.corrupt(b, logits, np.random.default_rng([i, 4]))
        h, _ = model.discriminator.encode(corrupted, b.attention_mask, b.token_type_ids)
        z = rtd_head_forward(h, model.params["rtd_w"], model.params["rtd_b"])
        real = np.asarray(b.attention_mask).astype(bool)
        loss, _ = binary_cross_entropy(z, replaced, real, 1.0)            # summed over the batch's real tokens
        return loss, int((((z > 0) == replaced) & real).sum()), int(real.sum()), int((replaced & real).sum())

    items = list(enumerate(batches))
    parts = list(pool.map(one, items)) if pool is not None else [one(x) for x in items]
    tokens = max(1, sum(p[2] for p in parts))
    rtd_loss = sum(p[0] for p in parts) / tokens
    return {**mlm, "valid_loss": mlm["valid_loss"] + weight * rtd_loss, "valid_generator_loss": mlm["valid_loss"],
            "valid_rtd_loss": rtd_loss, "valid_rtd_acc": sum(p[1] for p in parts) / tokens,
            "valid_replaced_fraction": sum(p[3] for p in parts) / tokens,
            "valid_perplexity": float(math.exp(min(mlm["valid_loss"], 50.0)))}
