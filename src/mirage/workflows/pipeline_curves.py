"""The report's "Watching the mirage form": the safety curves that stages recorded while they trained.

A stage trained with ``curves.experiment`` set (e.g. the demo's SFT and unlearning stages) leaves
``curves.jsonl`` in its folder (:mod:`mirage.evaluation.curves`). For every evaluated model that has one,
``curves.png`` plots attacked (What-3-shot) ASR, Share-1-shot RR and plain utility against the stage's
training step, and ``report.md`` gets a table of each curve's start, end and maximum during training (after
step 0): a mirage that decays away before the end of training shows as an end far below the maximum.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mirage.evaluation.formatting import percent
from mirage.workflows.curves import CURVES_FILE

#: (panel title, case, metric) of the plot and the table.
PANELS = (
    ("What-3-shot ASR (attacked)", "what3_asr", "kshot_ASR"),
    ("Share-1-shot RR (attacked)", "share1_rr", "RR"),
    ("plain ASR", "plain_asr", "ASR"),
    ("utility (plain safe questions)", "plain_rr", "helpfulness"),
)


def read_curves(stage_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """``{"<case>/<metric>": [(step, value), ...]}`` from a stage's ``curves.jsonl`` ({} when it has none)."""
    path = Path(stage_dir) / CURVES_FILE
    if not path.exists():
        return {}
    series: dict[str, dict[int, float]] = {}
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        for key, value in row["metrics"].items():
            name = key.split("/", 1)[1]  # drop the prefix ("curves/")
            series.setdefault(name, {})[int(row["step"])] = float(value)  # a resumed run's repeat wins
    return {name: sorted(points.items()) for name, points in series.items()}


def curves_summary(curves: dict[str, dict[str, list[tuple[int, float]]]]) -> dict[str, float]:
    """``<model>/curve_<case>_<metric>_{start,end,max,max_step}`` for every model and panel. The maximum is
    over the points after step 0: the starting model (the stage's parent) is not the stage's training."""
    out: dict[str, float] = {}
    for model, series in curves.items():
        for _, case, metric in PANELS:
            points = series.get(f"{case}/{metric}")
            if not points:
                continue
            trained = [p for p in points if p[0] > 0] or points
            step, peak = max(trained, key=lambda p: (p[1], -p[0]))
            key = f"{model}/curve_{case}_{metric}"
            if points[0][0] == 0:
                out[f"{key}_start"] = points[0][1]
            out.update({f"{key}_end": points[-1][1], f"{key}_max": peak, f"{key}_max_step": float(step)})
    return out


def curves_markdown(curves: dict[str, Any], labels: dict[str, str]) -> str:
    """The end of each curve against its maximum over training (%), one row per model."""
    summary = curves_summary(curves)
    head = (
        "| model | steps | "
        + " | ".join(f"{title}: start -> end (max, step)" for title, _, _ in PANELS)
        + " |"
    )
    lines = [head, "|" + "---|" * (len(PANELS) + 2)]
    for model, series in curves.items():
        cells = []
        for _, case, metric in PANELS:
            key = f"{model}/curve_{case}_{metric}"
            if f"{key}_end" not in summary:
                cells.append("-")
                continue
            end, peak, at = summary[f"{key}_end"], summary[f"{key}_max"], int(summary[f"{key}_max_step"])
            start = percent(summary[f"{key}_start"]) if f"{key}_start" in summary else "-"
            cells.append(f"{start} -> {percent(end)} ({percent(peak)}, {at})")
        last = max(step for points in series.values() for step, _ in points)
        lines.append(f"| {labels.get(model, model)} | {last} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_curves(curves: dict[str, Any], labels: dict[str, str], path: Path) -> Path:
    """One panel per (case, metric), one line per model, against the model's own training step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.6), sharey=True)
    colours = plt.get_cmap("tab10")
    for index, (model, series) in enumerate(curves.items()):
        for ax, (title, case, metric) in zip(axes, PANELS, strict=True):
            points = series.get(f"{case}/{metric}") or []
            if points:
                steps, values = zip(*points, strict=True)
                label = labels.get(model, model)
                ax.plot(steps, [100 * v for v in values], marker=".", color=colours(index), label=label)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("training step of the stage")
            ax.set_ylim(-3, 103)
            ax.grid(alpha=0.3)
    axes[0].set_ylabel("%")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_curves(
    stage_dirs: dict[str, Path], models: list[str], labels: dict[str, str], out_dir: Path
) -> dict[str, float]:
    """``curves.png`` and a "Watching the mirage form" section appended to ``report.md``, for the models whose
    stage recorded curves; returns the summary (``{}`` when none did)."""
    curves = {m: series for m in models if (series := read_curves(stage_dirs[m]))}
    if not curves:
        return {}
    plot_curves(curves, labels, out_dir / "curves.png")
    section = (
        "\n## Watching the mirage form: safety during training\n\n"
        "A fixed subset of each case asked every few optimizer steps of each stage (curves.png). "
        "Each cell: the stage's starting model -> the end of training (the maximum after step 0, its step). "
        "A mirage that decays away before the end of training shows as an end far below that maximum.\n\n"
        + curves_markdown(curves, labels)
        + "\n![curves](curves.png)\n"
    )
    report = out_dir / "report.md"
    report.write_text(report.read_text() + section)
    summary = curves_summary(curves)
    (out_dir / "curves.json").write_text(json.dumps({"curves": curves, "summary": summary}, indent=1))
    return summary
