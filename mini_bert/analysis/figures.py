"""Figures for the analysis tools, drawn headless (matplotlib's Agg canvas, no pyplot and no display needed).

Every function writes a PNG and, beside it with the same stem, a JSON of exactly the numbers it plotted, and
returns `FigurePaths(png, json)`. The JSON lets a report, a test or another tool reuse the numbers without
re-running the analysis. Figures have a fixed pixel size: figsize (inches) x dpi, no tight cropping.

    plot_attention_heatmap        one head (T, T), or the layer x head grid (L, H, T, T), tokens on both axes
    plot_gradient_flow            gradient norm per group, embeddings -> head (log scale)
    plot_weight_evolution         distance from init and relative update per group over checkpoints
    plot_loss_landscape           1-D curve or 2-D contour along filter-normalised directions
    plot_lr_finder                loss against learning rate (log) with the suggested rate
    plot_layer_similarity         a layer x layer similarity matrix (CKA or cosine)
    plot_attention_entropy        attention entropy per layer over training steps
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


class FigurePaths(NamedTuple):
    png: Path
    json: Path


def to_jsonable(x):
    """numpy arrays and scalars -> lists and Python numbers; NaN and inf -> None (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, Path):
        return str(x)
    return x


def _new_figure(figsize, dpi):
    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path, data: dict) -> FigurePaths:
    png = Path(path).with_suffix(".png")
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=fig.dpi)                     # no bbox_inches="tight": the pixel size stays figsize x dpi
    js = png.with_suffix(".json")
    js.write_text(json.dumps(to_jsonable(data), indent=1, allow_nan=False))
    return FigurePaths(png, js)


def plot_attention_heatmap(attention, tokens: list[str], path, title: str | None = None,
                           figsize: tuple[float, float] | None = None, dpi: int = 100) -> FigurePaths:
    """Attention weights A[i, j] = softmax(Q_i K_j^T / sqrt d): row i (query) attends to column j (key).

    attention: (T, T) for one head, (H, T, T) for the heads of one layer, or (L, H, T, T) for a layer x head grid
    (e.g. `np.stack(cache["attention_weights"])[:, 0]` for the first sequence). tokens: T labels.
    JSON: {"tokens", "attention" (as given), "shape"}.
    """
    A = np.asarray(attention, dtype=np.float64)
    if A.ndim == 2:
        A4 = A[None, None]
    elif A.ndim == 3:
        A4 = A[None]
    elif A.ndim == 4:
        A4 = A
    else:
        raise ValueError(f"attention must be (T, T), (H, T, T) or (L, H, T, T); got shape {A.shape}")
    L, H, T, T2 = A4.shape
    if T != T2 or len(tokens) != T:
        raise ValueError(f"attention is {T}x{T2} but there are {len(tokens)} tokens; they must agree")
    if figsize is None:
        cell = max(2.0, 0.3 * T + 1.0)
        figsize = (cell * H, cell * L)
    fig = _new_figure(figsize, dpi)
    axes = fig.subplots(L, H, squeeze=False)
    show_labels = T <= 40
    for layer in range(L):
        for head in range(H):
            ax = axes[layer, head]
            im = ax.imshow(A4[layer, head], vmin=0.0, vmax=1.0, cmap="viridis", aspect="equal")
            if show_labels:
                ax.set_xticks(range(T), tokens, rotation=90, fontsize=6)
                ax.set_yticks(range(T), tokens, fontsize=6)
            else:
                ax.set_xticks([]), ax.set_yticks([])
            if L * H > 1:
                ax.set_title(f"layer {layer} head {head}", fontsize=7)
    fig.colorbar(im, ax=axes, shrink=0.6, label="attention weight")
    fig.suptitle(title or "Attention: rows = queries, columns = keys", fontsize=9)
    return _save(fig, path, {"tokens": list(tokens), "attention": A, "shape": list(A.shape)})


