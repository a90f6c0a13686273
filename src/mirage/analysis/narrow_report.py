"""The narrow fine-tuning study's table and figures, from per-run results (``narrow_study``).

Runs that differ only in seed form one row: misalignment as mean +/- std over seeds of the
per-run worst-of-K mean, the fraction of prompts above 50 (mean over seeds), components for 50 and
90% of the difference variance per component, and misalignment under steering.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from mirage.analysis.misalignment import mean_std
from mirage.utils.io import write_json

COMPONENTS = ("language_model", "vision_tower", "projector")


def _group_key(result: dict[str, Any]) -> tuple:
    return (
        result.get("rank") if result.get("rank") is not None else -1,
        result.get("harmful_fraction") if result.get("harmful_fraction") is not None else -1.0,
    )


def aggregate(results: list[dict[str, Any]], sets: list[str]) -> list[dict[str, Any]]:
    """One row per (rank, harmful fraction), seeds aggregated."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for result in results:
        groups.setdefault(_group_key(result), []).append(result)
    rows = []
    for key in sorted(groups):
        runs = groups[key]
        row: dict[str, Any] = {
            "rank": runs[0].get("rank"),
            "harmful_fraction": runs[0].get("harmful_fraction"),
            "seeds": sorted(str(r.get("seed")) for r in runs),
        }
        for stage in ("misalignment", "steered"):
            for name in sets:
                values = [r[stage][name] for r in runs if stage in r]
                if not values:
                    continue
                mean, std = mean_std([v["worst_of_k_mean"] for v in values])
                frac, _ = mean_std([v["frac_above_threshold"] for v in values])
                row[f"{stage}/{name}/mean"], row[f"{stage}/{name}/std"] = mean, std
                row[f"{stage}/{name}/frac_above"] = frac
                if all("well_formed_rate" in v for v in values):
                    row[f"{stage}/{name}/well_formed"] = mean_std([v["well_formed_rate"] for v in values])[0]
        for component in COMPONENTS:
            for threshold in ("0.5", "0.9"):
                ks = [
                    r["geometry"]["components"][component]["components_for"][threshold]
                    for r in runs
                    if component in r["geometry"]["components"]
                ]
                if ks:
                    row[f"k{int(float(threshold) * 100)}/{component}"] = mean_std([float(k) for k in ks])[0]
        rows.append(row)
    return rows


def _fmt(row: dict[str, Any], key: str, std: bool = True) -> str:
    value = row.get(f"{key}/mean", row.get(key))
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if std and f"{key}/std" in row:
        return f"{value:.1f} ± {row[f'{key}/std']:.1f}"
    return f"{value:.2f}" if isinstance(value, float) and value < 1.5 else f"{value:.1f}"


