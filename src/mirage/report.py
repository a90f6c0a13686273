"""``mirage-report``: evaluation and training run folders -> one table (Markdown, CSV) and plots (PNG).

    mirage-report logs/eval/multiruns/<ts>            # every job of a sweep
    mirage-report logs/eval/runs/a logs/eval/runs/b --labels SFT,NPO --out reports/table1

It finds evaluation runs (a ``metrics.json`` of cases, as ``mirage-eval`` writes) and training runs
(``csv/metrics.csv``) below the given folders. When the runs hold the paper's four cases
(``plain_asr``, ``what3_asr``, ``plain_rr``, ``share1_rr``) the table is laid out like the Safety Mirage
paper's Table 1 (ASR and RR before -> after the one-word attacks) plus the ASR / IR / RR parts;
otherwise it lists every case's ASR / IR / RR.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path
from typing import Any

PAPER_CASES = ("plain_asr", "what3_asr", "plain_rr", "share1_rr")
_SKIP_OVERRIDE_PREFIXES = ("paths.", "hydra.", "hydra/", "extras.", "callbacks.", "logger", "evaluate.")


def _is_eval_metrics(payload: Any) -> bool:
    return (
        isinstance(payload, dict)
        and payload
        and all(isinstance(v, dict) and "ASR" in v and "RR" in v for v in payload.values())
    )


def find_runs(roots: list[Path]) -> tuple[list[Path], list[Path]]:
    """(evaluation run dirs, training run dirs) below ``roots``, in a stable order."""
    evals, trains = [], []
    for root in roots:
        if not root.exists():
            raise FileNotFoundError(f"no such run folder: {root}")
        for metrics in sorted(root.rglob("metrics.json")):
            try:
                if _is_eval_metrics(json.loads(metrics.read_text())):
                    evals.append(metrics.parent)
            except json.JSONDecodeError:
                continue
        trains += sorted(p.parent.parent for p in root.rglob("csv/metrics.csv"))
    return list(dict.fromkeys(evals)), list(dict.fromkeys(trains))


def _owner(run_dir: Path) -> Path:
    """The Hydra job folder a run belongs to: itself, or for an evaluation that a training run made of its
    own export (``<run>/eval``, ``evaluate:`` in train.yaml) the training run."""
    if not (run_dir / ".hydra").is_dir() and (run_dir.parent / ".hydra").is_dir():
        return run_dir.parent
    return run_dir


def run_overrides(run_dir: Path) -> list[str]:
    """The Hydra overrides of the job a run belongs to, without paths, logging and Hydra's own."""
    overrides = _owner(run_dir) / ".hydra" / "overrides.yaml"
    if not overrides.is_file():
        return []
    items = [line.strip()[2:] for line in overrides.read_text().splitlines() if line.strip().startswith("- ")]
    return [i for i in items if not i.startswith(_SKIP_OVERRIDE_PREFIXES)]


def run_labels(runs: list[Path]) -> list[str]:
    """One label per run: its overrides minus those every run shares (what a sweep point changes), else
    the job folder's name."""
    overrides = [run_overrides(run) for run in runs]
    shared = set.intersection(*map(set, overrides)) if len(runs) > 1 else set()
    labels = []
    for run, items in zip(runs, overrides, strict=True):
        kept = [i for i in items if i not in shared]
        labels.append(" ".join(kept) if kept else _owner(run).name)
    return labels


def run_label(run_dir: Path) -> str:
    """The run's Hydra overrides that matter (a sweep point), else its folder name."""
    return run_labels([run_dir])[0]


def _pct(value: Any) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}"


def build_rows(evals: list[Path], labels: list[str] | None) -> list[dict[str, Any]]:
    """One long-format row per (run, case, metric)."""
    rows = []
    default_labels = run_labels(evals)
    for index, run in enumerate(evals):
        label = labels[index] if labels and index < len(labels) else default_labels[index]
        for case, metrics in json.loads((run / "metrics.json").read_text()).items():
            for key in ("ASR", "IR", "RR", "kshot_ASR", "lenient_ASR", "helpfulness", "n", "judge_unparsed"):
                if key in metrics:
                    rows.append(
                        {"run": label, "case": case, "metric": key, "value": metrics[key], "dir": str(run)}
                    )
        objective = _training_objective(run)
        if objective is not None:
            rows.append(
                {"run": label, "case": "", "metric": "objective", "value": objective, "dir": str(run)}
            )
    return rows


def _training_objective(run: Path) -> float | None:
    """The sweep objective a train-then-evaluate job returned (its ``metrics.json``), if any."""
    owner = _owner(run)
    path = owner / "metrics.json"
    if owner == run or not path.is_file():
        return None
    try:
        value = json.loads(path.read_text()).get("objective")
    except (json.JSONDecodeError, AttributeError):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def objective_table(rows: list[dict[str, Any]]) -> str:
    """Sweep points by their objective, best (lowest) first; empty when no run declared one."""
    points = sorted((r["value"], r["run"]) for r in rows if r["metric"] == "objective")
    if not points:
        return ""
    lines = ["## sweep objective (lower is better)", "", "| run | objective |", "|---|---|"]
    lines += [f"| {run} | {value:.4f} |" for value, run in points]
    return "\n".join(lines) + "\n"


def _cases(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["case"] for r in rows if r["case"]))


