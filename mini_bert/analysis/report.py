"""`minibert analyze`: look inside a trained checkpoint and write figures, their numbers and a Markdown summary.

    minibert analyze --checkpoint runs/tiny [--text "The cat sat on the mat."]
                     [--what attention,gradients,weights,landscape,lr-finder,representations|all] [--output-dir D]

--checkpoint is a checkpoint folder or a run folder (its latest step_* checkpoint). For `weights`, every step_*
checkpoint of the run is read. Each analysis writes <name>.png and <name>.json (the plotted numbers) into the
output folder (default <checkpoint>/analysis), and summary.md ties them together.

`run_analysis(model, tokenizer, text, what, output_dir, checkpoints)` does the work and can be called directly.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import MiniBertError
from ..config import CLS_ID, SEP_ID
from . import dynamics as AD
from . import inspection as AI
from . import landscape as AL
from ..evaluation import metrics as M
from . import figures as V
from .figures import to_jsonable

ANALYSES = ("attention", "gradients", "weights", "landscape", "lr-finder", "representations")
DEFAULT_TEXT = "The quick brown fox jumps over the lazy dog because it wants to see the river."


def parse_what(what: str) -> list[str]:
    """"attention,gradients" or "all" -> the list of analyses; unknown names raise ValueError."""
    names = [w.strip() for w in what.split(",") if w.strip()]
    if not names:
        raise MiniBertError(f"--what is empty; choose from {', '.join(ANALYSES)} or all")
    if "all" in names:
        return list(ANALYSES)
    unknown = [n for n in names if n not in ANALYSES]
    if unknown:
        raise MiniBertError(f"unknown analysis {', '.join(unknown)}; choose from {', '.join(ANALYSES)} or all")
    return names


def encode_text(tokenizer, text: str, max_len: int, truncate: bool = True) -> tuple[np.ndarray, list[str]]:
    """[CLS] text [SEP] as ids (1, T) and the token strings: cut to max_len, or with truncate=False a MiniBertError
    when the text does not fit (a tool that shows every token should not drop some silently)."""
    ids = tokenizer.encode(text)
    ids = list(getattr(ids, "ids", ids))
    if not ids:
        raise MiniBertError(f"the text {text!r} produced no tokens; give it some words")
    if not truncate and len(ids) + 2 > max_len:
        raise MiniBertError(f"the text has {len(ids)} tokens, but this model reads at most {max_len - 2} "
                            f"(plus [CLS] and [SEP]); shorten it")
    ids = [CLS_ID] + ids[:max_len - 2] + [SEP_ID]
    return np.asarray([ids], dtype=np.int64), list(tokenizer.convert_ids_to_tokens(ids))


MLM_BATCH_COPIES = 8      # the text repeated this many times, each with its own masking, for the loss-based tools


def _mlm_batch(ids: np.ndarray, vocab_size: int, copies: int = MLM_BATCH_COPIES, seed: int = 0) -> dict:
    """The text repeated `copies` times with different BERT maskings: a small fixed batch for loss-based tools."""
    from ..data.masking import mask_tokens

    batch = np.repeat(ids, copies, axis=0)
    inp, tgt, pos = mask_tokens(batch, vocab_size, rng=np.random.default_rng(seed))
    return {"input_ids": inp, "target_ids": tgt, "mask_positions": pos, "attention_mask": None,
            "token_type_ids": None}


def _fmt(x, digits=4):
    return f"{x:.{digits}g}" if isinstance(x, (float, np.floating)) else str(x)


def run_analysis(model, tokenizer, text: str, what: list[str], output_dir, checkpoints: list | None = None,
                 seed: int = 0) -> Path:
    """Run the chosen analyses on `model` and `text`, write figures + JSON into output_dir, return summary.md.

    checkpoints: for "weights", a list of (step, state_dict) oldest first (fewer than 2: the section says so).
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    ids, tokens = encode_text(tokenizer, text, cfg.max_position_embeddings)
    lines = ["# Mini-BERT analysis", "", f"Text: `{text}`", "",
             f"Tokens ({len(tokens)}): " + " ".join(f"`{t}`" for t in tokens), "",
             f"Model: {cfg.num_layers} layers, hidden {cfg.hidden_size}, {cfg.num_heads} heads, "
             f"vocab {cfg.vocab_size}, {model.num_parameters:,} parameters", ""]
    numbers: dict = {}

    def figure(title, paths, notes):
        lines.extend([f"## {title}", "", f"![{title}]({paths.png.name})  (numbers: `{paths.json.name}`)", ""])
        lines.extend(notes)
        lines.append("")

    _, cache = model.encode(ids)
    if "attention" in what:
        att = np.stack([a[0] for a in cache["attention_weights"]])             # (L, H, T, T)
        ent = M.compute_attention_entropy(cache["attention_weights"])          # (L, H)
        p = V.plot_attention_heatmap(att, tokens, out / "attention", title="Attention weights per layer and head")
        numbers["attention_entropy"] = ent
        uniform = np.log(len(tokens))
        notes = [f"Mean entropy per head (nats; uniform over {len(tokens)} tokens = {uniform:.3f}, one-hot = 0):", ""]
        notes += [f"- layer {l}: " + ", ".join(f"{e:.3f}" for e in row) for l, row in enumerate(ent)]
        figure("Attention", p, notes)

    batch = _mlm_batch(ids, cfg.vocab_size, seed=seed)
    if "gradients" in what:
        loss, grads, _ = AI.mlm_loss_and_gradients(model, batch)
        stats = AD.analyze_gradient_magnitudes_by_layer(grads, model)
        p = V.plot_gradient_flow(stats, out / "gradient_flow", title=f"Gradient flow (MLM loss {loss:.3f})")
        numbers["gradients"] = {k: stats[k] for k in ("groups", "grad_norm", "grad_to_weight", "vanishing",
                                                      "exploding")}
        notes = ["| group | grad norm (weights) | grad / weight |", "|---|---|---|"]
        notes += [f"| {g} | {_fmt(stats['grad_norm'][g])} | {_fmt(stats['grad_to_weight'][g])} |"
                  for g in stats["groups"]]
        if stats["vanishing"] or stats["exploding"]:
            notes += ["", f"Vanishing: {stats['vanishing'] or 'none'}; exploding: {stats['exploding'] or 'none'}."]
        figure("Gradient flow", p, notes)

    if "weights" in what:
        if checkpoints and len(checkpoints) >= 2:
            steps = [s for s, _ in checkpoints]
            evo = AD.analyze_weight_evolution([st for _, st in checkpoints], steps)
            p = V.plot_weight_evolution(evo, out / "weight_evolution")
            numbers["weight_evolution"] = {g: {"relative_distance": v["relative_distance"]}
                                           for g, v in evo["groups"].items()}
            notes = [f"{len(steps)} checkpoints, steps {steps[0]} to {steps[-1]}. Relative distance from the first "
                     "checkpoint at the last one:", ""]
            notes += [f"- {g}: {v['relative_distance'][-1]:.4f}" for g, v in evo["groups"].items()]
            figure("Weight evolution", p, notes)
        else:
            lines.extend(["## Weight evolution", "", "Needs at least two step_* checkpoints in the run folder; "
                          f"found {len(checkpoints or [])}.", ""])

    if "landscape" in what:
        curve = AL.analyze_loss_landscape(model, batch, directions=1, span=1.0, resolution=21,
                                         rng=np.random.default_rng(seed))
        plane = AL.analyze_loss_landscape(model, batch, directions=2, span=1.0, resolution=11,
                                         rng=np.random.default_rng(seed + 1))
        p1 = V.plot_loss_landscape(curve, out / "loss_landscape_1d")
        p2 = V.plot_loss_landscape(plane, out / "loss_landscape_2d")
        numbers["landscape"] = {"origin_loss": curve["origin_loss"], "sharpness_1d": curve["sharpness"],
                                "sharpness_2d": plane["sharpness"]}
        notes = [f"Loss at the current weights {curve['origin_loss']:.4f}; mean rise at distance 1 along "
                 f"filter-normalised directions: {curve['sharpness']:.4f} (1-D), {plane['sharpness']:.4f} (2-D). "
                 "A flat basin (small rise) tends to generalise better than a sharp one (Li et al. 2018)."]
        figure("Loss landscape (1-D)", p1, notes)
        figure("Loss landscape (2-D)", p2, [])

    if "lr-finder" in what:
        res = AL.analyze_learning_rate_sensitivity(model, batch, lr_range=(1e-6, 1.0), num_steps=40)
        p = V.plot_lr_finder(res, out / "lr_finder")
        numbers["lr_finder"] = {k: res[k] for k in ("suggested_lr", "lr_min_loss", "lr_diverged")}
        notes = [f"AdamW, one step per rate on a fixed batch (a copy of the model). Suggested learning rate "
                 f"{res['suggested_lr']:.3g} (steepest descent); lowest loss at {res['lr_min_loss']:.3g}; "
                 + (f"diverged from {res['lr_diverged']:.3g}." if res["lr_diverged"] else "no divergence in range.")]
        figure("LR range test", p, notes)

    if "representations" in what:
        sim = M.compute_layer_similarity(cache["hidden_states"])
        p = V.plot_layer_similarity(sim["cka"], out / "layer_similarity", title="Linear CKA between layers")
        rows = []
        for l, h in enumerate(cache["hidden_states"]):
            geo = M.compute_representation_geometry(h)
            dim = M.compute_effective_dimensionality(h)
            rows.append({"layer": l, "anisotropy": geo["anisotropy"], "isotropy": geo["isotropy"],
                         "participation_ratio": dim["participation_ratio"], "n_components_90": dim["n_components"],
                         "effective_rank": M.compute_effective_rank(token_matrix(h))})
        stab = M.measure_representation_stability(model, ids, perturbation="substitution",
                                                  rng=np.random.default_rng(seed))
        numbers["representations"] = {"cka": sim["cka"], "cosine": sim["cosine"], "per_layer": rows,
                                      "substitution_drift": stab["relative_drift"]}
        notes = ["| layer | anisotropy | isotropy | participation ratio | PCs for 90% | effective rank | drift |",
                 "|---|---|---|---|---|---|---|"]
        notes += [f"| {'emb' if r['layer'] == 0 else r['layer'] - 1} | {r['anisotropy']:.3f} | {r['isotropy']:.3g} | "
                  f"{r['participation_ratio']:.2f} | {r['n_components_90']} | {r['effective_rank']:.2f} | "
                  f"{d:.3f} |" for r, d in zip(rows, stab["relative_drift"])]
        notes += ["", "Drift: mean relative change of the unchanged tokens' vectors when 15% of the tokens are "
                  "replaced at random."]
        figure("Representations", p, notes)

    (out / "summary.json").write_text(json.dumps(to_jsonable(numbers), indent=1, allow_nan=False))
    summary = out / "summary.md"
    summary.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return summary


