"""MathematicalExplorer: the notes' interactive tool, a thin layer over `evaluation.analysis` and `metrics`.

    from mini_bert.analysis.explorer import MathematicalExplorer
    ex = MathematicalExplorer(model, tokenizer)
    ex.explore_attention_heads("the cat sat on the mat")       # per head: entropy, where each token looks
    ex.step_through_forward_pass("the cat sat on the mat")     # every intermediate: name, shape, statistics
    ex.analyze_gradient_flow("the cat sat on the mat")         # gradient norms by layer for an MLM loss
    ex.compare_layer_representations("the cat sat on the mat") # CKA / cosine between layers, effective rank
    ex.predict_masked("the cat sat on the mat", masked=[2])   # top-k guesses where token 2 ("cat") is [MASK]
    ex.logit_lens("the cat sat on the mat", masked=[2])       # what each layer would predict at every position

Every method takes `masked`: positions of the encoded text ([CLS] is 0) to replace by [MASK] before the forward
pass (a "[MASK]" written in the text works too). Each returns plain data (dicts / lists) and, with verbose=True,
prints a short reading of it. `minibert explore` serves these methods as JSON to a page in the browser.
"""

from __future__ import annotations

import numpy as np

from ..config import MASK_ID
from ..core.layers import layer_norm_forward
from ..core.math_ops import softmax_forward
from ..core.model import describe_cache
from ..errors import MiniBertError
from . import dynamics as AD
from . import inspection as AI
from ..evaluation import metrics as M
from .report import _mlm_batch, encode_text


