"""Figures and numbers behind docs/analysis.md: what the default pretrained model learned, and how.

    python scripts/analysis_report.py RUN_HISTORY_DIR --output-dir docs/analysis [--post-ln-run DIR]

RUN_HISTORY_DIR holds the step_* checkpoints of one run (`minibert train` keeps only the last few; copy them out
while it trains to keep the history). For each checkpoint, on the run's own fixed validation batches:
  - attention entropy per layer and head, and what each head attends to (previous / next token, itself,
    [CLS] / [SEP], mean distance): how attention changes during training, and which heads differ;
  - the "logit lens": masked-token accuracy when the MLM head reads each layer's output: what each layer captures;
  - linear CKA between layers (final checkpoint);
  - gradient norm per layer at initialisation and after training, pre-LN (this run) against the same model
    with post-LN at initialisation: how LayerNorm placement shapes gradient flow.
Every figure is written with its numbers as JSON (mini_bert.analysis.figures); summary.json collects them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from mini_bert.core.gradients import MiniBERTGradients
from mini_bert.core.model import MiniBERT
from mini_bert.evaluation import metrics as M
from mini_bert.analysis.dynamics import analyze_gradient_magnitudes_by_layer
from mini_bert.training.checkpointing import list_step_checkpoints, load_checkpoint
from mini_bert.core.gradients import mlm_cross_entropy
from mini_bert.training.trainer import prepare_data
from mini_bert.analysis import figures as V
from mini_bert.analysis.figures import to_jsonable


def head_patterns(attention, input_ids, attention_mask) -> dict:
    """Where each head looks, averaged over real query tokens: (L, H) arrays per pattern."""
    A = np.stack(attention)                                    # (L, B, H, T, T)
    T = A.shape[-1]
    real = attention_mask.astype(bool)                         # (B, T)
    w = real[None, :, None, :].astype(A.dtype)                 # query weights (1, B, 1, T)
    denom = w.sum(axis=(1, 3))                                 # (1, 1)

    def mean_over_queries(x):                                  # x: (L, B, H, T) per query
        return (x * w).sum(axis=(1, 3)) / denom

    idx = np.arange(T)
    prev = np.zeros_like(A[..., 0])
    prev[..., 1:] = A[..., idx[1:], idx[1:] - 1]
    nxt = np.zeros_like(A[..., 0])
    nxt[..., :-1] = A[..., idx[:-1], idx[:-1] + 1]
    is_sep = (input_ids == 3)[None, :, None, None, :]
    distance = np.abs(idx[:, None] - idx[None, :])             # (T, T)
    return {
        "previous_token": mean_over_queries(prev),
        "next_token": mean_over_queries(nxt),
        "self": mean_over_queries(A[..., idx, idx]),
        "cls": mean_over_queries(A[..., 0]),
        "sep": mean_over_queries((A * is_sep).sum(-1)),
        "mean_distance": mean_over_queries((A * distance).sum(-1)),
    }


def logit_lens(model: MiniBERT, batches) -> list[float]:
    """Masked-token accuracy when the MLM head reads layer l's output instead of the last layer's."""
    P, cfg = model.store.blocks, model.config
    correct = np.zeros(cfg.num_layers + 1)
    count = 0
    from mini_bert.core.layers import layer_norm_forward
    for b in batches:
        _, cache = model.encode(b.input_ids, b.attention_mask)
        for l, h in enumerate(cache["hidden_states"]):
            if cfg.norm_position == "pre" and l < cfg.num_layers:   # the residual stream is normalised at the end
                h, _ = layer_norm_forward(h, P["ln_f_gamma"], P["ln_f_beta"], cfg.layer_norm_eps)
            logits = model.mlm_head(h, {}, b.mask_positions)
            correct[l] += (logits.argmax(-1) == b.target_ids[b.mask_positions]).sum()
        count += int(b.mask_positions.sum())
    return (correct / count).tolist()


def gradient_flow(model: MiniBERT, batches) -> dict:
    grads = MiniBERTGradients(model)
    for b in batches:
        logits, cache = model.forward(b.input_ids, b.attention_mask, masked_positions=b.mask_positions)
        _, dlogits = mlm_cross_entropy(logits, b.target_ids, b.mask_positions)
        grads.backward_from_logits(dlogits / len(batches), cache)
    return analyze_gradient_magnitudes_by_layer(grads.gradients)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("history", help="folder of step_* checkpoints of one run")
    ap.add_argument("--output-dir", default="docs/analysis")
    ap.add_argument("--batches", type=int, default=4, help="fixed validation batches to analyse")
    args = ap.parse_args(argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    steps = list_step_checkpoints(args.history)
    if not steps:
        raise SystemExit(f"no step_* checkpoints in {args.history}")
    last = load_checkpoint(steps[-1])
    cfg = last.config
    _, _, valid = prepare_data(cfg, last.tokenizer, log=lambda *a: None)
    batches = valid[:args.batches]
    init = MiniBERT(cfg.model, seed=cfg.training.seed)
    models = [(0, init)] + [(int(p.name.split("_")[1]), load_checkpoint(p).model) for p in steps]

    summary: dict = {"steps": [s for s, _ in models]}
    entropy_history, patterns, lens = [], {}, {}
    for step, model in models:
        _, cache = model.encode(batches[0].input_ids, batches[0].attention_mask)
        ent = M.compute_attention_entropy(cache["attention_weights"], batches[0].attention_mask)   # (L, H)
        entropy_history.append({"step": step, **{f"attention_entropy/layer_{l}": float(row.mean())
                                                  for l, row in enumerate(ent)}})
        summary.setdefault("attention_entropy", {})[step] = ent
        patterns[step] = head_patterns(cache["attention_weights"], batches[0].input_ids,
                                       batches[0].attention_mask)
        lens[step] = logit_lens(model, batches)
        print(f"step {step}: entropy per layer {np.round(ent.mean(1), 3).tolist()}, "
              f"logit-lens accuracy per layer {np.round(lens[step], 4).tolist()}")
    summary["head_patterns"] = patterns
    summary["logit_lens_accuracy"] = lens
    T_real = float(batches[0].attention_mask.sum(1).mean())
    summary["uniform_entropy"] = float(np.log(T_real))
    V.plot_attention_entropy(entropy_history, out / "attention_entropy_over_training",
                             title="Mean attention entropy per layer during pretraining")

    final = models[-1][1]
    _, cache = final.encode(batches[0].input_ids, batches[0].attention_mask)
    sim = M.compute_layer_similarity(cache["hidden_states"], batches[0].attention_mask)
    summary["layer_cka"] = sim["cka"]
    V.plot_layer_similarity(sim["cka"], out / "layer_similarity",
                            labels=["emb"] + [f"L{l}" for l in range(cfg.model.num_layers)],
                            title="Linear CKA between layers (final checkpoint)")
    n = min(24, int(batches[0].attention_mask[0].sum()))
    tokens = last.tokenizer.convert_ids_to_tokens(batches[0].input_ids[0, :n].tolist())
    att = np.stack([a[0, :, :n, :n] for a in cache["attention_weights"]])
    V.plot_attention_heatmap(att, tokens, out / "attention_final",
                             title=f"Attention after {models[-1][0]} steps (first {n} tokens of a validation row)")

    post_init = MiniBERT(cfg.model.model_copy(update={"norm_position": "post"}), seed=cfg.training.seed)
    flows = {"pre-LN, init": gradient_flow(init, batches), f"pre-LN, step {models[-1][0]}": gradient_flow(final, batches),
             "post-LN, init": gradient_flow(post_init, batches)}
    summary["gradient_flow"] = {k: v["grad_norm"] for k, v in flows.items()}
    for name, stats in flows.items():
        slug = name.replace(", ", "_").replace(" ", "_").replace("-", "")
        V.plot_gradient_flow(stats, out / f"gradient_flow_{slug}", title=f"Gradient norm per group: {name}")
    (out / "summary.json").write_text(json.dumps(to_jsonable(summary), indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