def token_matrix(h) -> np.ndarray:
    """(1, T, D) or (T, D) hidden states -> the centred (T, D) matrix whose effective rank is reported."""
    X = M.token_rows(h)
    return X - X.mean(axis=0)


def step_checkpoints(path: Path) -> list[tuple[int, dict]]:
    """(step, weights) of every step checkpoint of the run that `path` (a run folder or one checkpoint) belongs to."""
    from ..training.checkpointing import STEP_PREFIX, list_step_checkpoints, load_checkpoint, resolve_checkpoint_dir

    run_dir = path if list_step_checkpoints(path) else resolve_checkpoint_dir(path).parent
    out = []
    for p in list_step_checkpoints(run_dir):
        model = load_checkpoint(p, need_tokenizer=False).model
        out.append((int(p.name[len(STEP_PREFIX):]), model.state_dict()))
    return out


def default_output_dir(path: Path) -> Path:
    """RUN-analysis beside the run folder (RUN/best -> RUN-analysis/best): a run folder holds only what the trainer
    writes, so a later --resume, which replaces best/ and prunes step checkpoints, cannot delete an analysis."""
    from ..training.checkpointing import list_step_checkpoints, resolve_checkpoint_dir

    path = Path(path)
    if list_step_checkpoints(path):
        return path.parent / f"{path.name}-analysis"
    ckpt = resolve_checkpoint_dir(path)
    return ckpt.parent.parent / f"{ckpt.parent.name}-analysis" / ckpt.name
