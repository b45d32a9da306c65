"""Training runs at equal wall time (or at equal steps): held-out masked accuracy and perplexity, and the curves.

    python benchmarks/compare_curves.py RUN_A RUN_B [RUN ...] [--labels numpy,torch] [--at 5,10,20,40]
                                        [--at-steps 1000,3000] [--hold-final] [--mean-of numpy,torch]
                                        [--output fig.png]

RUN_A, RUN_B, ...: metrics.jsonl files (or run folders holding one), as written by `minibert train` and by
benchmarks/reference_torch.py. Labels default to numpy,torch for two runs and to the folder names for more.
--at-steps adds the comparison at equal steps (the one that stays fair when the machine was shared): a run's
value at step N is its last evaluation at or before N, "n/a" when it never got that far.
At each time T (minutes) a run's value is its last evaluation at or before T; "n/a" when the run stopped before T
(its clock never reached T) or had not evaluated yet. A run counts as having reached T when its last record lies
within one logging interval (the median gap between its records) of T: the trainer logs every log_every steps,
so a run stopped by max_minutes=T ends a few seconds after its last record.
--hold-final lets a run that ended before a time (it finished its schedule sooner) count there with its final
evaluation, marked "final"; without it such a run is "n/a" there.
--mean-of GROUP,GROUP averages seeds: each run belongs to the group its label starts with (labels np-s0 and
np-s1 to group np), and at each time and step the table adds each group's mean masked accuracy and perplexity,
and the first group's mean minus the second's. A mean is "n/a" where any of its runs is.
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


def value_at(records: list[dict], minutes: float, hold_final: bool = False) -> dict | None:
    """The last evaluation at or before `minutes` of wall time, as {step, minutes, valid_masked_acc,
    valid_perplexity}; None if the run had not evaluated by then, or stopped before that time. With hold_final, a
    run that stopped before then (having finished its schedule) keeps its last evaluation, marked "final": True."""
    limit = minutes * 60.0
    if end_seconds(records) < limit:
        evals = evaluations(records)
        return {**_summary(evals[-1]), "final": True} if hold_final and evals else None
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


def value_at_step(records: list[dict], step: int) -> dict | None:
    """The last evaluation at or before `step`; None if the run never evaluated at or past that step."""
    evals = evaluations(records)
    if not evals or max(r["step"] for r in evals) < step:
        return None
    before = [r for r in evals if r["step"] <= step]
    return _summary(max(before, key=lambda r: r["step"])) if before else None


def compare(runs: dict[str, list[dict]], at_minutes: list[float], at_steps: list[int] = (),
            hold_final: bool = False) -> dict:
    """The table as a dict: per run label, its end (steps, minutes, last evaluation) and its values at each time
    (and at each step of `at_steps`); hold_final as in `value_at`."""
    table = {"at_minutes": list(at_minutes), "at_steps": list(at_steps), "runs": {}}
    for label, records in runs.items():
        evals = evaluations(records)
        last = max(records, key=lambda r: r["elapsed_s"])
        table["runs"][label] = {
            "steps_reached": max(r["step"] for r in records),
            "minutes_reached": last["elapsed_s"] / 60.0,
            "last_evaluation": _summary(evals[-1]) if evals else None,
            "at": {f"{m:g}": value_at(records, m, hold_final) for m in at_minutes},
            "at_step": {str(n): value_at_step(records, n) for n in at_steps},
        }
    return table


def group_runs(labels: list[str], groups: list[str]) -> dict[str, list[str]]:
    """{group: the labels that start with it}, every label in exactly one group, every group with a run; {} when
    no group is given."""
    if not groups:
        return {}
    members = {g: [label for label in labels if label.startswith(g)] for g in groups}
    for label in labels:
        owners = [g for g in groups if label.startswith(g)]
        if len(owners) != 1:
            raise CurvesError(f"--mean-of: run {label!r} starts {'none' if not owners else 'more than one'} of the "
                              f"groups {', '.join(groups)}; label the runs so that each starts with exactly one")
    empty = [g for g, m in members.items() if not m]
    if empty:
        raise CurvesError(f"--mean-of: no run's label starts with {', '.join(empty)}")
    return members


def group_means(table: dict, groups: dict[str, list[str]]) -> dict:
    """Per time ("at") and per step ("at_step"): each group's mean masked accuracy and perplexity over its runs
    (None where any run has no value), and "difference": the first group's mean accuracy minus the second's."""
    def mean_of(key: str, at: str) -> dict:
        out = {}
        for g, labels in groups.items():
            values = [table["runs"][label][key][at] for label in labels]
            out[g] = None if any(v is None for v in values) else {
                "runs": len(values),
                "valid_masked_acc": sum(v["valid_masked_acc"] for v in values) / len(values),
                "valid_perplexity": sum(v["valid_perplexity"] for v in values) / len(values)}
        first, second = (list(out.values()) + [None, None])[:2]
        out["difference"] = (None if first is None or second is None
                             else first["valid_masked_acc"] - second["valid_masked_acc"])
        return out

    return {"groups": groups,
            "at": {f"{m:g}": mean_of("at", f"{m:g}") for m in table["at_minutes"]},
            "at_step": {str(n): mean_of("at_step", str(n)) for n in table["at_steps"]}}


def format_means(means: dict) -> str:
    """The group means as rows: where, then each group's mean accuracy (perplexity), then the difference."""
    groups = list(means["groups"])
    lines = [f"mean of seeds: {'; '.join(f'{g} = {len(m)} run(s)' for g, m in means['groups'].items())}"]

    def cell(v):
        return "n/a" if v is None else f"{v['valid_masked_acc']:.4f} ({v['valid_perplexity']:.1f})"

    for unit, key in (("min", "at"), ("step", "at_step")):
        for at, row in means[key].items():
            diff = row["difference"]
            lines.append(f"{unit} {at:>6}  " + "  ".join(f"{g}: {cell(row[g])}" for g in groups)
                         + ("" if len(groups) < 2 else
                            f"  {groups[0]} - {groups[1]}: {'n/a' if diff is None else f'{100 * diff:+.2f} points'}"))
    return "\n".join(lines)


