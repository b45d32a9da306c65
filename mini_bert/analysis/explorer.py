"""MathematicalExplorer: the notes' interactive tool, a thin layer over `evaluation.analysis` and `metrics`.

    from mini_bert.analysis.explorer import MathematicalExplorer
    ex = MathematicalExplorer(model, tokenizer)
    ex.explore_attention_heads("the cat sat on the mat")       # per head: entropy, where each token looks
    ex.step_through_forward_pass("the cat sat on the mat")     # every intermediate: name, shape, statistics
    ex.analyze_gradient_flow("the cat sat on the mat")         # gradient norms by layer for an MLM loss
    ex.compare_layer_representations("the cat sat on the mat") # CKA / cosine between layers, effective rank

Each method returns plain data (dicts / lists) and, with verbose=True, prints a short reading of it.
"""

from __future__ import annotations

import numpy as np

from ..core.model import describe_cache
from . import dynamics as AD
from . import inspection as AI
from ..evaluation import metrics as M
from .report import _mlm_batch, encode_text


class MathematicalExplorer:
    """Explore what `model` (a MiniBERT) computes on a text, tokenised with `tokenizer`."""

    def __init__(self, model, tokenizer, verbose: bool = False):
        self.model = model
        self.tokenizer = tokenizer
        self.verbose = verbose
        self.analyzer = AI.MathematicalAnalyzer(model)

    def _encode(self, text):
        ids, tokens = encode_text(self.tokenizer, text, self.model.config.max_position_embeddings)
        _, cache = self.model.encode(ids)
        return ids, tokens, cache

    def explore_attention_heads(self, text: str) -> list[dict]:
        """Per layer and head: mean entropy (nats) and, for each token, the token it attends to most."""
        _, tokens, cache = self._encode(text)
        ent = M.compute_attention_entropy(cache["attention_weights"])              # (L, H)
        heads = []
        for layer, A_l in enumerate(cache["attention_weights"]):
            for head in range(A_l.shape[1]):
                W = A_l[0, head]                                                   # (T, T)
                top = W.argmax(axis=-1)
                heads.append({"layer": layer, "head": head, "entropy": float(ent[layer, head]),
                              "attends_to": [(tokens[i], tokens[j], float(W[i, j])) for i, j in enumerate(top)]})
        if self.verbose:
            for h in heads:
                pairs = ", ".join(f"{a}->{b}" for a, b, _ in h["attends_to"][:6])
                print(f"layer {h['layer']} head {h['head']}: entropy {h['entropy']:.3f}  {pairs} ...")
        return heads

    def step_through_forward_pass(self, text: str) -> list[dict]:
        """Every intermediate of the forward cache in order: dotted name, shape, mean/std/min/max."""
        _, _, cache = self._encode(text)
        steps = []
        for name, shape in describe_cache(cache).items():
            value = _lookup(cache, name)
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                steps.append({"name": name, "shape": shape, **AI._stats(value)})
        if self.verbose:
            for s in steps:
                print(f"{s['name']:<40} {str(s['shape']):<18} mean {s['mean']:+.4f} std {s['std']:.4f}")
        return steps

    def analyze_gradient_flow(self, text: str, seed: int = 0) -> dict:
        """Gradient norms by layer for the MLM loss of the text repeated with different maskings."""
        ids, _, _ = self._encode(text)
        batch = _mlm_batch(ids, self.model.config.vocab_size, seed=seed)
        loss, grads, _ = AI.mlm_loss_and_gradients(self.model, batch)
        stats = AD.analyze_gradient_magnitudes_by_layer(grads, self.model)
        stats["loss"] = loss
        if self.verbose:
            print(f"MLM loss {loss:.4f}")
            for g in stats["groups"]:
                print(f"  {g:<12} grad norm {stats['grad_norm'][g]:.3e}   grad/weight {stats['grad_to_weight'][g]:.3e}")
        return stats

    def compare_layer_representations(self, text: str) -> dict:
        """Linear CKA and mean cosine between layers (embeddings first), and each layer's effective rank."""
        _, _, cache = self._encode(text)
        sim = M.compute_layer_similarity(cache["hidden_states"])
        ranks = []
        for h in cache["hidden_states"]:
            X = M.token_rows(h)
            ranks.append(M.compute_effective_rank(X - X.mean(axis=0)))
        sim["effective_rank"] = ranks
        if self.verbose:
            print("linear CKA between layers (embeddings first):")
            print(np.array2string(sim["cka"], precision=3))
            print("effective rank per layer:", ", ".join(f"{r:.2f}" for r in ranks))
        return sim


def _lookup(cache, dotted: str):
    """cache["layers"][0]["attn"]["Q"] from "layers.0.attn.Q" (list indices and tuple members included)."""
    node = cache
    for part in dotted.split("."):
        node = node[int(part)] if isinstance(node, (list, tuple)) else node[part]
    return node