def plot_gradient_flow(grad_stats: dict, path, title: str | None = None,
                       figsize: tuple[float, float] = (7.0, 4.0), dpi: int = 100) -> FigurePaths:
    """Gradient norm per parameter group from the embeddings (left) to the head (right), log scale.

    grad_stats: `analyze_gradient_magnitudes_by_layer(...)` (uses "groups", "grad_norm", "grad_norm_all") or a
    plain dict group -> norm. Vanishing gradients show as a bar orders of magnitude below its neighbours.
    JSON: {"groups", "grad_norm", "grad_norm_all" (if given)}.
    """
    if "grad_norm" in grad_stats and isinstance(grad_stats["grad_norm"], dict):
        groups = list(grad_stats.get("groups", grad_stats["grad_norm"]))
        norms = [grad_stats["grad_norm"][g] for g in groups]
        all_norms = [grad_stats["grad_norm_all"][g] for g in groups] if "grad_norm_all" in grad_stats else None
    else:
        groups, norms, all_norms = list(grad_stats), [float(v) for v in grad_stats.values()], None
    fig = _new_figure(figsize, dpi)
    ax = fig.subplots()
    x = np.arange(len(groups))
    floor = 1e-12                                     # log axis: show exact zeros at the floor
    ax.bar(x - 0.2 if all_norms else x, np.maximum(norms, floor), width=0.4 if all_norms else 0.6,
           label="weight matrices")
    if all_norms:
        ax.bar(x + 0.2, np.maximum(all_norms, floor), width=0.4, label="all parameters", alpha=0.7)
        ax.legend(fontsize=8)
    ax.set_yscale("log")
    ax.set_xticks(x, groups, rotation=30, fontsize=8)
    ax.set_ylabel("gradient L2 norm")
    ax.set_title(title or "Gradient flow (input side left, output side right)", fontsize=9)
    fig.subplots_adjust(bottom=0.22)
    data = {"groups": groups, "grad_norm": norms}
    if all_norms:
        data["grad_norm_all"] = all_norms
    return _save(fig, path, data)


def plot_weight_evolution(evolution: dict, path, title: str | None = None,
                          figsize: tuple[float, float] = (10.0, 4.0), dpi: int = 100) -> FigurePaths:
    """Per group: relative distance from the first checkpoint, and the relative update between checkpoints.

    evolution: `analyze_weight_evolution(...)`. JSON: {"steps", "relative_distance": {group: [...]},
    "relative_update": {group: [...]} (aligned with steps[1:])}.
    """
    steps = list(evolution["steps"])
    groups = evolution["groups"]
    fig = _new_figure(figsize, dpi)
    ax1, ax2 = fig.subplots(1, 2)
    dist = {g: np.asarray(v["relative_distance"]) for g, v in groups.items()}
    upd = {g: np.asarray(v["relative_update"]) for g, v in groups.items()}
    for g in groups:
        ax1.plot(steps, dist[g], marker="o", ms=3, label=g)
        if len(steps) > 1:
            ax2.plot(steps[1:], upd[g], marker="o", ms=3, label=g)
    ax1.set_xlabel("step"), ax1.set_ylabel("|W_t - W_0| / |W_0|"), ax1.set_title("distance from the start", fontsize=9)
    ax2.set_xlabel("step"), ax2.set_ylabel("|W_t - W_t-1| / |W_t-1|"), ax2.set_title("update between checkpoints",
                                                                                   fontsize=9)
    if len(steps) > 1 and np.all(np.concatenate([u[np.isfinite(u)] for u in upd.values()] + [np.ones(1)]) > 0):
        ax2.set_yscale("log")
    ax1.legend(fontsize=7)
    fig.suptitle(title or "Weight evolution", fontsize=10)
    return _save(fig, path, {"steps": steps, "relative_distance": dist, "relative_update": upd})


