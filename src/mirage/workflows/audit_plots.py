"""The audit's plots: ASR against relearning steps, ASR under each probe, ASR against the PGD budget.
Error bars are the Wilson 95% intervals of each rate."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

ASR_CASE = "plain_asr"


def _asr(row: dict[str, Any]) -> tuple[float, float, float] | None:
    """(ASR, lower error, upper error) in %, or None when the variant has no plain ASR."""
    metrics = row["results"].get(ASR_CASE) or {}
    value = metrics.get("ASR")
    if not isinstance(value, (int, float)) or math.isnan(value):
        return None
    low, high = metrics.get("ASR_ci95") or (value, value)
    return 100 * value, 100 * (value - low), 100 * (high - value)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_relearn(audited: dict[str, dict[str, dict]], path: Path) -> Path | None:
    """ASR against relearning steps: one colour per model, one line style per relearning data."""
    plt = _pyplot()
    series: dict[tuple[str, str], list[tuple[int, tuple[float, float, float]]]] = {}
    for model, rows in audited.items():
        baseline = _asr(next(iter(rows.values())))
        for row in rows.values():
            params = row["params"]
            if row["probe"] != "relearn" or "steps" not in params:
                continue
            point, key = _asr(row), (model, str(params["data"]))
            if key not in series and baseline is not None:
                series[key] = [(0, baseline)]  # step 0 is the unprobed model
            if point is not None:
                series.setdefault(key, []).append((int(params["steps"]), point))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    models = list(dict.fromkeys(model for model, _ in series))
    styles = dict(zip(dict.fromkeys(data for _, data in series), ("-", "--", ":", "-."), strict=False))
    longest = max(s for points in series.values() for s, _ in points) or 1
    for index, ((model, data), points) in enumerate(series.items()):
        points.sort()
        shift = (index - (len(series) - 1) / 2) * 0.008 * longest  # keeps overlapping error bars apart
        steps = [s + shift for s, _ in points]
        values = [p[0] for _, p in points]
        errors = [[p[1] for _, p in points], [p[2] for _, p in points]]
        ax.errorbar(steps, values, yerr=errors, marker="o", capsize=3, linestyle=styles.get(data, "-"),
                    color=f"C{models.index(model)}", label=f"{model}, {data}")  # fmt: skip
    ax.set_xlabel("relearning steps")
    ax.set_ylabel("unsafe ASR (%)")
    ax.set_ylim(-2, 102)
    ax.set_title("Does relearning bring the harm back?")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_probes(audited: dict[str, dict[str, dict]], path: Path) -> Path | None:
    """ASR under each probe (relearning at its largest budget), one bar per model."""
    plt = _pyplot()
    chosen: dict[str, dict[str, tuple[float, float, float]]] = {}
    for model, rows in audited.items():
        largest: dict[str, int] = {}
        for row in rows.values():
            steps = row["params"].get("steps") if row["probe"] == "relearn" else None
            if steps is not None:
                key = f"relearn/{row['params'].get('data')}"
                largest[key] = max(largest.get(key, -1), int(steps))
        for label, row in rows.items():
            params, name = row["params"], label
            if row["probe"] == "relearn":
                name = f"relearn/{params.get('data')}"
                if int(params.get("steps", -1)) != largest.get(name):
                    continue
                name += f" ({params['steps']} steps)"
            point = _asr(row)
            if point is not None:
                chosen.setdefault(name, {})[model] = point
    if not chosen:
        return None
    models = list(audited)
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(chosen) + 2), 4.2))
    for index, model in enumerate(models):
        xs = [i + (index - (len(models) - 1) / 2) * width for i in range(len(chosen))]
        points = [chosen[name].get(model, (math.nan, 0.0, 0.0)) for name in chosen]
        ax.bar(xs, [p[0] for p in points], width, yerr=[[p[1] for p in points], [p[2] for p in points]],
               capsize=2, label=model, color=f"C{index}")  # fmt: skip
    ax.set_xticks(range(len(chosen)), list(chosen), rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("unsafe ASR (%)")
    ax.set_ylim(0, 105)
    ax.set_title("Unsafe ASR under each probe")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_pgd(audited: dict[str, dict[str, dict]], path: Path) -> Path | None:
    """ASR against the PGD budget (epsilon in /255; an unbounded budget drawn last)."""
    plt = _pyplot()
    series: dict[str, list[tuple[float, tuple[float, float, float]]]] = {}
    for model, rows in audited.items():
        for row in rows.values():
            epsilon = row["params"].get("epsilon")
            point = _asr(row)
            if epsilon is not None and point is not None:
                series.setdefault(model, []).append((float(epsilon), point))
    if not series:
        return None
    budgets = sorted({e for points in series.values() for e, _ in points})
    position = {e: i for i, e in enumerate(budgets)}
    names = ["unbounded" if math.isinf(e) or e >= 1 else f"{round(255 * e)}/255" for e in budgets]
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for index, (model, points) in enumerate(series.items()):
        points.sort()
        ax.errorbar([position[e] for e, _ in points], [p[0] for _, p in points],
                    yerr=[[p[1] for _, p in points], [p[2] for _, p in points]], marker="o", capsize=3,
                    color=f"C{index}", label=model)  # fmt: skip
    ax.set_xticks(range(len(budgets)), names)
    ax.set_xlabel("L-infinity budget of the adversarial image")
    ax.set_ylabel("unsafe ASR (%)")
    ax.set_ylim(-2, 102)
    ax.set_title("A universal adversarial image")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_audit(audited: dict[str, dict[str, dict]], out_dir: Path) -> list[Path]:
    plots = [
        plot_probes(audited, out_dir / "probes.png"),
        plot_relearn(audited, out_dir / "relearn.png"),
        plot_pgd(audited, out_dir / "pgd.png"),
    ]
    return [p for p in plots if p is not None]