def format_table(table: dict) -> str:
    """Rows of (minutes, run): step of the evaluation used, masked accuracy, perplexity; then where each run ended."""
    labels = list(table["runs"])
    width = max(5, *(len(s) for s in labels))
    lines = [f"{'min':>5}  {'run':<{width}}  {'step':>7}  {'masked acc':>10}  {'perplexity':>10}"]

    def row(at, label, v):
        if v is None:
            return f"{at:>5}  {label:<{width}}  {'n/a':>7}  {'n/a':>10}  {'n/a':>10}"
        return (f"{at:>5}  {label:<{width}}  {v['step']:>7}  {v['valid_masked_acc']:>10.4f}  "
                f"{v['valid_perplexity']:>10.2f}" + ("  (final: the run had ended)" if v.get("final") else ""))

    for m in table["at_minutes"]:
        lines += [row(f"{m:g}", label, table["runs"][label]["at"][f"{m:g}"]) for label in labels]
    if table.get("at_steps"):
        lines.append(f"{'step':>7}  {'run':<{width}}  {'minutes':>7}  {'masked acc':>10}  {'perplexity':>10}")
        for n in table["at_steps"]:
            for label in labels:
                v = table["runs"][label]["at_step"][str(n)]
                lines.append(f"{n:>7}  {label:<{width}}  " + (f"{'n/a':>7}  {'n/a':>10}  {'n/a':>10}" if v is None else
                             f"{v['minutes']:>7.1f}  {v['valid_masked_acc']:>10.4f}  {v['valid_perplexity']:>10.2f}"))
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


def parse_steps(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise CurvesError(f"--at-steps {text!r}: give whole step numbers separated by commas, e.g. 1000,3000") from None
    if any(v <= 0 for v in values):
        raise CurvesError(f"--at-steps {text!r}: steps must be positive, e.g. 1000,3000")
    return values


def run_labels(text: str | None, paths: list[str]) -> list[str]:
    """--labels, or numpy,torch for two runs and the runs' folder names for more."""
    if text is None:
        text = "numpy,torch" if len(paths) == 2 else ",".join(
            (Path(p).parent if Path(p).suffix == ".jsonl" else Path(p)).name for p in paths)
    labels = [s.strip() for s in text.split(",")]
    if len(labels) != len(paths) or not all(labels) or len(set(labels)) != len(labels):
        raise CurvesError(f"--labels {text!r}: give {len(paths)} different names, one per run, comma-separated")
    return labels


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="metrics.jsonl files (or run folders), two or more")
    ap.add_argument("--labels", default=None, help="one name per run, comma-separated (default: numpy,torch for "
                                                   "two runs, the folder names for more)")
    ap.add_argument("--at", default="5,10,20,40", help="wall-clock minutes to compare at, comma-separated")
    ap.add_argument("--at-steps", default="", help="also compare at these steps, comma-separated")
    ap.add_argument("--hold-final", action="store_true", help="a run that ended before a time counts there with "
                                                              "its final evaluation")
    ap.add_argument("--mean-of", default="", help="average the runs whose labels start with each of these, "
                                                  "comma-separated (seeds of one recipe)")
    ap.add_argument("--output", default="compare_curves.png", help="the figure; the table goes beside it as .json")
    args = ap.parse_args(argv)
    try:
        if len(args.runs) < 2:
            raise CurvesError("give at least two runs to compare")
        labels = run_labels(args.labels, args.runs)
        minutes = parse_minutes(args.at)
        steps = parse_steps(args.at_steps)
        groups = group_runs(labels, [g.strip() for g in args.mean_of.split(",") if g.strip()])
        runs = {label: read_metrics(path) for label, path in zip(labels, args.runs)}
    except CurvesError as e:
        print(f"compare_curves: {e}", file=sys.stderr)
        return 2
    table = compare(runs, minutes, steps, args.hold_final)
    table["sources"] = dict(zip(labels, args.runs))
    print(format_table(table))
    if groups:
        table["means"] = group_means(table, groups)
        print(format_means(table["means"]))
    figure = plot(runs, minutes, args.output)
    table_path = figure.with_suffix(".json")
    table_path.write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
    print(f"figure {figure}, table {table_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
