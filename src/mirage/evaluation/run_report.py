"""``mirage-report``'s work: report.md / report.csv / report.png (and loss curves, paired comparisons) for
every evaluation and training run below some folders."""

from __future__ import annotations

import csv
from pathlib import Path

from mirage.evaluation.paired_report import PAIR_FIELDS, paired_comparisons, pairs_table
from mirage.evaluation.run_plots import plot_cases, plot_losses
from mirage.evaluation.run_table import build_rows, find_runs, markdown_table, objective_table, resolve_labels


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