class MathematicalExplorer:
    """Explore what `model` (a MiniBERT) computes on a text, tokenised with `tokenizer`.

    truncate: cut a text longer than the model's positions (the default), or refuse it with a MiniBertError
    (for a page that shows every token)."""

    def __init__(self, model, tokenizer, verbose: bool = False, truncate: bool = True):
        self.model = model
        self.tokenizer = tokenizer
        self.verbose = verbose
        self.truncate = truncate
        self.analyzer = AI.MathematicalAnalyzer(model)
        self._last = None          # (text, masked) -> (ids, tokens, cache) of the latest forward pass

    def _encode(self, text, masked=()):
        """ids (1, T), token strings and the forward cache of `text` with the `masked` positions set to [MASK].
        The latest result is kept, so several methods asked about one text share one forward pass."""
        key = (text, tuple(int(m) for m in masked))
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        ids, tokens = self._ids(text, key[1])
        _, cache = self.model.encode(ids)
        self._last = (key, (ids, tokens, cache))
        return ids, tokens, cache

    def _ids(self, text, masked=()):
        """ids (1, T) and token strings of `text`, the `masked` positions set to [MASK] (no forward pass)."""
        ids, _ = encode_text(self.tokenizer, text, self.model.config.max_position_embeddings, self.truncate)
        T = ids.shape[1]
        for m in masked:
            if not 0 < int(m) < T - 1:
                raise MiniBertError(f"cannot mask position {m}: the text has tokens 1..{T - 2} between [CLS] (0) "
                                    f"and [SEP] ({T - 1})")
            ids[0, int(m)] = MASK_ID
        return ids, list(self.tokenizer.convert_ids_to_tokens(ids[0]))

    def tokens(self, text: str, masked=()) -> list[str]:
        """The token strings the model reads: [CLS], the text's subwords (masked ones as [MASK]), [SEP]."""
        return self._ids(text, masked)[1]

    def explore_attention_heads(self, text: str, masked=()) -> list[dict]:
        """Per layer and head: mean entropy (nats), the weights (T, T) (row i: how query token i spreads its
        attention over the keys) and, for each token, the token it attends to most."""
        _, tokens, cache = self._encode(text, masked)
        ent = M.compute_attention_entropy(cache["attention_weights"])              # (L, H)
        heads = []
        for layer, A_l in enumerate(cache["attention_weights"]):
            for head in range(A_l.shape[1]):
                W = A_l[0, head]                                                   # (T, T)
                top = W.argmax(axis=-1)
                heads.append({"layer": layer, "head": head, "entropy": float(ent[layer, head]), "weights": W,
                              "attends_to": [(tokens[i], tokens[j], float(W[i, j])) for i, j in enumerate(top)]})
        if self.verbose:
            for h in heads:
                pairs = ", ".join(f"{a}->{b}" for a, b, _ in h["attends_to"][:6])
                print(f"layer {h['layer']} head {h['head']}: entropy {h['entropy']:.3f}  {pairs} ...")
        return heads

    def step_through_forward_pass(self, text: str, masked=()) -> list[dict]:
        """Every intermediate of the forward cache in order: dotted name, shape, mean/std/min/max."""
        _, _, cache = self._encode(text, masked)
        steps = []
        for name, shape in describe_cache(cache).items():
            value = _lookup(cache, name)
            if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                steps.append({"name": name, "shape": shape, **AI._stats(value)})
        if self.verbose:
            for s in steps:
                print(f"{s['name']:<40} {str(s['shape']):<18} mean {s['mean']:+.4f} std {s['std']:.4f}")
        return steps

    def analyze_gradient_flow(self, text: str, seed: int = 0, masked=()) -> dict:
        """Gradient norms by layer for the MLM loss of the text repeated with different maskings."""
        ids, _, _ = self._encode(text, masked)
        batch = _mlm_batch(ids, self.model.config.vocab_size, seed=seed)
        loss, grads, _ = AI.mlm_loss_and_gradients(self.model, batch)
        stats = AD.analyze_gradient_magnitudes_by_layer(grads, self.model)
        stats["loss"] = loss
        if self.verbose:
            print(f"MLM loss {loss:.4f}")
            for g in stats["groups"]:
                print(f"  {g:<12} grad norm {stats['grad_norm'][g]:.3e}   grad/weight {stats['grad_to_weight'][g]:.3e}")
        return stats

    def compare_layer_representations(self, text: str, masked=()) -> dict:
        """Linear CKA and mean cosine between layers (embeddings first), and each layer's effective rank."""
        _, _, cache = self._encode(text, masked)
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

    def predict_masked(self, text: str, masked=(), top_k: int = 5) -> list[dict]:
        """At every [MASK] (the `masked` positions and any "[MASK]" in the text): the top_k tokens of the MLM head
        and their probabilities, softmax(logits). A list of {"position", "top": [(token, prob), ...]}."""
        ids, _, cache = self._encode(text, masked)
        where = np.flatnonzero(ids[0] == MASK_ID)
        if where.size == 0:
            return []
        h = cache["hidden_states"][-1][0, where]                                    # (N, D)
        probs = _softmax(self.model.mlm_head(h, {}))                               # (N, V)
        out = [{"position": int(t), "top": self._top(p, top_k)} for t, p in zip(where, probs)]
        if self.verbose:
            for o in out:
                print(f"[MASK] at {o['position']}: " + ", ".join(f"{w} {q:.3f}" for w, q in o["top"]))
        return out

    def logit_lens(self, text: str, masked=(), top_k: int = 5) -> dict:
        """What each layer would predict: the MLM head applied to every layer's hidden state, not only the last.

        Row 0 reads the embeddings, row l + 1 the output of encoder layer l (0-based, as the attention weights and
        the gradient groups count). A pre-LN model normalises only its last layer's output (ln_f) before the head,
        so the lens applies ln_f to every earlier row first; a post-LN model's rows are already normalised.
        Returns {"layers": ["embeddings", "layer 0", ...], "tokens", "top": [row][position] -> [(token, prob)]}.
        """
        _, tokens, cache = self._encode(text, masked)
        cfg, P = self.model.config, self.model.params
        hidden = cache["hidden_states"]
        top = []
        for l, h in enumerate(hidden):
            h = h[0]                                                                # (T, D)
            if cfg.norm_position == "pre" and l < len(hidden) - 1:
                h, _ = layer_norm_forward(h, P["ln_f_gamma"], P["ln_f_beta"], cfg.layer_norm_eps)
            probs = _softmax(self.model.mlm_head(h, {}))                           # (T, V)
            top.append([self._top(p, top_k) for p in probs])
        names = ["embeddings"] + [f"layer {l}" for l in range(len(hidden) - 1)]
        if self.verbose:
            for name, row in zip(names, top):
                print(f"{name:<11} " + " ".join(r[0][0] for r in row))
        return {"layers": names, "tokens": tokens, "top": top}

    def _top(self, probs: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The k most probable tokens of one distribution (V,), most probable first."""
        k = max(1, min(int(k), probs.size))
        idx = np.argpartition(-probs, k - 1)[:k]
        idx = idx[np.argsort(-probs[idx])]
        return list(zip(self.tokenizer.convert_ids_to_tokens(idx), (float(probs[i]) for i in idx)))


def _softmax(logits: np.ndarray) -> np.ndarray:
    return softmax_forward(np.asarray(logits, dtype=np.float64))


def _lookup(cache, dotted: str):
    """cache["layers"][0]["attn"]["Q"] from "layers.0.attn.Q" (list indices and tuple members included)."""
    node = cache
    for part in dotted.split("."):
        node = node[int(part)] if isinstance(node, (list, tuple)) else node[part]
    return node
