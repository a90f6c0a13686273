"""The paired comparisons section of a report: every run against a baseline on the answers both gave
(``mirage.evaluation.statistics``), Holm-adjusted over the whole report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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
