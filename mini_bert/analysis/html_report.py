"""`minibert report`: one self-contained HTML page that shows a run to a learner in a browser.

    write_report(checkpoint, output=None, sentence=None, results=())   -> the path written

The page holds: the training curves from the run's metrics.jsonl (training loss, held-out masked accuracy and
perplexity, learning rate, tokens/s); the training issues that `issues.detect_training_issues` finds in that log;
an attention viewer for one sentence (every layer x head, a head enlarged, where each token looks); the gradient
norm per layer for the MLM loss of that sentence; and the POS-probe and SST-2 tables with their baselines, read
from the JSON files that `minibert probe-pos --output`, `minibert finetune-sst2 --output` and
`minibert evaluate --output` write. Those are looked for beside the run folder, in RUN-eval/ and RUN-analysis/,
and can be named with `results`; a section without a result says how to produce one.

The page opens from disk with no network: scripts, styles and data are inline (`webpage.render_page`), and every
figure is an SVG that the page saves as SVG or PNG. It is written beside the run folder by default
(RUN-analysis/report.html, as `minibert analyze` does), never inside it: a run folder holds only what the trainer
writes.
"""

from __future__ import annotations

import datetime
import json
import math
import os
from pathlib import Path

from .. import __version__
from ..data.sources import check_output_path
from ..errors import MiniBertError
from .explorer import MathematicalExplorer
from .issues import detect_training_issues
from .report import DEFAULT_TEXT, default_output_dir
from .training_analyzer import read_metrics
from .webpage import attention_view, fitting_sentence, gradient_view, render_page

MAX_POINTS = 1500                   # per curve: a longer log is thinned to this many points (the last one kept)
RESULT_FOLDERS = ("eval", "analysis")   # RUN-eval/ and RUN-analysis/ beside the run folder
MAX_RESULT_BYTES = 5_000_000        # result files are small; a bigger JSON there is something else (a figure's)
CURVES = (                          # metrics.jsonl key, title, y label, log scale
    ("train_loss", "Training loss", "masked-LM loss (nats)", False),
    ("valid_masked_acc", "Held-out masked accuracy", "accuracy", False),
    ("valid_perplexity", "Held-out perplexity", "perplexity (log scale)", True),
    ("lr", "Learning rate", "learning rate", False),
    ("tokens_per_s", "Throughput", "tokens / s", False),
)


# ---------------------------------------------------------------------------------------------------------------
# Where things are


def default_report_path(checkpoint) -> Path:
    """RUN-analysis/report.html beside the run folder (RUN/best -> RUN-analysis/best/report.html)."""
    return default_output_dir(Path(checkpoint)) / "report.html"


def check_output(path) -> Path:
    """The report's path, checked before any work: writable as a file (`check_output_path`) and not inside a run
    folder, which only the trainer writes. MiniBertError else."""
    path = check_output_path(path, "--output")
    for folder in [path.parent, *path.parent.parents]:
        if _is_run_folder(folder):
            raise MiniBertError(f"--output {path} is inside the run folder {folder}, which only training writes "
                                f"(a --resume prunes it); write beside it, e.g. {default_report_path(folder)}")
    return path


def _is_run_folder(folder: Path) -> bool:
    """Does `folder` hold a training run (metrics.jsonl or step checkpoints)? False when it cannot be read."""
    from ..training.checkpointing import list_step_checkpoints

    try:
        return (folder / "metrics.jsonl").exists() or bool(list_step_checkpoints(folder))
    except OSError:
        return False


def run_folder(checkpoint) -> Path | None:
    """The run folder that `checkpoint` (a run folder or one of its checkpoints) belongs to, or None for a lone
    checkpoint folder."""
    from ..training.checkpointing import resolve_checkpoint_dir

    path = Path(checkpoint)
    if _is_run_folder(path):
        return path
    parent = resolve_checkpoint_dir(path).parent
    return parent if _is_run_folder(parent) else None


# ---------------------------------------------------------------------------------------------------------------
# The training log


