"""Two training runs at equal wall time: held-out masked accuracy and perplexity at given minutes, and the curves.

    python benchmarks/compare_curves.py RUN_A RUN_B [--labels numpy,torch] [--at 5,10,20,40] [--output fig.png]

RUN_A, RUN_B: metrics.jsonl files (or run folders holding one), as written by `minibert train` and by
benchmarks/reference_torch.py. At each time T (minutes) a run's value is its last evaluation at or before T; "n/a"
when the run stopped before T (its clock never reached T) or had not evaluated yet. A run counts as having reached
T when its last record lies within one logging interval (the median gap between its records) of T: the trainer
logs every log_every steps, so a run stopped by max_minutes=T ends a few seconds after its last record.
The figure (Agg backend) plots valid_masked_acc against minutes and against steps; the table is written as JSON
next to it (fig.png -> fig.json).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

METRICS_FILE = "metrics.jsonl"


class CurvesError(ValueError):
    """A metrics file that cannot be compared; the message names the file and the fix."""


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl (or of a run folder's metrics.jsonl), in file order."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise CurvesError(f"no metrics file at {path}; pass a metrics.jsonl or a run folder that holds one")
    records = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise CurvesError(f"{path}, line {lineno}: not JSON ({e.msg}); was the file cut short?") from None
        if not isinstance(rec, dict) or "step" not in rec or "elapsed_s" not in rec:
            raise CurvesError(f"{path}, line {lineno}: a record needs 'step' and 'elapsed_s'")
        records.append(rec)
    if not records:
        raise CurvesError(f"{path} holds no records; has the run logged anything yet?")
    return records


def evaluations(records: list[dict]) -> list[dict]:
    """The records that carry a held-out evaluation, in time order."""
    return sorted((r for r in records if "valid_masked_acc" in r), key=lambda r: r["elapsed_s"])


def value_at(records: list[dict], minutes: float) -> dict | None:
    """The last evaluation at or before `minutes` of wall time, as {step, minutes, valid_masked_acc,
    valid_perplexity}; None if the run stopped before that time or had not evaluated by then."""
    limit = minutes * 60.0
    if end_seconds(records) < limit:
        return None
    before = [r for r in evaluations(records) if r["elapsed_s"] <= limit]
    return _summary(before[-1]) if before else None


def end_seconds(records: list[dict]) -> float:
    """How far the run's clock is known to have gone: its last record plus one logging interval (the median gap
    between consecutive records), since the run may have stepped on for up to that long without logging."""
    times = sorted(r["elapsed_s"] for r in records)
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    return times[-1] + (gaps[len(gaps) // 2] if gaps else 0.0)


def _summary(rec: dict) -> dict:
    return {"step": rec["step"], "minutes": rec["elapsed_s"] / 60.0,
            "valid_masked_acc": rec["valid_masked_acc"], "valid_perplexity": rec["valid_perplexity"]}


def compare(runs: dict[str, list[dict]], at_minutes: list[float]) -> dict:
    """The table as a dict: per run label, its end (steps, minutes, last evaluation) and its values at each time."""
    table = {"at_minutes": list(at_minutes), "runs": {}}
    for label, records in runs.items():
        evals = evaluations(records)
        last = max(records, key=lambda r: r["elapsed_s"])
        table["runs"][label] = {
            "steps_reached": max(r["step"] for r in records),
            "minutes_reached": last["elapsed_s"] / 60.0,
            "last_evaluation": _summary(evals[-1]) if evals else None,
            "at": {f"{m:g}": value_at(records, m) for m in at_minutes},
        }
    return table


def format_table(table: dict) -> str:
    """Rows of (minutes, run): step of the evaluation used, masked accuracy, perplexity; then where each run ended."""
    labels = list(table["runs"])
    width = max(5, *(len(s) for s in labels))
    lines = [f"{'min':>5}  {'run':<{width}}  {'step':>7}  {'masked acc':>10}  {'perplexity':>10}"]
    for m in table["at_minutes"]:
        for label in labels:
            v = table["runs"][label]["at"][f"{m:g}"]
            if v is None:
                lines.append(f"{m:>5g}  {label:<{width}}  {'n/a':>7}  {'n/a':>10}  {'n/a':>10}")
            else:
                lines.append(f"{m:>5g}  {label:<{width}}  {v['step']:>7}  {v['valid_masked_acc']:>10.4f}  "
                             f"{v['valid_perplexity']:>10.2f}")
    for label in labels:
        r = table["runs"][label]
        end = f"{label}: reached step {r['steps_reached']} in {r['minutes_reached']:.1f} min"
        if r["last_evaluation"] is not None:
            e = r["last_evaluation"]
            end += (f"; last evaluation (step {e['step']}): masked acc {e['valid_masked_acc']:.4f}, "
                    f"perplexity {e['valid_perplexity']:.2f}")
        lines.append(end)
    return "\n".join(lines)


def plot(runs: dict[str, list[dict]], at_minutes: list[float], output: str | Path) -> Path:
    """Two panels: valid_masked_acc vs wall-clock minutes (the times of the table dotted) and vs steps."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_time, by_step) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, records in runs.items():
        evals = evaluations(records)
        by_time.plot([r["elapsed_s"] / 60 for r in evals], [r["valid_masked_acc"] for r in evals],
                     marker=".", label=label)
        by_step.plot([r["step"] for r in evals], [r["valid_masked_acc"] for r in evals], marker=".", label=label)
    for m in at_minutes:
        by_time.axvline(m, color="grey", linestyle=":", linewidth=0.8)
    by_time.set(xlabel="wall-clock minutes", ylabel="held-out masked accuracy", title="At equal wall time")
    by_step.set(xlabel="optimizer steps", ylabel="held-out masked accuracy", title="At equal steps")
    for ax in (by_time, by_step):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    output = Path(output)
    if not output.suffix:
        output = output.with_suffix(".png")
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return output


def parse_minutes(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CurvesError(f"--at {text!r}: give minutes separated by commas, e.g. 5,10,20,40") from None
    if not values or any(v <= 0 for v in values):
        raise CurvesError(f"--at {text!r}: give at least one positive number of minutes, e.g. 5,10,20,40")
    return values


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_a", help="metrics.jsonl (or run folder) of the first run")
    ap.add_argument("run_b", help="metrics.jsonl (or run folder) of the second run")
    ap.add_argument("--labels", default="numpy,torch", help="two names for the runs, comma-separated")
    ap.add_argument("--at", default="5,10,20,40", help="wall-clock minutes to compare at, comma-separated")
    ap.add_argument("--output", default="compare_curves.png", help="the figure; the table goes beside it as .json")
    args = ap.parse_args(argv)
    try:
        labels = [s.strip() for s in args.labels.split(",")]
        if len(labels) != 2 or not all(labels) or labels[0] == labels[1]:
            raise CurvesError(f"--labels {args.labels!r}: give two different names, e.g. numpy,torch")
        minutes = parse_minutes(args.at)
        runs = {labels[0]: read_metrics(args.run_a), labels[1]: read_metrics(args.run_b)}
    except CurvesError as e:
        print(f"compare_curves: {e}", file=sys.stderr)
        return 2
    table = compare(runs, minutes)
    table["sources"] = {labels[0]: str(args.run_a), labels[1]: str(args.run_b)}
    print(format_table(table))
    figure = plot(runs, minutes, args.output)
    table_path = figure.with_suffix(".json")
    table_path.write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
    print(f"figure {figure}, table {table_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
