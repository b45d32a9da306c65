"""RepresentationAnalyzer: what the token vectors of each layer look like, and how two checkpoints differ.

    from mini_bert.analysis.representations import RepresentationAnalyzer
    ra = RepresentationAnalyzer(model, tokenizer)
    ra.layer_geometry(texts)             # per layer: anisotropy, isotropy, norms, diversity, effective rank ...
    ra.effective_dimensionality(texts)   # per layer: participation ratio, PCs for 90% of the variance
    ra.layer_similarity(texts)           # linear CKA and cosine between every pair of layers
    ra.compare_with(other_model, texts)  # CKA between this model's layers and another checkpoint's, same texts
    ra.report(texts, "out/", other_model) # all of it as figures + JSON + summary.md

Every number comes from `evaluation.metrics` (this module only batches the texts and arranges the results).
Layers are numbered as in `cache["hidden_states"]`: 0 = the embedding output, l + 1 = encoder layer l's output
(for a pre-LN model the last one is after the final LayerNorm). Padding tokens never enter a statistic.

Shapes: B texts, T tokens (the longest text + [CLS] and [SEP]), D hidden, L layers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..config import PAD_ID
from ..evaluation import metrics as M
from . import figures as V
from .figures import to_jsonable
from .report import encode_text, token_matrix

DEFAULT_TEXTS = [
    "The cat sat on the mat because it was warm.",
    "Stock prices fell sharply after the company reported lower profits.",
    "She said that the new bridge would open next year.",
    "The committee will meet on Tuesday to discuss the budget.",
]


class RepresentationAnalyzer:
    """Per-layer representation statistics of `model` (a MiniBERT) on texts tokenised with `tokenizer`."""

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
        """[CLS] text [SEP] for each text, padded: ids (B, T), attention_mask (B, T), the token strings."""
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            raise ValueError("no texts given; pass a list of sentences")
        encoded = [encode_text(self.tokenizer, t, self.model.config.max_position_embeddings) for t in texts]
        T = max(ids.shape[1] for ids, _ in encoded)
        ids = np.full((len(texts), T), PAD_ID, dtype=np.int64)
        for b, (row, _) in enumerate(encoded):
            ids[b, :row.shape[1]] = row[0]
        return ids, (ids != PAD_ID).astype(np.int32), [tokens for _, tokens in encoded]

    def hidden_states(self, texts: list[str]) -> tuple[list[np.ndarray], np.ndarray]:
        """The L + 1 hidden states (B, T, D) of the texts (eval mode) and their attention mask (B, T)."""
        ids, mask, _ = self.encode(texts)
        _, cache = self.model.encode(ids, mask)
        return cache["hidden_states"], mask

    def layer_geometry(self, texts: list[str]) -> list[dict]:
        """Per layer: `compute_representation_geometry` (anisotropy, isotropy, norm_mean, norm_std,
        mean_vector_norm_ratio, top_pc_variance_ratio), token diversity, participation ratio, PCs for 90% of the
        variance and the effective rank of the centred token matrix."""
        states, mask = self.hidden_states(texts)
        rows = []
        for layer, h in enumerate(states):
            geo = M.compute_representation_geometry(h, mask)
            dim = M.compute_effective_dimensionality(h, mask)
            rows.append({"layer": layer, **{k: v for k, v in geo.items() if k != "n_tokens"},
                         "diversity": M.compute_token_diversity(h, mask)["diversity"],
                         "participation_ratio": dim["participation_ratio"], "n_components_90": dim["n_components"],
                         "effective_rank": M.compute_effective_rank(token_matrix(M.token_rows(h, mask))),
                         "n_tokens": geo["n_tokens"]})
        return rows

    def effective_dimensionality(self, texts: list[str], variance_threshold: float = 0.9) -> list[dict]:
        """Per layer: `compute_effective_dimensionality` (participation ratio, n_components, the explained
        variance ratio of each principal direction)."""
        states, mask = self.hidden_states(texts)
        return [{"layer": l, **M.compute_effective_dimensionality(h, mask, variance_threshold)}
                for l, h in enumerate(states)]

    def layer_similarity(self, texts: list[str]) -> dict:
        """`compute_layer_similarity` over the L + 1 hidden states: {"cka": (L+1, L+1), "cosine": (L+1, L+1)}."""
        states, mask = self.hidden_states(texts)
        return M.compute_layer_similarity(states, mask)

    def compare_with(self, other_model, texts: list[str]) -> dict:
        """Linear CKA between this model's layers (rows) and `other_model`'s (columns) on the same tokens — e.g.
        two checkpoints of one run (they share the tokenizer). The diagonal says how much each layer changed
        between them (1 = the same representation up to rotation and scale).

        Returns {"cka": (L1+1, L2+1), "cka_same_layer": diagonal (min(L1, L2) + 1,)}.
        """
        ids, mask, _ = self.encode(texts)
        mine = self.model.encode(ids, mask)[1]["hidden_states"]
        theirs = other_model.encode(ids, mask)[1]["hidden_states"]
        X = [M.token_rows(h, mask) for h in mine]
        Y = [M.token_rows(h, mask) for h in theirs]
        cka = np.array([[M.linear_cka(x, y) for y in Y] for x in X])
        return {"cka": cka, "cka_same_layer": np.diagonal(cka).copy()}

    def report(self, texts: list[str], output_dir, other_model=None, other_name: str = "other") -> Path:
        """layer_similarity.png, checkpoint_similarity.png (with other_model) and their JSON, plus
        representations.json and summary.md in output_dir. Returns summary.md's path."""
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        geometry = self.layer_geometry(texts)
        sim = self.layer_similarity(texts)
        V.plot_layer_similarity(sim["cka"], out / "layer_similarity", title="Linear CKA between layers")
        lines = ["# Representations", "", f"{len(texts)} texts, {geometry[0]['n_tokens']} tokens. Layer 0 = "
                 "embeddings. ![CKA between layers](layer_similarity.png)", "",
                 "| layer | anisotropy | isotropy | diversity | participation ratio | PCs for 90% | effective rank |",
                 "|---|---|---|---|---|---|---|"]
        lines += [f"| {g['layer']} | {g['anisotropy']:.3f} | {g['isotropy']:.3g} | {g['diversity']:.3f} | "
                  f"{g['participation_ratio']:.2f} | {g['n_components_90']} | {g['effective_rank']:.2f} |"
                  for g in geometry]
        numbers = {"texts": texts, "geometry": geometry, "layer_similarity": sim}
        if other_model is not None:
            cmp = self.compare_with(other_model, texts)
            m = cmp["cka"]
            V.plot_layer_similarity(m if m.shape[0] == m.shape[1] else _pad_square(m), out / "checkpoint_similarity",
                                    title=f"Linear CKA: this model (rows) vs {other_name} (columns)")
            numbers["compare_with"] = {"other": other_name, **cmp}
            lines += ["", f"## Compared with {other_name}", "", "CKA of each layer with the same layer of "
                      f"{other_name}: " + ", ".join(f"L{i} {v:.3f}" for i, v in enumerate(cmp["cka_same_layer"]))
                      + ". ![CKA between checkpoints](checkpoint_similarity.png)"]
        (out / "representations.json").write_text(json.dumps(to_jsonable(numbers), indent=1, allow_nan=False))
        summary = out / "summary.md"
        summary.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return summary


def _pad_square(m: np.ndarray) -> np.ndarray:
    """A rectangular matrix padded with NaN to a square one (models of different depths), for the heatmap."""
    n = max(m.shape)
    out = np.full((n, n), np.nan)
    out[:m.shape[0], :m.shape[1]] = m
    return out