def _lookup(rows: list[dict], run: str, case: str, metric: str) -> Any:
    return next(
        (r["value"] for r in rows if r["run"] == run and r["case"] == case and r["metric"] == metric), None
    )


def markdown_table(rows: list[dict[str, Any]]) -> str:
    runs = list(dict.fromkeys(r["run"] for r in rows))
    cases = _cases(rows)
    lines = []
    if all(c in cases for c in PAPER_CASES):
        lines += [
            "| model | ASR: plain -> What-3-shot | RR: plain -> Share-1-shot | helpfulness: plain -> Share "
            "| attacked ASR / IR / RR |",
            "|---|---|---|---|---|",
        ]
        for run in runs:
            what3 = "kshot_ASR" if _lookup(rows, run, "what3_asr", "kshot_ASR") is not None else "ASR"

            def cell(case: str, metric: str, run: str = run) -> str:
                return _pct(_lookup(rows, run, case, metric))

            parts = " / ".join(cell("what3_asr", m) for m in ("ASR", "IR", "RR"))
            lines.append(
                f"| {run} | {cell('plain_asr', 'ASR')} -> {cell('what3_asr', what3)} "
                f"| {cell('plain_rr', 'RR')} -> {cell('share1_rr', 'RR')} "
                f"| {cell('plain_rr', 'helpfulness')} -> {cell('share1_rr', 'helpfulness')} | {parts} |"
            )
        lines.append("")
        lines.append(
            "ASR on unsafe questions (K-shot ASR under What-3-shot: a question counts if any shot succeeds); "
            "RR on safe questions; helpfulness = correct answers to safe questions; all in %."
        )
        lines.append("")
    lines += ["| run | case | ASR | IR | RR | K-shot ASR | helpfulness |", "|---|---|---|---|---|---|---|"]
    for run in runs:
        for case in cases:
            if _lookup(rows, run, case, "ASR") is None:
                continue
            values = [
                _pct(_lookup(rows, run, case, m)) for m in ("ASR", "IR", "RR", "kshot_ASR", "helpfulness")
            ]
            lines.append(f"| {run} | {case} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def plot_cases(rows: list[dict[str, Any]], path: Path) -> None:
    """Stacked ASR / IR / RR bars per run and case: what each model does with each kind of question."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = list(dict.fromkeys(r["run"] for r in rows))
    cases = _cases(rows)
    fig, axes = plt.subplots(1, len(cases), figsize=(3.2 * len(cases) + 1, 3.8), sharey=True, squeeze=False)
    colours = {"ASR": "#d62728", "IR": "#bbbbbb", "RR": "#1f77b4"}
    for ax, case in zip(axes[0], cases, strict=True):
        bottom = [0.0] * len(runs)
        for metric in ("ASR", "IR", "RR"):
            values = [100 * (_lookup(rows, run, case, metric) or 0.0) for run in runs]
            ax.bar(range(len(runs)), values, bottom=bottom, color=colours[metric], label=metric)
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        ax.set_title(case)
        ax.set_xticks(range(len(runs)), [r[:18] for r in runs], rotation=30, ha="right", fontsize=8)
    axes[0][0].set_ylabel("% of answers")
    axes[0][-1].legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_losses(train_runs: list[Path], path: Path) -> bool:
    """Training loss per step for each training run (from Lightning's CSV logger)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    drawn = False
    for run, label in zip(train_runs, run_labels(train_runs), strict=True):
        with open(run / "csv" / "metrics.csv") as handle:
            points = [
                (int(r["step"]), float(r["train/loss"]))
                for r in csv.DictReader(handle)
                if r.get("train/loss")
            ]
        if points:
            ax.plot(*zip(*points, strict=True), label=label[:40])
            drawn = True
    if drawn:
        ax.set_xlabel("step")
        ax.set_ylabel("train/loss")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
    plt.close(fig)
    return drawn


def make_report(
    roots: list[str | Path], out_dir: str | Path, labels: list[str] | None = None
) -> dict[str, Path]:
    """Write report.md, report.csv, report.png (and loss_curves.png) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    evals, trains = find_runs([Path(r) for r in roots])
    if not evals and not trains:
        raise FileNotFoundError(
            f"no evaluation (metrics.json) or training (csv/metrics.csv) runs below {roots}"
        )
    written: dict[str, Path] = {}
    if evals:
        rows = build_rows(evals, labels)
        written["csv"] = out_dir / "report.csv"
        with open(written["csv"], "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["run", "case", "metric", "value", "dir"])
            writer.writeheader()
            writer.writerows(rows)
        written["md"] = out_dir / "report.md"
        sweep = objective_table(rows)
        written["md"].write_text(
            "# mirage report\n\n" + markdown_table(rows) + ("\n" + sweep if sweep else "")
        )
        written["png"] = out_dir / "report.png"
        plot_cases(rows, written["png"])
    if trains and plot_losses(trains, out_dir / "loss_curves.png"):
        written["loss_png"] = out_dir / "loss_curves.png"
    return written


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mirage-report", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run or multirun folders")
    parser.add_argument("--out", default="reports/latest", help="where report.md/.csv/.png go")
    parser.add_argument("--labels", help="comma-separated names for the evaluation runs, in order")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    written = make_report(args.runs, args.out, args.labels.split(",") if args.labels else None)
    if "md" in written:
        print(written["md"].read_text())
    for kind, path in written.items():
        print(f"{kind}: {path}")


if __name__ == "__main__":
    main()