def thin(xs: list, ys: list, limit: int = MAX_POINTS) -> tuple[list, list]:
    """At most `limit` evenly spaced points of a curve, the first and the last always among them."""
    n = len(xs)
    if n <= limit:
        return xs, ys
    idx = sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})
    return [xs[i] for i in idx], [ys[i] for i in idx]


def curves(records: list[dict]) -> dict:
    """key -> {"title", "y_label", "log", "steps", "values"} for each CURVES key the log holds."""
    out = {}
    for key, title, label, log in CURVES:
        pts = [(r["step"], r[key]) for r in records
               if isinstance(r.get(key), (int, float)) and isinstance(r.get("step"), (int, float))]
        pts = [(s, v if math.isfinite(v) else None) for s, v in pts]
        if not pts:
            continue
        steps, values = thin([p[0] for p in pts], [p[1] for p in pts])
        out[key] = {"title": title, "y_label": label, "log": log, "steps": steps,
                    "values": [None if v is None else round(float(v), 6) for v in values]}
    return out


# ---------------------------------------------------------------------------------------------------------------
# Evaluation results


def classify_result(data) -> list[tuple[str, dict]]:
    """("pos" | "sst2", result) for each result in a JSON document: the output of probe-pos, of finetune-sst2, or
    the pos_probe / sst2 sections of an `evaluate` report. [] when it holds none."""
    if not isinstance(data, dict):
        return []
    if data.get("task") == "pos" and isinstance(data.get("layers"), list):
        return [("pos", data)]
    if data.get("task") == "sst2" and "majority_class" in data:
        return [("sst2", data)]
    found = []
    for key in ("pos_probe", "sst2"):
        section = data.get(key)
        if isinstance(section, dict) and "skipped" not in section:
            found += classify_result(section)
    return found


def load_results(files) -> list[tuple[str, dict, Path]]:
    """Each of `files` (named by the user) read and classified; MiniBertError for one that is missing, not JSON or
    not a result, so a mistyped --results fails before any work."""
    out = []
    for f in files:
        f = Path(f)
        if not f.is_file():
            raise MiniBertError(f"--results {f} does not exist (or is not a file)")
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise MiniBertError(f"--results {f} is not JSON ({e})") from None
        found = classify_result(data)
        if not found:
            raise MiniBertError(f"--results {f} is not a result of probe-pos, finetune-sst2 or evaluate (no "
                                f'"task": "pos" / "sst2" and no pos_probe / sst2 section)')
        out += [(kind, r, f) for kind, r in found]
    return out


def find_results(run_dir: Path | None) -> tuple[list[tuple[str, dict, Path]], list[Path]]:
    """The results in RUN-eval/ and RUN-analysis/ beside the run folder, and the folders searched."""
    if run_dir is None:
        return [], []
    searched = [run_dir.parent / f"{run_dir.name}-{name}" for name in RESULT_FOLDERS]
    out = []
    for folder in searched:
        if not folder.is_dir():
            continue
        for f in sorted(folder.glob("*.json")):
            if f.stat().st_size > MAX_RESULT_BYTES:
                continue
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError, OSError):
                continue
            out += [(kind, r, f) for kind, r in classify_result(data)]
    return out, searched


def _pos_view(r: dict, source: Path) -> dict:
    keys = ("trained", "random_init", "control_task", "selectivity")
    return {"source": str(source), "tagset": r.get("tagset"), "num_tags": r.get("num_tags"), "train": r.get("train"),
            "dev": r.get("dev"), "poolings": r.get("poolings", []), "majority_baseline": r.get("majority_baseline"),
            "best": r.get("best"), "checkpoint": r.get("checkpoint"),
            "layers": [{"layer": row.get("layer"), "name": row.get("name"),
                        **{k: row[k] for k in keys if k in row}} for row in r["layers"]]}