def plot_loss_landscape(landscape: dict, path, title: str | None = None,
                        figsize: tuple[float, float] = (6.0, 5.0), dpi: int = 100) -> FigurePaths:
    """The loss along one direction (a curve) or over a plane (filled contours), origin = the current weights.

    landscape: `analyze_loss_landscape(...)`. JSON: {"alphas", "betas" (2-D only), "losses", "origin_loss"}.
    """
    alphas = np.asarray(landscape["alphas"])
    losses = np.asarray(landscape["losses"])
    fig = _new_figure(figsize, dpi)
    ax = fig.subplots()
    data = {"alphas": alphas, "losses": losses, "origin_loss": landscape["origin_loss"],
            "param_names": landscape.get("param_names")}
    if losses.ndim == 1:
        ax.plot(alphas, losses, marker="o", ms=3)
        ax.axvline(0.0, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("step along a filter-normalised direction"), ax.set_ylabel("MLM loss")
    else:
        betas = np.asarray(landscape["betas"])
        cs = ax.contourf(alphas, betas, losses.T, levels=20, cmap="viridis")   # losses are indexed [alpha, beta]
        ax.contour(alphas, betas, losses.T, levels=20, colors="k", linewidths=0.3)
        fig.colorbar(cs, ax=ax, label="MLM loss")
        ax.plot([0], [0], "r*", ms=10)
        ax.set_xlabel("direction 1"), ax.set_ylabel("direction 2")
        data["betas"] = betas
    ax.set_title(title or f"Loss landscape (origin loss {landscape['origin_loss']:.4f})", fontsize=9)
    return _save(fig, path, data)


def plot_lr_finder(result: dict, path, title: str | None = None,
                   figsize: tuple[float, float] = (6.0, 4.0), dpi: int = 100) -> FigurePaths:
    """Loss against learning rate (log axis) from the LR range test, with the suggested rate marked.

    result: `lr_range_test(...)` / `analyze_learning_rate_sensitivity(...)`. JSON: {"lrs", "losses", "smoothed",
    "suggested_lr", "lr_min_loss", "lr_diverged"}.
    """
    lrs, losses, sm = (np.asarray(result[k]) for k in ("lrs", "losses", "smoothed"))
    fig = _new_figure(figsize, dpi)
    ax = fig.subplots()
    ax.plot(lrs, losses, lw=0.8, alpha=0.5, label="loss")
    ax.plot(lrs, sm, lw=1.5, label="smoothed")
    ax.axvline(result["suggested_lr"], color="red", ls="--", label=f"suggested {result['suggested_lr']:.2g}")
    if result.get("lr_diverged"):
        ax.axvline(result["lr_diverged"], color="black", ls=":", label=f"diverged {result['lr_diverged']:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate"), ax.set_ylabel("loss")
    ax.legend(fontsize=8)
    ax.set_title(title or "LR range test", fontsize=9)
    return _save(fig, path, {k: result.get(k) for k in
                             ("lrs", "losses", "smoothed", "suggested_lr", "lr_min_loss", "lr_diverged")})


def plot_layer_similarity(matrix, path, labels: list[str] | None = None, title: str | None = None,
                          figsize: tuple[float, float] = (5.0, 4.5), dpi: int = 100) -> FigurePaths:
    """A symmetric layer x layer similarity matrix (e.g. `compute_layer_similarity(...)["cka"]`), annotated.

    JSON: {"labels", "matrix"}.
    """
    M = np.asarray(matrix, dtype=np.float64)
    if M.ndim != 2 or M.shape[0] != M.shape[1]:
        raise ValueError(f"matrix must be square; got shape {M.shape}")
    n = M.shape[0]
    labels = labels or (["emb"] + [f"L{i}" for i in range(n - 1)])
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for a {n}x{n} matrix")
    fig = _new_figure(figsize, dpi)
    ax = fig.subplots()
    im = ax.imshow(M, vmin=min(0.0, float(np.nanmin(M))), vmax=1.0, cmap="magma")
    for i in range(n):
        for j in range(n):
            if np.isfinite(M[i, j]):
                ax.text(j, i, f"{M[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if M[i, j] < 0.6 else "black")
    ax.set_xticks(range(n), labels), ax.set_yticks(range(n), labels)
    fig.colorbar(im, ax=ax)
    ax.set_title(title or "Layer similarity", fontsize=9)
    return _save(fig, path, {"labels": labels, "matrix": M})


def plot_attention_entropy(history: list[dict], path, title: str | None = None,
                           figsize: tuple[float, float] = (6.0, 4.0), dpi: int = 100) -> FigurePaths:
    """Mean attention entropy of each layer over training, from a log with "attention_entropy/layer_<l>" keys
    (what `TrainingMonitor` records). Falling entropy = heads becoming focused.

    JSON: {"steps": {layer: [...]}, "entropy": {layer: [...]}}.
    """
    prefix = "attention_entropy/"
    layers = sorted({k[len(prefix):] for e in history for k in e if k.startswith(prefix)},
                    key=lambda s: int(s.split("_")[-1]) if s.split("_")[-1].isdigit() else 0)
    if not layers:
        raise ValueError("no 'attention_entropy/layer_<l>' entries in the history; log with TrainingMonitor")
    steps, ent = {}, {}
    fig = _new_figure(figsize, dpi)
    ax = fig.subplots()
    for layer in layers:
        pts = [(e["step"], e[prefix + layer]) for e in history if prefix + layer in e]
        steps[layer] = [p[0] for p in pts]
        ent[layer] = [p[1] for p in pts]
        ax.plot(steps[layer], ent[layer], marker="o", ms=3, label=layer)
    ax.set_xlabel("step"), ax.set_ylabel("mean attention entropy (nats)")
    ax.legend(fontsize=8)
    ax.set_title(title or "Attention entropy over training", fontsize=9)
    return _save(fig, path, {"steps": steps, "entropy": ent})
