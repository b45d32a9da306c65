"""TrainingAnalyzer: read a run folder (from `minibert train`) and say what its training did.

    from mini_bert.analysis.training_analyzer import TrainingAnalyzer
    ta = TrainingAnalyzer("runs/default")
    ta.plot_loss_components("runs/default/training_analysis")  # which component the held-out loss depends on
    ta.analyze_parameter_updates()                              # which parameter groups moved most, and when
    ta.detect_training_issues()                                 # plain-language problems found in metrics.jsonl
    print(ta.summary())                                         # all of it as Markdown

A run folder holds metrics.jsonl (one record per logged step), step_XXXXXXX/ checkpoints and best/.

Loss components (the notes' "break down loss into attention, FFN, embedding components"). A loss is not a sum
over components, so the breakdown is by ablation: the held-out MLM loss when one component's contribution to the
residual stream is taken away, minus the normal loss, is how much of the loss that component is responsible for.
Components: the position embeddings, and in each layer l the attention output a_l and the FFN output f_l (the
two terms a layer adds to its input, before its residual sums).

Both outputs end in a linear map, so an ablation is an exact edit of that map's parameters (on a copy of the
model; the core code is untouched). With scale s in [0, 1] and target m:

    a' = (1 - s) a + s m = context (1 - s) W_O + ((1 - s) b_O + s m)        attention of layer l
    f' = (1 - s) f + s m = act(h) (1 - s) W2 + ((1 - s) b2 + s m)           FFN of layer l
    E_pos'[t] = (1 - s) E_pos[t] + s m                                     position embeddings

mode "mean" (mean-ablation): m is the component's mean output over the real tokens of the validation batches
(computed from the unablated model), so only the token-to-token variation, the information it carries, is removed;
by linearity m = mean(context) W_O + b_O and mean(act(h)) W2 + b2. mode "zero" (removal): m = 0, which also
removes the component's constant offset and so measures a larger, less specific effect. s = 0 changes nothing.

Parameter updates reuse `evaluation.analysis.analyze_weight_evolution`; issue detection reuses
`evaluation.analysis.detect_training_issues`. The initial weights (step 0) are rebuilt from the run's config and
seed exactly as the trainer built them, so even a run whose older checkpoints were pruned has an "init" reference.

Shapes: B batch, T tokens, D hidden, F FFN width, L layers, V vocab.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..errors import MissingFileError
from ..config import RunConfig
from ..core.model import MiniBERT
from . import dynamics as AD
from . import inspection as AI
from . import issues as AS
from ..evaluation.metrics import token_rows
from ..training.checkpointing import STEP_PREFIX, list_step_checkpoints, load_checkpoint
from ..training.trainer import evaluate_mlm
from .figures import FigurePaths, _new_figure, _save, plot_weight_evolution, to_jsonable

ABLATION_MODES = ("mean", "zero")


def read_metrics(run_dir: Path | None) -> tuple[list[dict], int]:
    """The records of a run's metrics.jsonl and how many lines could not be read: a torn last line is what a crash
    or a full disk leaves, and the trainer drops it on --resume, so readers skip it too."""
    path = None if run_dir is None else Path(run_dir) / "metrics.jsonl"
    if path is None or not path.exists():
        return [], 0
    records, bad = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        if isinstance(rec, dict):
            records.append(rec)
        else:
            bad += 1
    return records, bad


class TrainingAnalyzer:
    """Analyse the run in `run_dir`.

    max_batches: how many of the run's fixed validation batches the ablations use (the first ones, the same masked
    positions as the run's own evaluations). batches: give your own list of data_loader.Batch instead.
    """

    def __init__(self, run_dir, max_batches: int = 2, batches: list | None = None):
        self.run_dir = Path(run_dir)
        if not self.run_dir.is_dir():
            raise MissingFileError(f"run folder {self.run_dir} does not exist; pass the training.output_dir of a "
                                    "`minibert train` run")
        self.checkpoint_dirs = list_step_checkpoints(self.run_dir)
        if not self.checkpoint_dirs:
            raise MissingFileError(f"{self.run_dir} holds no step_* checkpoint; train longer than "
                                    "training.checkpoint_every steps (or lower it)")
        if max_batches < 1:
            raise ValueError(f"max_batches must be at least 1; got {max_batches}")
        self.max_batches = int(max_batches)
        self._batches = batches
        self._checkpoints: dict[int, object] = {}
        self.components_result: dict | None = None
        self.updates_result: dict | None = None

    # ------------------------------------------------------------------------------------------------------------
    # Reading the run

    @property
    def steps(self) -> list[int]:
        """Steps of the step_* checkpoints, oldest first."""
        return [int(p.name[len(STEP_PREFIX):]) for p in self.checkpoint_dirs]

    def checkpoint(self, step: int):
        """The loaded Checkpoint of a step (cached)."""
        if step not in self._checkpoints:
            if step not in self.steps:
                raise ValueError(f"no checkpoint for step {step} in {self.run_dir}; available: {self.steps}")
            self._checkpoints[step] = load_checkpoint(self.checkpoint_dirs[self.steps.index(step)])
        return self._checkpoints[step]

    @property
    def config(self) -> RunConfig:
        return self.checkpoint(self.steps[-1]).config

    def history(self) -> list[dict]:
        """The records of metrics.jsonl, in order ([] if the file is missing; a torn line is left out)."""
        return read_metrics(self.run_dir)[0]

    def initial_state(self) -> dict[str, np.ndarray]:
        """The weights at step 0: the trainer builds them as MiniBERT(cfg.model, seed=cfg.training.seed)."""
        cfg = self.config
        return MiniBERT(cfg.model, seed=cfg.training.seed).state_dict()

    def validation_batches(self) -> list:
        """The first `max_batches` of the run's fixed validation batches (same corpus, tokenizer and masking)."""
        if self._batches is None:
            from ..data.batches import encode_corpus, fixed_validation_batches, pack_sequences
            from ..data.corpora import load_corpus

            ck = self.checkpoint(self.steps[-1])
            d, m, t = ck.config.data, ck.config.model, ck.config.training
            text = load_corpus(d.corpus, "valid", d.data_dir)
            ids, types = pack_sequences(encode_corpus(text, ck.tokenizer), d.max_seq_len)
            self._batches = fixed_validation_batches(ids, types, t.batch_size, m.vocab_size,   # the trainer's 15%
                                                     max_batches=min(self.max_batches, d.valid_batches))
        return self._batches

    # ------------------------------------------------------------------------------------------------------------
    # Loss components

    def components(self) -> list[str]:
        """position_embeddings, attention_0, ffn_0, attention_1, ..., in the order the residual stream meets them."""
        L = self.config.model.num_layers
        return ["position_embeddings"] + [f"{kind}_{l}" for l in range(L) for kind in ("attention", "ffn")]

    def loss_components(self, mode: str = "mean", scale: float = 1.0, steps: list[int] | None = None) -> dict:
        """Held-out MLM loss of every checkpoint with each component ablated alone, and with all of them at once.

        Returns {"mode", "scale", "steps", "components" (+ "all"), "baseline_loss" [per step],
        "ablated_loss" {component: [per step]}, "loss_increase" {component: [per step]}} (increase = ablated -
        baseline: how much of the loss the component is responsible for).
        """
        if mode not in ABLATION_MODES:
            raise ValueError(f"mode must be one of {', '.join(ABLATION_MODES)}; got {mode!r}")
        if not 0.0 <= scale <= 1.0:
            raise ValueError(f"scale must lie in [0, 1] (0 = no ablation, 1 = full); got {scale}")
        steps = self.steps if steps is None else [int(s) for s in steps]
        batches = self.validation_batches()
        names = self.components() + ["all"]
        baseline, ablated = [], {c: [] for c in names}
        for step in steps:
            model = self.checkpoint(step).model
            baseline.append(evaluate_mlm(model, batches)["valid_loss"])
            means = component_means(model, batches) if mode == "mean" else None
            for c in names:
                parts = self.components() if c == "all" else [c]
                ablated[c].append(evaluate_mlm(ablate(model, parts, mode, scale, means), batches)["valid_loss"])
        result = {"mode": mode, "scale": scale, "steps": steps, "components": names, "baseline_loss": baseline,
                  "ablated_loss": ablated,
                  "loss_increase": {c: [a - b for a, b in zip(ablated[c], baseline)] for c in names},
                  "masked_tokens": int(sum(int(b.mask_positions.sum()) for b in batches))}
        self.components_result = result
        return result

    def plot_loss_components(self, output_dir, mode: str = "mean", scale: float = 1.0,
                             steps: list[int] | None = None) -> FigurePaths:
        """`loss_components(...)` as a bar chart (loss increase per component, one bar per checkpoint), written to
        output_dir/loss_components.png with the numbers in loss_components.json."""
        res = self.loss_components(mode, scale, steps)
        names, steps = res["components"], res["steps"]
        fig = _new_figure((max(6.0, 0.7 * len(names) + 2.0), 4.5), 100)
        ax = fig.subplots()
        x = np.arange(len(names))
        width = 0.8 / len(steps)
        for i, step in enumerate(steps):
            ax.bar(x - 0.4 + width * (i + 0.5), [res["loss_increase"][c][i] for c in names], width=width,
                   label=f"step {step} (loss {res['baseline_loss'][i]:.3f})")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.set_xticks(x, names, rotation=30, fontsize=8)
        ax.set_ylabel("held-out MLM loss increase (nats)")
        ax.set_title(f"Loss components: {mode}-ablation at scale {scale:g} ({res['masked_tokens']} masked tokens)",
                     fontsize=9)
        ax.legend(fontsize=7)
        fig.subplots_adjust(bottom=0.25)
        return _save(fig, Path(output_dir) / "loss_components", res)

    # ------------------------------------------------------------------------------------------------------------
    # Parameter updates

    def analyze_parameter_updates(self, include_init: bool = True, top_k: int = 5, output_dir=None) -> dict:
        """Which parameter groups (embeddings, layer_l, head) and parameters changed most between consecutive
        checkpoints, by the relative update |theta_t - theta_(t-1)| / |theta_(t-1)| of `analyze_weight_evolution`.

        include_init: start from the initial weights (step 0, rebuilt from the config's seed).
        Returns {"steps", "intervals" [(from, to)], "groups" {group: {"relative_update", "relative_distance"}},
        "table" [one row per interval: from_step, to_step, group -> relative update, fastest_group],
        "top_parameters" [per interval: the top_k (name, relative update) among the weight matrices and embeddings
        (a bias that starts at 0, such as b_K, has a tiny norm and a meaningless ratio)], "evolution" (the full
        result)}.
        With output_dir, also writes weight_evolution.png/.json there.
        """
        steps = self.steps
        states = [self.checkpoint(s).model.state_dict() for s in steps]
        if include_init and steps[0] != 0:
            steps, states = [0] + steps, [self.initial_state()] + states
        if len(states) < 2:
            raise ValueError(f"{self.run_dir} has one checkpoint; parameter updates need two (or include_init=True)")
        evo = AD.analyze_weight_evolution(states, steps)
        groups = list(evo["groups"])
        intervals = list(zip(steps[:-1], steps[1:]))
        table, top = [], []
        for i, (a, b) in enumerate(intervals):
            row = {"from_step": a, "to_step": b, **{g: float(evo["groups"][g]["relative_update"][i]) for g in groups}}
            row["fastest_group"] = max(groups, key=lambda g: _finite_or(row[g], -math.inf))
            table.append(row)
            ranked = sorted(((n, float(v["relative_update"][i])) for n, v in evo["parameters"].items()
                             if AI._is_weight(n)),
                            key=lambda nv: _finite_or(nv[1], -math.inf), reverse=True)
            top.append(ranked[:top_k])
        result = {"steps": steps, "intervals": intervals,
                  "groups": {g: {k: evo["groups"][g][k] for k in ("relative_update", "relative_distance")}
                             for g in groups},
                  "table": table, "top_parameters": top, "evolution": evo}
        if output_dir is not None:
            plot_weight_evolution(evo, Path(output_dir) / "weight_evolution",
                                  title=f"Weight evolution of {self.run_dir.name}")
        self.updates_result = result
        return result

    # ------------------------------------------------------------------------------------------------------------
    # Issues and the summary

    def detect_training_issues(self, thresholds: AS.IssueThresholds | None = None) -> list[AS.Issue]:
        """`analysis.detect_training_issues` on metrics.jsonl (richer with training.analysis_every > 0)."""
        return AS.detect_training_issues(self.history(), thresholds)

    def summary(self, output_dir=None) -> str:
        """Markdown: the run, its last metrics, the training problems found, the parameter-update table and (if
        `loss_components` ran) the loss components. With output_dir, also writes summary.md and summary.json."""
        cfg = self.config
        m = cfg.model
        hist = self.history()
        lines = [f"# Training analysis of `{self.run_dir}`", "",
                 f"Model: {m.num_layers} layers, hidden {m.hidden_size}, {m.num_heads} heads, vocab {m.vocab_size}, "
                 f"{m.activation}, {m.norm_position}-LN. Corpus `{cfg.data.corpus}`, batch {cfg.training.batch_size}"
                 f" x {cfg.data.max_seq_len}, lr {cfg.training.lr:g} ({cfg.training.schedule}).", "",
                 f"Checkpoints: steps {', '.join(map(str, self.steps))}.", ""]
        last_train = next((e for e in reversed(hist) if "train_loss" in e), None)
        last_valid = next((e for e in reversed(hist) if "valid_loss" in e), None)
        if last_train:
            lines.append(f"Last logged training loss {last_train['train_loss']:.4f} at step {last_train['step']}.")
        if last_valid:
            lines.append(f"Last validation loss {last_valid['valid_loss']:.4f} (masked accuracy "
                         f"{last_valid.get('valid_masked_acc', math.nan):.4f}) at step {last_valid['step']}.")
        issues = self.detect_training_issues()
        lines += ["", "## Issues", ""]
        lines += [f"- {i}" for i in issues] or ["None found in metrics.jsonl."]

        updates = self.updates_result or self.analyze_parameter_updates()
        groups = list(updates["groups"])
        lines += ["", "## Parameter updates", "",
                  "Relative update |W_t - W_(t-1)| / |W_(t-1)| of each group's weight matrices and embeddings "
                  "between consecutive checkpoints (step 0 = the initial weights):", "",
                  "| steps | " + " | ".join(groups) + " | fastest |", "|---" * (len(groups) + 2) + "|"]
        for row in updates["table"]:
            lines.append(f"| {row['from_step']} -> {row['to_step']} | "
                         + " | ".join(f"{row[g]:.3g}" for g in groups) + f" | {row['fastest_group']} |")
        lines += ["", "Fastest parameters in the last interval: " + ", ".join(
            f"`{n}` {v:.3g}" for n, v in updates["top_parameters"][-1]) + "."]

        comp = self.components_result
        if comp is not None:
            lines += ["", "## Loss components", "",
                      f"Held-out MLM loss increase when a component is {comp['mode']}-ablated at scale "
                      f"{comp['scale']:g} ({comp['masked_tokens']} masked validation tokens):", "",
                      "| component | " + " | ".join(f"step {s}" for s in comp["steps"]) + " |",
                      "|---" * (len(comp["steps"]) + 1) + "|",
                      "| (baseline loss) | " + " | ".join(f"{v:.4f}" for v in comp["baseline_loss"]) + " |"]
            lines += [f"| {c} | " + " | ".join(f"{v:+.4f}" for v in comp["loss_increase"][c]) + " |"
                      for c in comp["components"]]
        else:
            lines += ["", "Loss components: not computed (call `plot_loss_components(output_dir)`)."]
        text = "\n".join(lines) + "\n"
        if output_dir is not None:
            out = Path(output_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / "summary.md").write_text(text, encoding="utf-8")
            numbers = {"issues": [i.to_dict() for i in issues],
                       "parameter_updates": {k: updates[k] for k in ("steps", "table", "top_parameters")},
                       "loss_components": comp}
            (out / "summary.json").write_text(json.dumps(to_jsonable(numbers), indent=1, allow_nan=False))
        return text