def _sst2_view(r: dict, source: Path) -> dict:
    arms = {}
    for key in ("pretrained", "adapted", "random_init"):
        if isinstance(r.get(key), dict):
            arms[key] = {"mean": r[key].get("mean"), "std": r[key].get("std"),
                         "runs": [run.get("dev_accuracy") for run in r[key].get("runs", [])]}
    bow = r.get("bag_of_words") or {}
    return {"source": str(source), "train_set": r.get("train_set", "sentences"), "train_size": r.get("train_size"),
            "dev_size": r.get("dev_size"), "epochs": r.get("epochs"), "seeds": r.get("seeds"),
            "majority_class": r.get("majority_class"), "bag_of_words": bow.get("dev_accuracy"), "arms": arms,
            "adaptation_steps": (r.get("adaptation") or {}).get("steps"), "protocol": r.get("protocol"),
            "checkpoint": r.get("checkpoint")}


# ---------------------------------------------------------------------------------------------------------------
# The page


def report_data(checkpoint, sentence: str | None = None, results=(), seed: int = 0) -> dict:
    """Everything the page shows, as JSON-ready data (the report's page script draws it). sentence: None for the
    sample sentence (shortened to fit a small model); a given sentence that does not fit is a MiniBertError."""
    from ..training.checkpointing import load_checkpoint

    named = load_results(results)
    ck = load_checkpoint(checkpoint, need_tokenizer=True)
    run_dir = run_folder(checkpoint)
    explorer = MathematicalExplorer(ck.model, ck.tokenizer, truncate=False)
    if sentence is None:
        sentence = fitting_sentence(ck.tokenizer, ck.model.config.max_position_embeddings, DEFAULT_TEXT)
    explorer.tokens(sentence)              # a sentence too long for the model fails here, before the rest

    records, dropped = read_metrics(run_dir)
    issues = detect_training_issues(records) if records else []
    monitored = any(k.startswith(("grad_norm/", "dead_units/", "update_ratio", "attention_entropy/"))
                    for r in records for k in r)
    found, searched = find_results(run_dir)
    seen, pos, sst2 = set(), [], []
    for kind, r, source in named + found:          # a file both named and found beside the run is shown once
        key = (kind, str(Path(source).resolve()))
        if key in seen:
            continue
        seen.add(key)
        (pos if kind == "pos" else sst2).append(_pos_view(r, source) if kind == "pos" else _sst2_view(r, source))

    cfg = ck.model.config
    run_name = run_dir.name if run_dir is not None else ck.path.name
    return {
        "title": f"Mini-BERT report: {run_name}",
        "generated": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "version": __version__,
        "checkpoint": str(ck.path),
        "run_dir": None if run_dir is None else str(run_dir),
        "step": ck.trainer_state.get("step"),
        "model": {"layers": cfg.num_layers, "hidden": cfg.hidden_size, "heads": cfg.num_heads,
                  "intermediate": cfg.intermediate_size, "vocab": cfg.vocab_size,
                  "positions": cfg.max_position_embeddings, "norm_position": cfg.norm_position,
                  "activation": cfg.activation, "parameters": ck.model.num_parameters},
        "training": {"corpus": str(ck.config.data.corpus), "max_steps": ck.config.training.max_steps,
                     "batch_size": ck.config.training.batch_size, "seq_len": ck.config.data.max_seq_len,
                     "lr": ck.config.training.lr, "schedule": ck.config.training.schedule},
        "curves": curves(records),
        "metrics": {"records": len(records), "dropped_lines": dropped, "monitored": monitored,
                    "path": None if run_dir is None else str(run_dir / "metrics.jsonl")},
        "issues": [i.to_dict() for i in issues],
        "sentence": sentence,
        "attention": attention_view(explorer, sentence),
        "gradients": gradient_view(explorer, sentence, seed=seed),
        "pos": pos,
        "sst2": sst2,
        "searched": [str(p) for p in searched],
        "commands": {"run": str(run_dir if run_dir is not None else ck.path),
                     "eval_dir": str(searched[0]) if searched else "results"},
    }


def write_report(checkpoint, output=None, sentence: str | None = None, results=(), seed: int = 0) -> Path:
    """Check the output path, build the page and write it (through a temporary file, so a failure leaves any
    earlier report whole). Returns the path written."""
    output = check_output(default_report_path(checkpoint) if output is None else output)
    data = report_data(checkpoint, sentence=sentence, results=results, seed=seed)
    page = render_page(data["title"], "report.js", data)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, output)
    return output
