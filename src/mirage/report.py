"""``mirage-report``: evaluation and training run folders -> one table (Markdown, CSV) and plots (PNG).

    mirage-report logs/eval/multiruns/<ts>            # every job of a sweep
    mirage-report logs/eval/runs/a logs/eval/runs/b --labels SFT,NPO --out reports/table1

It finds evaluation runs (a ``metrics.json`` of cases, as ``mirage-eval`` writes) and training runs
(``csv/metrics.csv``) below the given folders. When the runs hold the paper's four cases
(``plain_asr``, ``what3_asr``, ``plain_rr``, ``share1_rr``) the table is laid out like the Safety Mirage
paper's Table 1 (ASR and RR before -> after the one-word attacks) plus the ASR / IR / RR parts;
otherwise it lists every case's ASR / IR / RR.

With two or more evaluation runs that share cases, a "paired comparisons" section compares every run
with the first (``--baseline <label>`` picks another) on the answers both gave (each case's
``judged.jsonl``), metric by metric: rates, difference with its 95% CI, a paired p-value (exact McNemar,
or a cluster sign-flip test where answers share a question or an image), Holm-adjusted over the whole
report (``mirage.evaluation.statistics``); also in ``report_pairs.csv``.
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


PAIR_FIELDS = (
    "baseline", "run", "case", "metric", "unit", "pairs", "clusters", "only_baseline", "only_run",
    "rate_baseline", "rate_baseline_lo", "rate_baseline_hi", "rate_run", "rate_run_lo", "rate_run_hi",
    "difference", "difference_lo", "difference_hi", "naive_difference_lo", "naive_difference_hi",
    "discordant_baseline_only", "discordant_run_only", "test", "p_value", "p_holm", "significant",
)  # fmt: skip


def paired_comparisons(
    evals: list[Path], labels: list[str], baseline: str | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every run against the baseline (the first run, or the one labelled ``baseline``), per shared case
    and metric, on their paired answers, Holm-adjusted over all of them: (rows for report_pairs.csv,
    notes on what was left out)."""
    from mirage.evaluation.statistics import compare_case, holm_adjust, read_judged

    if baseline is None:
        base = 0
    elif labels.count(baseline) == 1:
        base = labels.index(baseline)
    else:
        why = "several runs have it" if baseline in labels else "no run has it"
        raise ValueError(f"--baseline {baseline!r}: {why}; the runs are {labels}")
    judged: dict[Path, list[dict[str, Any]]] = {}

    def records(path: Path) -> list[dict[str, Any]]:
        if path not in judged:
            judged[path] = read_judged(path)
        return judged[path]

    cases = [list(json.loads((run / "metrics.json").read_text())) for run in evals]
    found, notes = [], []
    for index, run in enumerate(evals):
        for case in [c for c in cases[base] if c in cases[index]] if index != base else []:
            paths = (evals[base] / case / "judged.jsonl", run / case / "judged.jsonl")
            missing = [str(path) for path in paths if not path.is_file()]
            if missing:
                notes.append(f"{labels[index]} / {case}: not compared, no {' or '.join(missing)}")
                continue
            try:
                results, skipped = compare_case(*map(records, paths), case, tuple(map(str, paths)))
            except ValueError as err:
                raise ValueError(f"{err} (mirage-report --no-pairs leaves comparisons out)") from None
            found += [(labels[index], result) for result in results]
            notes += [f"{labels[index]} / {note}" for note in skipped]
    holm_adjust([result for _, result in found])
    rows = []
    for label, c in found:
        values = (
            labels[base], label, c.case, c.metric, c.unit, c.pairs, c.clusters, c.only_a, c.only_b,
            c.rate_a, *c.rate_a_ci, c.rate_b, *c.rate_b_ci, c.difference, *c.difference_ci,
            *c.naive_difference_ci, c.a_only_success, c.b_only_success, c.test, c.p_value, c.p_holm,
            "yes" if c.significant else "no",
        )  # fmt: skip
        rows.append(dict(zip(PAIR_FIELDS, values, strict=True)))
    return rows, notes


def pairs_table(rows: list[dict[str, Any]], notes: list[str]) -> str:
    """The "paired comparisons" section of report.md."""
    if not rows and not notes:
        return ""
    lines = ["## paired comparisons", ""]
    if rows:
        lines += [
            f"Every run against **{rows[0]['baseline']}** on the units both have (answers; questions for "
            "K-shot ASR), in %. Difference = run - baseline with its 95% CI. p: exact McNemar test, or, "
            "where answers share a question or an image, a cluster sign-flip test with cluster-robust "
            f"intervals. Holm-adjusted over all {len(rows)} tests of this report; "
            "significant = Holm p < 0.05.",
            "",
            "| run | case | metric | pairs (clusters) | unpaired base / run | baseline [95% CI] "
            "| run [95% CI] | difference [95% CI] | test | p | Holm p | significant |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]

        def interval(row: dict[str, Any], name: str) -> str:
            low, high = row[f"{name}_lo"], row[f"{name}_hi"]
            return f"{100 * row[name]:.1f} [{100 * low:.1f}, {100 * high:.1f}]"

        for r in rows:
            lines.append(
                f"| {r['run']} | {r['case']} | {r['metric']} | {r['pairs']} ({r['clusters']}) "
                f"| {r['only_baseline']} / {r['only_run']} | {interval(r, 'rate_baseline')} "
                f"| {interval(r, 'rate_run')} | {interval(r, 'difference')} | {r['test']} "
                f"| {r['p_value']:.3g} | {r['p_holm']:.3g} | {r['significant']} |"
            )
    if notes:
        lines += ["", *[f"- {note}" for note in notes]]
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
    roots: list[str | Path],
    out_dir: str | Path,
    labels: list[str] | None = None,
    baseline: str | None = None,
    pairs: bool = True,
) -> dict[str, Path]:
    """Write report.md, report.csv, report.png (and loss_curves.png) into ``out_dir``; with ``pairs`` and
    two or more evaluation runs sharing cases, also report_pairs.csv (every run against ``baseline``)."""
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
        pair_rows, notes = (
            paired_comparisons(evals, resolve_labels(evals, labels), baseline) if pairs else ([], [])
        )
        if pair_rows:
            written["pairs_csv"] = out_dir / "report_pairs.csv"
            with open(written["pairs_csv"], "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=PAIR_FIELDS)
                writer.writeheader()
                writer.writerows(pair_rows)
        compared = pairs_table(pair_rows, notes)
        written["md"].write_text(
            "# mirage report\n\n"
            + markdown_table(rows)
            + ("\n" + sweep if sweep else "")
            + ("\n" + compared if compared else "")
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
    parser.add_argument(
        "--baseline", help="the label of the run the others are compared with (default: first)"
    )
    parser.add_argument("--no-pairs", action="store_true", help="leave out the paired comparisons")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    labels = args.labels.split(",") if args.labels else None
    written = make_report(args.runs, args.out, labels, baseline=args.baseline, pairs=not args.no_pairs)
    if "md" in written:
        print(written["md"].read_text())
    for kind, path in written.items():
        print(f"{kind}: {path}")


if __name__ == "__main__":
    main()
