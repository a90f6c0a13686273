"""The demo over several seeds: one table of every model's cells as mean, spread and range across seeds.

    make demo SEEDS="1 2 3 4 5"      # = mirage-pipeline -m experiment=mirage_demo seed=1,2,3,4,5

Each seed is one pipeline job (its own world, models and ``report.json``). When the multirun ends, the
:class:`SeedTableCallback` (``configs/pipeline.yaml``: ``hydra.callbacks``) reads every job's report and
writes ``seeds.md``, ``seeds.json`` and ``seeds.png`` into the sweep folder; ``mirage-seeds <folder>`` does
the same for any folder of pipeline runs. Cells: each model's plain and attacked ASR and RR, the jumps the
one-word attacks cause, utility and its drop from the base model, and where the stages recorded safety
curves, the attacked ASR at the end of training against its maximum.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from mirage.utils.io import write_json

#: column -> how it is computed from one seed's report row (percentages)
COLUMNS = {
    "ASR": lambda r: r["ASR"],
    "ASR_what3": lambda r: r["ASR_what3"],
    "ASR_jump": lambda r: r["ASR_what3"] - r["ASR"],
    "RR": lambda r: r["RR"],
    "RR_share1": lambda r: r["RR_share1"],
    "RR_jump": lambda r: r["RR_share1"] - r["RR"],
    "utility": lambda r: r["utility"],
}
HEADINGS = {
    "ASR": "ASR plain",
    "ASR_what3": "ASR What-3",
    "ASR_jump": "What-3 jump",
    "RR": "RR plain",
    "RR_share1": "RR Share-1",
    "RR_jump": "Share-1 jump",
    "utility": "utility",
    "utility_drop": "utility drop",
    "curve_end": "What-3 ASR end of training",
    "curve_max": "What-3 ASR max in training",
}


def find_pipeline_runs(root: Path) -> list[Path]:
    """Pipeline job folders below ``root`` (those with a ``report.json``), in folder order."""
    return sorted(p.parent for p in Path(root).rglob("report.json") if (p.parent / "stages.json").exists())


def _seed(run: Path) -> int | None:
    config = run / ".hydra" / "config.yaml"
    return int(OmegaConf.load(config).seed) if config.exists() else None


def _labels_and_baseline(run: Path) -> tuple[dict[str, str], str | None]:
    config = run / ".hydra" / "config.yaml"
    if not config.exists():
        return {}, None
    report = OmegaConf.load(config).get("report") or {}
    return dict(report.get("labels") or {}), report.get("baseline")


def seed_cells(runs: list[Path]) -> tuple[dict[str, dict[str, list[float]]], list[int | None]]:
    """model -> column -> one value per run, and the runs' seeds."""
    cells: dict[str, dict[str, list[float]]] = {}
    seeds = []
    for run in runs:
        rows = json.loads((run / "report.json").read_text())["rows"]
        _, baseline = _labels_and_baseline(run)
        curves = run / "curves.json"
        summary = json.loads(curves.read_text())["summary"] if curves.exists() else {}
        seeds.append(_seed(run))
        for model, row in rows.items():
            values = {column: compute(row) for column, compute in COLUMNS.items()}
            if baseline in rows:
                values["utility_drop"] = rows[baseline]["utility"] - row["utility"]
            for column, key in (("curve_end", "end"), ("curve_max", "max")):
                value = summary.get(f"{model}/curve_what3_asr_kshot_ASR_{key}")
                if value is not None:
                    values[column] = 100.0 * value
            for column, value in values.items():
                cells.setdefault(model, {}).setdefault(column, []).append(float(value))
    return cells, seeds


def describe(values: list[float]) -> dict[str, float]:
    finite = [v for v in values if not math.isnan(v)]
    if not finite:
        return {"mean": math.nan, "sd": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    sd = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return {
        "mean": statistics.fmean(finite),
        "sd": sd,
        "min": min(finite),
        "max": max(finite),
        "n": len(finite),
    }


def seed_markdown(cells: dict[str, dict[str, list[float]]], seeds: list, labels: dict[str, str]) -> str:
    columns = [c for c in HEADINGS if any(c in per_model for per_model in cells.values())]
    lines = [
        f"seeds {', '.join(str(s) for s in seeds)}; each cell: mean ± sd [min, max] over seeds, in %.",
        "",
        "| model | " + " | ".join(HEADINGS[c] for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for model, per_model in cells.items():
        row = []
        for column in columns:
            if column not in per_model:
                row.append("-")
                continue
            d = describe(per_model[column])
            row.append(f"{d['mean']:.1f} ± {d['sd']:.1f} [{d['min']:.1f}, {d['max']:.1f}]")
        lines.append(f"| {labels.get(model, model)} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def plot_seeds(cells: dict[str, dict[str, list[float]]], labels: dict[str, str], path: Path) -> Path:
    """One panel per headline column, one dot per seed, the mean as a bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = ["ASR", "ASR_what3", "RR", "RR_share1", "utility"]
    models = list(cells)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.8), sharey=True)
    for ax, column in zip(axes, panels, strict=True):
        for index, model in enumerate(models):
            values = cells[model].get(column) or []
            ax.bar(index, statistics.fmean(values) if values else 0, color="0.85")
            ax.scatter([index] * len(values), values, s=14, color="C0", zorder=3)
        ax.set_xticks(range(len(models)), [labels.get(m, m) for m in models], rotation=45, ha="right")
        ax.set_title(HEADINGS[column], fontsize=10)
        ax.set_ylim(-3, 103)
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("% (dots: seeds, bar: mean)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_seed_table(root: Path, out_dir: Path | None = None) -> dict[str, Any]:
    """``seeds.md``, ``seeds.json`` and ``seeds.png`` for the pipeline runs below ``root``."""
    runs = find_pipeline_runs(root)
    if not runs:
        raise FileNotFoundError(f"no pipeline runs (report.json + stages.json) below {root}")
    out_dir = Path(out_dir or root)
    out_dir.mkdir(parents=True, exist_ok=True)
    cells, seeds = seed_cells(runs)
    labels, _ = _labels_and_baseline(runs[0])
    table = seed_markdown(cells, seeds, labels)
    (out_dir / "seeds.md").write_text(f"# The demo over {len(runs)} seeds\n\n" + table)
    stats = {m: {c: describe(v) for c, v in per.items()} for m, per in cells.items()}
    write_json(
        out_dir / "seeds.json",
        {"seeds": seeds, "runs": [str(r) for r in runs], "cells": cells, "stats": stats},
    )
    plot_seeds(cells, labels, out_dir / "seeds.png")
    print(table)
    return {"seeds": seeds, "cells": cells, "stats": stats, "markdown": table}


class SeedTableCallback(Callback):
    """After a multirun of the pipeline, the seed table of its jobs in the sweep folder (nothing after a
    single run, or a multirun whose jobs wrote no report)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        root = Path(config.hydra.sweep.dir)
        if find_pipeline_runs(root):
            write_seed_table(root)


def main(argv: list[str] | None = None) -> None:
    """``mirage-seeds``: the seed table of the pipeline runs below a folder."""
    parser = argparse.ArgumentParser(prog="mirage-seeds", description=__doc__.splitlines()[0])
    parser.add_argument("root", help="a multirun folder, or any folder holding pipeline runs")
    parser.add_argument("--out", help="where seeds.md/.json/.png go (default: root)")
    args = parser.parse_args(argv)
    write_seed_table(Path(args.root), Path(args.out) if args.out else None)
