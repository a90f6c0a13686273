"""Evaluation and training run folders -> one long table: finding runs, labelling them by what their
sweep point changes, the Markdown table (laid out like the paper's Table 1 when the four cases are there)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mirage.evaluation.formatting import percent

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


def resolve_labels(evals: list[Path], labels: list[str] | None) -> list[str]:
    """The label of every evaluation run: the one given, else :func:`run_labels`'s."""
    default_labels = run_labels(evals)
    return [labels[i] if labels and i < len(labels) else default for i, default in enumerate(default_labels)]


def build_rows(evals: list[Path], labels: list[str] | None) -> list[dict[str, Any]]:
    """One long-format row per (run, case, metric)."""
    rows = []
    for run, label in zip(evals, resolve_labels(evals, labels), strict=True):
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


def case_names(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(r["case"] for r in rows if r["case"]))


def lookup(rows: list[dict], run: str, case: str, metric: str) -> Any:
    return next(
        (r["value"] for r in rows if r["run"] == run and r["case"] == case and r["metric"] == metric), None
    )


def markdown_table(rows: list[dict[str, Any]]) -> str:
    runs = list(dict.fromkeys(r["run"] for r in rows))
    cases = case_names(rows)
    lines = []
    if all(c in cases for c in PAPER_CASES):
        lines += [
            "| model | ASR: plain -> What-3-shot | RR: plain -> Share-1-shot | helpfulness: plain -> Share "
            "| attacked ASR / IR / RR |",
            "|---|---|---|---|---|",
        ]
        for run in runs:
            what3 = "kshot_ASR" if lookup(rows, run, "what3_asr", "kshot_ASR") is not None else "ASR"

            def cell(case: str, metric: str, run: str = run) -> str:
                return percent(lookup(rows, run, case, metric))

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
            if lookup(rows, run, case, "ASR") is None:
                continue
            values = [
                percent(lookup(rows, run, case, m)) for m in ("ASR", "IR", "RR", "kshot_ASR", "helpfulness")
            ]
            lines.append(f"| {run} | {case} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"