# ----------------------------------------------------------------------------------------------------------------
# Ablation by parameter edits


def _finite_or(x: float, default: float) -> float:
    return x if math.isfinite(x) else default


def component_means(model, batches) -> dict[str, np.ndarray]:
    """Mean output of every component over the real tokens of `batches` (eval mode), float64.

    attention_l: mean(context_l) W_O_l + b_O_l (D,); ffn_l: mean(act(h_l)) W2_l + b2_l (D,) — exact by linearity;
    position_embeddings: the mean of E_pos[t] over the positions of the real tokens (D,).
    """
    P = model.params
    L = model.config.num_layers
    sums = {f"{k}_{l}": 0.0 for l in range(L) for k in ("context", "ffn_act")}
    pos_counts = np.zeros(model.config.max_position_embeddings)
    n = 0
    for b in batches:
        _, cache = model.encode(b.input_ids, b.attention_mask, b.token_type_ids, training=False)
        mask = b.attention_mask
        for l, c in enumerate(cache["layers"]):
            sums[f"context_{l}"] = sums[f"context_{l}"] + token_rows(c["attn"]["context"], mask).sum(axis=0)
            sums[f"ffn_act_{l}"] = sums[f"ffn_act_{l}"] + token_rows(c["ffn"]["a"], mask).sum(axis=0)
        real = np.ones(b.input_ids.shape, bool) if mask is None else np.asarray(mask).astype(bool)
        pos_counts[:real.shape[1]] += real.sum(axis=0)
        n += int(real.sum())
    if n == 0:
        raise ValueError("the batches hold no real tokens (attention_mask is all 0)")
    f64 = lambda name: np.asarray(P[name], dtype=np.float64)  # noqa: E731
    means = {"position_embeddings": pos_counts @ f64("E_pos") / n}
    for l in range(L):
        means[f"attention_{l}"] = sums[f"context_{l}"] / n @ f64(f"W_O_{l}") + f64(f"b_O_{l}")
        means[f"ffn_{l}"] = sums[f"ffn_act_{l}"] / n @ f64(f"W2_{l}") + f64(f"b2_{l}")
    return means


