"""Watch training for trouble: `TrainingMonitor(every)` is what the trainer calls each step to log a few
"look inside" metrics cheaply, and `detect_training_issues(history)` runs small named `RULES` over such a log,
turning it into plain-language `Issue`s, each with a setting to change.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ..core.gradients import MiniBERTGradients
from ..evaluation.metrics import compute_attention_entropy, compute_gradient_norm
from .inspection import _group_block_slices, _group_norms, _group_order, dead_unit_fraction
from .dynamics import analyze_gradient_magnitudes_by_layer

# ---------------------------------------------------------------------------------------------------------------
# Training issues


@dataclass(frozen=True)
class Issue:
    """One problem found in a training log: what (kind), how bad, where, why it matters, and what to try."""

    kind: str            # exploding_gradients, vanishing_gradients, dead_relu, loss_spike, divergence, loss_plateau,
    #                      lr_too_high, lr_too_low, attention_collapse
    severity: str        # "warning" or "error"
    step: int | None     # first logged step where it shows
    explanation: str     # plain language: what is happening and why it matters
    suggestion: str      # what to try
    evidence: dict = field(default_factory=dict)

    def __str__(self) -> str:
        where = f" (from step {self.step})" if self.step is not None else ""
        return f"[{self.severity}] {self.kind}{where}: {self.explanation} Try: {self.suggestion}"

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class IssueThresholds:
    """The limits `detect_training_issues` applies. Defaults are loose: a healthy run should raise nothing."""

    spike_ratio: float = 1.5           # loss > spike_ratio x median of the previous `window` losses ...
    spike_min_rise: float = 0.5        # ... and at least this much above it (nats)
    window: int = 10
    divergence_ratio: float = 1.1      # mean loss over the last tenth > this x mean over the first tenth
    rebound_ratio: float = 1.15        # moving-average loss at the end > this x its minimum ...
    rebound_min_rise: float = 0.2      # ... and at least this much above it (nats)
    explode_ratio: float = 10.0        # grad norm > this x median of the earlier grad norms
    vanish_ratio: float = 1e-3         # a group's grad norm < this x the median over groups
    dead_fraction: float = 0.5         # more than this fraction of a layer's FFN units never fire
    update_ratio_high: float = 0.2     # |delta W| / |W| per step, median over the run's second half
    update_ratio_low: float = 1e-5
    plateau_window: int = 20           # compare the mean loss of the last two windows of this many logged losses
    plateau_tol: float = 0.005         # relative improvement below this = plateau
    collapse_entropy: float = 0.05     # a layer's mean attention entropy (nats) below this = collapse


def _series(history, key):
    """(steps, values) of the entries that log `key`."""
    pts = [(e.get("step", i), e[key]) for i, e in enumerate(history) if key in e and e[key] is not None]
    if not pts:
        return np.array([], dtype=np.int64), np.array([])
    s, v = zip(*pts)
    return np.asarray(s), np.asarray(v, dtype=np.float64)


def _prefixed_keys(history, prefix):
    keys = {k for e in history for k in e if k.startswith(prefix)}
    return _group_order(k[len(prefix):] for k in keys)


@dataclass
class _Log:
    """What the rules read: the logged series, the thresholds, and what earlier rules found."""

    history: list[dict]
    th: IssueThresholds
    steps: np.ndarray          # steps with a loss
    loss: np.ndarray
    fsteps: np.ndarray         # ... with a finite loss
    floss: np.ndarray
    gsteps: np.ndarray         # steps with a global gradient norm
    gnorm: np.ndarray
    lr: np.ndarray
    issues: list = field(default_factory=list)
    diverged: bool = False
    spikes: list = field(default_factory=list)
    explode: list = field(default_factory=list)
    died: dict = field(default_factory=dict)

    def found(self, *kinds) -> bool:
        return any(i.kind in kinds for i in self.issues)


def _rule_non_finite(log: _Log) -> None:
    """The loss or the gradient norm became NaN/inf: the run has blown up."""
    bad = [int(s) for s, v in zip(log.steps, log.loss) if not math.isfinite(v)]
    bad += [int(s) for s, v in zip(log.gsteps, log.gnorm) if not math.isfinite(v)]
    if bad:
        log.diverged = True
        log.issues.append(Issue(
            "divergence", "error", min(bad),
            "The loss or the gradient norm became NaN/inf: updates grew so large that the numbers overflowed, and "
            "nothing after this point is meaningful.",
            "Lower the learning rate 3-10x, use warmup, and clip gradients (training.grad_clip=1.0).",
            {"steps": sorted(set(bad))[:20]}))


def _rule_loss_spikes(log: _Log) -> None:
    """A jump well above the recent typical loss."""
    th, floss, fsteps = log.th, log.floss, log.fsteps
    for i in range(5, len(floss)):
        ref = float(np.median(floss[max(0, i - th.window):i]))
        if floss[i] > th.spike_ratio * ref and floss[i] - ref > th.spike_min_rise:
            log.spikes.append((int(fsteps[i]), float(floss[i]), ref))
    if log.spikes:
        first = log.spikes[0]
        log.issues.append(Issue(
            "loss_spike", "warning", first[0],
            f"The loss jumped {len(log.spikes)} time(s) to well above its recent level (e.g. {first[1]:.3f} against "
            f"{first[2]:.3f} just before). Each spike undoes part of what was learned; it usually means steps "
            "that are too large for the local curvature.",
            "Lower training.lr, raise training.warmup_ratio, or set training.grad_clip=1.0; if spikes follow "
            "particular batches, inspect those batches.",
            {"spikes": [{"step": s, "loss": v, "median_before": r} for s, v, r in log.spikes[:20]]}))


def _rule_rising_loss(log: _Log) -> None:
    """Divergence without NaN: the loss ends higher than it began."""
    floss, fsteps = log.floss, log.fsteps
    if len(floss) < 10 or log.diverged:
        return
    k = max(3, len(floss) // 10)
    start, end = float(floss[:k].mean()), float(floss[-k:].mean())
    if end > log.th.divergence_ratio * start:
        log.diverged = True
        log.issues.append(Issue(
            "divergence", "error", int(fsteps[-k]),
            f"The loss went up over the run (mean {start:.3f} at the start, {end:.3f} at the end): training is "
            "moving away from a solution.",
            "Lower training.lr (3-10x) and check the gradients with a gradient check.",
            {"start_loss": start, "end_loss": end}))


def _rule_rebound(log: _Log) -> None:
    """The loss came down, then climbed back well above its best level (on a moving average, to see through
    batch-to-batch noise): the steps have become too large."""
    th, floss, fsteps = log.th, log.floss, log.fsteps
    k = max(5, len(floss) // 10)
    if len(floss) < 4 * k or log.diverged:
        return
    ma = np.convolve(floss, np.ones(k) / k, mode="valid")
    i_min = int(np.argmin(ma))
    best, end = float(ma[i_min]), float(ma[-1])
    if i_min < len(ma) - k and end > th.rebound_ratio * best and end - best > th.rebound_min_rise:
        log.diverged = True
        log.issues.append(Issue(
            "divergence", "error", int(fsteps[i_min + k - 1]),
            f"The loss came down to {best:.3f} (moving average over {k} logged steps) and then climbed back to "
            f"{end:.3f}: training has become unstable and is undoing what it learned.",
            "Lower training.lr (3-10x), or decay it sooner; set training.grad_clip=1.0.",
            {"best_moving_average": best, "end_moving_average": end, "window": k}))


def _rule_exploding_gradients(log: _Log) -> None:
    """A global gradient norm far above its own history."""
    gnorm, fin = log.gnorm, np.isfinite(log.gnorm)
    for i in range(3, len(gnorm)):
        if fin[i] and fin[:i].any():
            ref = float(np.median(gnorm[:i][fin[:i]]))
            if ref > 0 and gnorm[i] > log.th.explode_ratio * ref:
                log.explode.append((int(log.gsteps[i]), float(gnorm[i]), ref))
    if log.explode:
        step, g, ref = log.explode[0]
        log.issues.append(Issue(
            "exploding_gradients", "error", step,
            f"The gradient norm jumped to {g:.3g}, over {log.th.explode_ratio:g}x its usual {ref:.3g}. Such a step "
            "moves the weights far in one go and can wreck the model.",
            "Clip the global gradient norm (training.grad_clip=1.0), lower training.lr, and check for bad inputs.",
            {"events": [{"step": s, "grad_norm": g, "median_before": r} for s, g, r in log.explode[:20]]}))


def _rule_vanishing_gradients(log: _Log) -> None:
    """A parameter group whose gradient is tiny against the other groups at the same step, most of the time."""
    groups = _prefixed_keys(log.history, "grad_norm/")
    if not groups:
        return
    low: dict[str, list[int]] = {g: [] for g in groups}
    n_obs = 0
    for e in log.history:
        vals = {g: e.get(f"grad_norm/{g}") for g in groups}
        if any(v is None for v in vals.values()):
            continue
        n_obs += 1
        med = float(np.median(list(vals.values())))
        for g, v in vals.items():
            if med > 0 and v < log.th.vanish_ratio * med:
                low[g].append(int(e.get("step", 0)))
    stuck = {g: s for g, s in low.items() if n_obs and len(s) >= max(1, n_obs / 2)}
    if stuck:
        log.issues.append(Issue(
            "vanishing_gradients", "error", min(s[0] for s in stuck.values()),
            f"The weight matrices of {', '.join(stuck)} get almost no gradient (below {log.th.vanish_ratio:g}x the "
            "median of the other groups) in most logged steps, so they are not learning. A layer whose weights "
            "are all zero sits at a saddle: every product through it is 0, and so is its gradient.",
            "Check the initialisation of that layer (nothing zeroed or tiny; model.initializer_range), the residual "
            "connections, and for a post-LN model raise training.warmup_ratio or set model.norm_position=pre.",
            {"groups": {g: s[:20] for g, s in stuck.items()}, "observations": n_obs}))


def _rule_dead_units(log: _Log) -> None:
    """FFN units that never fire."""
    dead_layers = {}
    for layer in _prefixed_keys(log.history, "dead_units/"):
        _, v = _series(log.history, f"dead_units/{layer}")
        recent = float(np.median(v[-3:])) if v.size else 0.0
        if recent > log.th.dead_fraction:
            dead_layers[layer] = recent
            if v[0] < 0.5 * log.th.dead_fraction:      # alive at the start: killed by the updates themselves
                log.died[layer] = (float(v[0]), recent)
    if dead_layers:
        first = min(int(_series(log.history, f"dead_units/{g}")[0][-1]) for g in dead_layers)
        log.issues.append(Issue(
            "dead_relu", "warning", first,
            "In " + ", ".join(f"{g} {f:.0%}" for g, f in dead_layers.items()) + " of the FFN units never fire "
            "(pre-activation <= 0 on every token). A dead ReLU outputs 0 and its gradient is 0, so it cannot "
            "recover: that capacity is wasted.",
            "Lower training.lr or raise training.warmup_ratio (a large step can push a unit's bias far negative), "
            "or set model.activation=gelu.",
            {"dead_fraction": dead_layers}))


def _rule_learning_rate(log: _Log) -> None:
    """The update-to-weight ratio |delta W| / |W| per step, with the other symptoms of too large a step."""
    th, history = log.th, log.history
    ratio_keys = ["update_ratio"] + [f"update_ratio/{g}" for g in _prefixed_keys(history, "update_ratio/")]
    med_ratio = {}
    for key in ratio_keys:
        _, v = _series(history, key)
        v = v[np.isfinite(v)]
        if v.size:
            med_ratio[key] = float(np.median(v[len(v) // 2:]))
    high = {k: r for k, r in med_ratio.items() if r > th.update_ratio_high}
    first = int(log.steps[0]) if log.steps.size else None
    if high or log.spikes or log.diverged or log.explode or log.died:
        reasons = []
        if high:
            reasons.append("each step changes the weights by " + ", ".join(
                f"{r:.2g} of their size ({k})" for k, r in list(high.items())[:4]) + f", above ~{th.update_ratio_high:g}")
        reasons += [why for flag, why in ((log.spikes, "the loss spikes"), (log.diverged, "the loss diverges"),
                                          (log.explode, "the gradients explode")) if flag]
        if log.died:
            reasons.append("FFN units that were alive at the start died during training (" + ", ".join(
                f"{g}: {a:.0%} -> {b:.0%}" for g, (a, b) in log.died.items()) + "): large steps pushed them where "
                "ReLU gives no gradient")
        log.issues.append(Issue(
            "lr_too_high", "error" if log.diverged else "warning", first,
            "The learning rate looks too high: " + "; ".join(reasons) + ". Too large a step overshoots the "
            "minimum along the directions of high curvature (for plain gradient descent on a quadratic, any "
            "lr > 2 / largest curvature diverges).",
            "Divide training.lr by 3-10 (run `minibert analyze --what lr-finder` to pick one) and keep "
            "training.warmup_ratio > 0.",
            {"lr": float(log.lr[-1]) if log.lr.size else None, "update_ratio_median": high,
             "units_died": log.died}))
    elif med_ratio and max(med_ratio.values()) < th.update_ratio_low:
        log.issues.append(Issue(
            "lr_too_low", "warning", first,
            f"Each step changes the weights by less than {th.update_ratio_low:g} of their size (median update ratio "
            f"{max(med_ratio.values()):.2g}): training will crawl.",
            "Raise training.lr 3-10x (the LR finder suggests one), or check that training.warmup_ratio does not "
            "keep the rate near 0.",
            {"update_ratio_median": med_ratio}))


def _rule_plateau(log: _Log) -> None:
    """No progress over the last window, while the learning rate has not been annealed away."""
    w, floss, fsteps, lr = log.th.plateau_window, log.floss, log.fsteps, log.lr
    if len(floss) < 2 * w or log.diverged:
        return
    prev_m, last_m = float(floss[-2 * w:-w].mean()), float(floss[-w:].mean())
    improvement = (prev_m - last_m) / max(abs(prev_m), 1e-12)
    annealed = lr.size > 0 and float(lr[-w:].mean()) < 0.1 * float(lr.max())
    if improvement >= log.th.plateau_tol or annealed:
        return
    start_m = float(floss[:w].mean())
    never_learned = last_m > 0.95 * start_m
    log.issues.append(Issue(
        "loss_plateau", "warning", int(fsteps[-2 * w]),
        f"The loss has stopped improving (mean {prev_m:.3f} then {last_m:.3f} over the last two windows of "
        f"{w} logged steps)" + (", and is still close to where it started: the model is not learning."
                                if never_learned else "."),
        ("Raise training.lr or check the data and masking (is there anything to learn?)" if never_learned else
         "Decay the learning rate (training.schedule), add capacity or data, or stop here if the validation loss "
         "has stopped too."),
        {"previous_window_mean": prev_m, "last_window_mean": last_m, "start_mean": start_m}))
    # Blame the learning rate only when nothing else explains the stall (dead units, vanishing gradients).
    if never_learned and not log.found("lr_too_low", "dead_relu", "vanishing_gradients"):
        log.issues.append(Issue(
            "lr_too_low", "warning", int(fsteps[-2 * w]),
            "The loss has barely moved since the start of training: the steps may be too small to learn.",
            "Raise training.lr 3-10x, or run the LR finder (`minibert analyze --what lr-finder`).",
            {"start_mean": start_m, "last_window_mean": last_m}))


def _rule_attention_collapse(log: _Log) -> None:
    """Every head of a layer puts all its weight on one token."""
    collapsed = {}
    for layer in _prefixed_keys(log.history, "attention_entropy/"):
        _, v = _series(log.history, f"attention_entropy/{layer}")
        if v.size and float(np.median(v[-3:])) < log.th.collapse_entropy:
            collapsed[layer] = float(np.median(v[-3:]))
    if collapsed:
        log.issues.append(Issue(
            "attention_collapse", "warning", None,
            "The attention of " + ", ".join(f"{g} (mean entropy {e:.3f} nats)" for g, e in collapsed.items())
            + " has collapsed: every head puts nearly all its weight on a single token, so the layer mixes in "
            "almost no context and its softmax gradients vanish.",
            "Lower training.lr, check that the scores are scaled by 1/sqrt(d), and that padding is masked.",
            {"entropy": collapsed}))


# In order: later rules read what earlier ones found (the learning-rate rule weighs spikes, divergence,
# explosions and dead units; the plateau rule skips a diverged run).
RULES = (_rule_non_finite, _rule_loss_spikes, _rule_rising_loss, _rule_rebound, _rule_exploding_gradients,
         _rule_vanishing_gradients, _rule_dead_units, _rule_learning_rate, _rule_plateau, _rule_attention_collapse)


def detect_training_issues(history: list[dict], thresholds: IssueThresholds | None = None) -> list[Issue]:
    """Read a training log and name what is going wrong, in plain language, with a setting to change.

    history: a list of metric dicts, one per logged step: "step", "train_loss" (or "loss"), "lr", "grad_norm",
    and the `TrainingMonitor` keys "grad_norm/<group>", "update_ratio" / "update_ratio/<group>",
    "dead_units/layer_<l>", "attention_entropy/layer_<l>". Missing keys are skipped. Each of `RULES` looks for
    one problem. Returns a list of Issue, errors first; empty for a healthy run.
    """
    history = sorted(history, key=lambda e: e.get("step", 0))
    loss_key = "train_loss" if any("train_loss" in e for e in history) else "loss"
    steps, loss = _series(history, loss_key)
    gsteps, gnorm = _series(history, "grad_norm")
    ok = np.isfinite(loss)
    log = _Log(history, IssueThresholds() if thresholds is None else thresholds, steps, loss, steps[ok], loss[ok],
               gsteps, gnorm, _series(history, "lr")[1])
    for rule in RULES:
        rule(log)
    order = {"error": 0, "warning": 1}
    return sorted(log.issues, key=lambda i: order.get(i.severity, 2))


class TrainingMonitor:
    """What the trainer calls each step to log the "look inside" metrics every `every` steps.

    `observe(step, model, grads, cache, lr, loss, update_ratio=None, grad_norm=None)`: call once per step after
    the backward pass, consistently before or after the optimizer step (grads hold this step's gradients, cache is
    the forward cache). On steps with step % every == 0 it returns a dict to log: grad_norm/<group>,
    update_ratio and update_ratio/<group> (|delta W| / |W| of one step), attention_entropy/layer_<l> (mean over
    heads, nats), attention_entropy_min/layer_<l>, dead_units/layer_<l>. On other steps it records the loss, lr
    and grad_norm (a few bytes) and returns {}. grad_norm: the global norm *before clipping* (pass it: clipping
    scales the gradients in place, and an explosion is only visible before it); None computes it from grads.
    update_ratio: None (the monitor keeps a copy of the weights from the step before each observed step and
    measures the update itself), a float (logged as "update_ratio"), a dict group -> ratio, or the flat update
    delta theta aligned with model.store.flat.
    `issues()` runs `detect_training_issues` on everything recorded; `history` is that record.
    """

    def __init__(self, every: int = 100, thresholds: IssueThresholds | None = None):
        if every < 1:
            raise ValueError(f"every must be a positive number of steps; got {every}")
        self.every = int(every)
        self.thresholds = thresholds
        self.history: list[dict] = []
        self._slices = None
        self._prev: np.ndarray | None = None
        self._prev_step: int | None = None

    def observe(self, step: int, model, grads, cache, lr: float, loss: float, update_ratio=None,
                grad_norm: float | None = None) -> dict:
        step = int(step)
        entry = {"step": step, "lr": float(lr), "train_loss": float(loss)}
        if grad_norm is not None:
            entry["grad_norm"] = float(grad_norm)
        if step % self.every != 0:
            if update_ratio is None and (step + 1) % self.every == 0:
                # Keep theta before the next observed step's update comparison.
                if self._prev is None or self._prev.shape != model.store.flat.shape:
                    self._prev = np.empty_like(model.store.flat)
                np.copyto(self._prev, model.store.flat)
                self._prev_step = step
            self.history.append(entry)
            return {}
        if self._slices is None:
            self._slices = _group_block_slices(model.store)
        flat_g = grads.flat if isinstance(grads, MiniBERTGradients) else None
        if flat_g is not None:
            entry.setdefault("grad_norm", compute_gradient_norm(flat_g))
            for g, v in _group_norms(flat_g, self._slices).items():
                entry[f"grad_norm/{g}"] = v
        else:
            stats = analyze_gradient_magnitudes_by_layer(grads)
            entry.setdefault("grad_norm", compute_gradient_norm(grads))
            entry.update({f"grad_norm/{g}": v for g, v in stats["grad_norm"].items()})
        entry.update(self._update_ratios(step, model, update_ratio))
        mask = cache.get("attention_mask")
        if cache.get("attention_weights"):
            ent = compute_attention_entropy(cache["attention_weights"], mask)       # (L, H)
            for layer, row in enumerate(ent):
                entry[f"attention_entropy/layer_{layer}"] = float(row.mean())
                entry[f"attention_entropy_min/layer_{layer}"] = float(row.min())
        for layer, c in enumerate(cache.get("layers", [])):
            entry[f"dead_units/layer_{layer}"] = dead_unit_fraction(c["ffn"]["h"], mask)
        self.history.append(entry)
        # The caller logs step, lr, loss and the global norm itself: return only what the monitor adds.
        return {k: v for k, v in entry.items() if k not in ("step", "lr", "train_loss", "grad_norm")}

    def _update_ratios(self, step, model, update_ratio) -> dict:
        if update_ratio is None:
            if self._prev is None or self._prev_step != step - 1:
                return {}
            delta = model.store.flat - self._prev
        elif isinstance(update_ratio, dict):
            return {f"update_ratio/{g}": float(v) for g, v in update_ratio.items()}
        elif np.ndim(update_ratio) == 0:
            return {"update_ratio": float(update_ratio)}
        else:
            delta = np.asarray(update_ratio)
            if delta.shape != model.store.flat.shape:
                raise ValueError(f"update_ratio as an array must be the flat update delta theta of shape "
                                 f"{model.store.flat.shape}; got {delta.shape}")
        dn = _group_norms(delta, self._slices)
        wn = _group_norms(model.store.flat, self._slices)
        # A group whose weights are all zero has no scale: report 0 if it did not move, inf if it did.
        out = {f"update_ratio/{g}": dn[g] / wn[g] if wn[g] > 0 else (0.0 if dn[g] == 0 else math.inf) for g in dn}
        total_w = math.sqrt(sum(v * v for v in wn.values()))
        out["update_ratio"] = math.sqrt(sum(v * v for v in dn.values())) / total_w if total_w > 0 else math.inf
        return out

    def issues(self) -> list[Issue]:
        return detect_training_issues(self.history, self.thresholds)
