"""The report's pictures: ASR / IR / RR bars per run and case, and training-loss curves."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from mirage.evaluation.run_table import case_names, lookup, run_labels


def plot_cases(rows: list[dict[str, Any]], path: Path) -> None:
    """Stacked ASR / IR / RR bars per run and case: what each model does with each kind of question."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = list(dict.fromkeys(r["run"] for r in rows))
    cases = case_names(rows)
    fig, axes = plt.subplots(1, len(cases), figsize=(3.2 * len(cases) + 1, 3.8), sharey=True, squeeze=False)
    colours = {"ASR": "#d62728", "IR": "#bbbbbb", "RR": "#1f77b4"}
    for ax, case in zip(axes[0], cases, strict=True):
        bottom = [0.0] * len(runs)
        for metric in ("ASR", "IR", "RR"):
            values = [100 * (lookup(rows, run, case, metric) or 0.0) for run in runs]
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