def ablate(model, components: list[str], mode: str = "mean", scale: float = 1.0, means: dict | None = None):
    """A copy of `model` whose listed components output (1 - scale) x + scale m (see the module docstring).

    components: names from `TrainingAnalyzer.components()` (position_embeddings, attention_l, ffn_l).
    means: `component_means(model, batches)`, needed for mode "mean".
    """
    if mode not in ABLATION_MODES:
        raise ValueError(f"mode must be one of {', '.join(ABLATION_MODES)}; got {mode!r}")
    if mode == "mean" and means is None:
        raise ValueError("mean-ablation needs the components' mean outputs: pass means=component_means(model, batches)")
    copy = AI.clone_model(model)
    P = copy.params
    keep = 1.0 - scale
    for comp in components:
        if comp == "position_embeddings":
            weight, bias = "E_pos", None
        else:
            kind, _, layer = comp.rpartition("_")
            if kind not in ("attention", "ffn") or not layer.isdigit() or int(layer) >= model.config.num_layers:
                raise ValueError(f"unknown component {comp!r}; choose position_embeddings, attention_<l> or ffn_<l> "
                                 f"with l < {model.config.num_layers}")
            weight, bias = (f"W_O_{layer}", f"b_O_{layer}") if kind == "attention" else (f"W2_{layer}", f"b2_{layer}")
        target = means[comp] if mode == "mean" else 0.0
        W = P[weight]
        if bias is None:        # E_pos'[t] = (1 - s) E_pos[t] + s m, every row
            W[...] = (keep * W.astype(np.float64) + scale * target).astype(W.dtype)
        else:                   # (1 - s) W, (1 - s) b + s m: the output becomes (1 - s) out + s m
            b = P[bias]
            W *= W.dtype.type(keep)
            b[...] = (keep * b.astype(np.float64) + scale * target).astype(b.dtype)
    return copy