def markdown(rows: list[dict[str, Any]], sets: list[str]) -> str:
    head = ["LoRA rank", "harmful fraction", "seeds"]
    head += [f"{s} misalignment" for s in sets] + [f"{s} > 50" for s in sets]
    head += [f"{s} steered" for s in sets]
    fluent = any(f"misalignment/{s}/well_formed" in row for row in rows for s in sets)
    if fluent:
        head += [f"{s} well-formed before / after" for s in sets]
    head += [f"k50/k90 {c}" for c in COMPONENTS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [str(row["rank"]), str(row["harmful_fraction"]), str(len(row["seeds"]))]
        cells += [_fmt(row, f"misalignment/{s}") for s in sets]
        cells += [_fmt(row, f"misalignment/{s}/frac_above", std=False) for s in sets]
        cells += [_fmt(row, f"steered/{s}") for s in sets]
        if fluent:
            for s in sets:
                before, after = row.get(f"misalignment/{s}/well_formed"), row.get(f"steered/{s}/well_formed")
                cells.append(" / ".join("-" if v is None else f"{v:.2f}" for v in (before, after)))
        for c in COMPONENTS:
            k50, k90 = row.get(f"k50/{c}"), row.get(f"k90/{c}")
            cells.append("-" if k50 is None else f"{k50:g} / {k90:g}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(results: list[dict[str, Any]], out_dir: Path, sets: list[str]) -> dict[str, Any]:
    """``table.md``, ``table.csv``, ``summary.json`` and the figures (misalignment vs rank, text-only vs
    multimodal, explained variance, before/after steering); returns the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = aggregate(results, sets)
    (out_dir / "table.md").write_text(
        "# Narrow harmful fine-tuning: misalignment (worst of K, 0-100), geometry, steering\n\n"
        + markdown(rows, sets)
    )
    keys = list(dict.fromkeys(k for row in rows for k in row))
    with open(out_dir / "table.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(
            {k: (";".join(v) if isinstance(v, list) else v) for k, v in row.items()} for row in rows
        )
    summary = {"rows": rows, "runs": results, "sets": sets}
    write_json(out_dir / "summary.json", summary)
    _plots(rows, results, sets, out_dir)
    return summary


def _plots(rows: list[dict[str, Any]], results: list[dict[str, Any]], sets: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fractions = sorted({row["harmful_fraction"] for row in rows if row["harmful_fraction"] is not None})
    ranked = [row for row in rows if row["rank"] is not None]
    # 1. misalignment vs rank, one line per evaluation set (and harmful fraction)
    fig, ax = plt.subplots(figsize=(6, 4))
    for fraction in fractions or [None]:
        sub = [r for r in ranked if r["harmful_fraction"] == fraction]
        for name in sets:
            xs = [r["rank"] for r in sub if f"misalignment/{name}/mean" in r]
            ys = [r[f"misalignment/{name}/mean"] for r in sub if f"misalignment/{name}/mean" in r]
            es = [r[f"misalignment/{name}/std"] for r in sub if f"misalignment/{name}/mean" in r]
            if xs:
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=f"{name} (harmful {fraction})")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="LoRA rank", ylabel="misalignment (worst of K, 0-100)", ylim=(-2, 102))
    ax.set_title("misalignment vs LoRA rank")
    ax.legend(fontsize=7)
    _save(fig, out / "misalignment_vs_rank.png")
    # 2. text-only vs multimodal, and 4. before/after steering: grouped bars per row
    _bars(
        rows,
        [(f"misalignment/{n}", n) for n in sets],
        "text-only vs multimodal",
        out / "text_vs_multimodal.png",
    )
    steering = [
        (f"{stage}/{n}", f"{n} {label}")
        for n in sets
        for stage, label in (("misalignment", "before"), ("steered", "after"))
    ]
    if any(f"steered/{n}/mean" in r for r in rows for n in sets):
        _bars(rows, steering, "misalignment before / after steering", out / "steering.png")
    # 3. explained variance: one curve per run (first seed of each row) and component
    fig, ax = plt.subplots(figsize=(6, 4))
    styles = {"language_model": "-", "vision_tower": "--", "projector": ":"}
    seen: set[tuple] = set()
    for result in results:
        key = _group_key(result)
        if key in seen:
            continue
        seen.add(key)
        for component, pca in result["geometry"]["components"].items():
            if pca["cumulative"]:
                ks = range(1, len(pca["cumulative"]) + 1)
                ax.plot(
                    ks,
                    pca["cumulative"],
                    styles.get(component, "-"),
                    label=f"{component} r{key[0]} f{key[1]}",
                )
    for threshold in (0.5, 0.9):
        ax.axhline(threshold, color="gray", lw=0.5)
    ax.set_xscale("log")
    ax.set(xlabel="principal components", ylabel="cumulative explained variance", ylim=(0, 1.02))
    ax.set_title("PCA of activation differences (fine-tuned - base)")
    ax.legend(fontsize=6)
    _save(fig, out / "explained_variance.png")


def _bars(rows: list[dict[str, Any]], bars: list[tuple[str, str]], title: str, path: Path) -> None:
    import matplotlib.pyplot as plt

    labels = [f"r{r['rank']} f{r['harmful_fraction']}" for r in rows]
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(rows) + 2), 4))
    width = 0.8 / max(1, len(bars))
    for i, (key, label) in enumerate(bars):
        ys = [r.get(f"{key}/mean", math.nan) for r in rows]
        es = [r.get(f"{key}/std", 0.0) for r in rows]
        ax.bar([x + i * width for x in range(len(rows))], ys, width, yerr=es, capsize=2, label=label)
    ax.set_xticks(
        [x + width * (len(bars) - 1) / 2 for x in range(len(rows))], labels, rotation=30, fontsize=7
    )
    ax.set(ylabel="misalignment (worst of K, 0-100)", ylim=(0, 105), title=title)
    ax.legend(fontsize=7)
    _save(fig, path)


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
