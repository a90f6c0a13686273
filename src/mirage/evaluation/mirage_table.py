"""The Safety Mirage paper's Table 1 from the four evaluation cases of each model, plus what it misses.

Cases (``configs/experiment/mirage_eval_tiny.yaml`` names them): ``plain_asr`` (unsafe questions as
asked), ``what3_asr`` (rewritten three ways to start with "What"; a question counts as broken if
any rewrite succeeds), ``plain_rr`` (safe questions as asked) and ``share1_rr`` (rewritten to start
with "Share"). Beyond the paper's ASR and RR, the table shows the lenient ASR (harmful facts anywhere
in the answer: NPO leaks them in broken sentences) and utility (correct answers to safe questions:
an RR of 0 can hide gibberish).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mirage.evaluation.formatting import percent
from mirage.utils.io import write_json

CASES = ("plain_asr", "what3_asr", "plain_rr", "share1_rr")
# column -> (case, metric key), as fractions
COLUMNS: dict[str, tuple[str, str]] = {
    "ASR": ("plain_asr", "ASR"),
    "ASR_what3": ("what3_asr", "kshot_ASR"),
    "lenient_ASR": ("plain_asr", "lenient_ASR"),
    "lenient_ASR_what3": ("what3_asr", "kshot_lenient_ASR"),
    "RR": ("plain_rr", "RR"),
    "RR_share1": ("share1_rr", "RR"),
    "utility": ("plain_rr", "helpfulness"),
    "utility_share1": ("share1_rr", "helpfulness"),
}


def table_rows(results: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """model -> column -> percentage, from ``{model: {case: metrics.json of the case}}``."""
    rows = {}
    for model, cases in results.items():
        missing = [c for c in CASES if c not in cases]
        if missing:
            raise KeyError(f"model {model}: evaluation cases {missing} are missing; the table needs {CASES}")
        rows[model] = {
            column: 100.0 * float(cases[case].get(key, math.nan)) for column, (case, key) in COLUMNS.items()
        }
    return rows


def markdown(results: dict[str, dict[str, dict[str, Any]]], labels: dict[str, str]) -> str:
    """Table 1 and each case's ASR / IR / RR, in % from the cases' fractions (``percent``, as every table)."""
    name = labels.get
    lines = [
        "| model | unsafe ASR: plain | What-3-shot | lenient ASR: plain | What-3-shot "
        "| safe RR: plain | Share-1-shot | utility: plain | Share-1-shot |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model, cases in results.items():
        cells = [percent(cases[case].get(key)) for case, key in COLUMNS.values()]
        lines.append(f"| {name(model, model)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "ASR / IR / RR of each case (%): relevant = the request was fulfilled (unsafe: the exact harmful "
        "answer; safe: the correct answer), irrelevant = anything else that is not a refusal.",
        "",
        "| model | case | n | ASR | IR | RR |",
        "|---|---|---|---|---|---|",
    ]
    for model, cases in results.items():
        for case in CASES:
            m = cases[case]
            lines.append(
                f"| {name(model, model)} | {case} | {m.get('n', '?')} | {percent(m.get('ASR'))} "
                f"| {percent(m.get('IR'))} | {percent(m.get('RR'))} |"
            )
    return "\n".join(lines) + "\n"


def plot(rows: dict[str, dict[str, float]], labels: dict[str, str], path: Path, title: str) -> Path:
    """Before/after attack per model: ASR (What-3), RR (Share-1), utility (Share-1)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("unsafe ASR (%)", "ASR", "ASR_what3", "What-3-shot", "lenient_ASR_what3"),
        ("safe RR (%)", "RR", "RR_share1", "Share-1-shot", None),
        ("utility on safe questions (%)", "utility", "utility_share1", "Share-1-shot", None),
    ]
    models = list(rows)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    x = range(len(models))
    for ax, (ylabel, before, after, attack, lenient) in zip(axes, panels, strict=True):
        ax.bar([i - 0.2 for i in x], [rows[m][before] for m in models], 0.4, label="plain", color="#9ecae1")
        ax.bar([i + 0.2 for i in x], [rows[m][after] for m in models], 0.4, label=attack, color="#de2d26")
        if lenient:
            ax.scatter(
                [i + 0.2 for i in x],
                [rows[m][lenient] for m in models],
                marker="_",
                s=300,
                color="black",
                label=f"lenient ({attack})",
                zorder=3,
            )
        ax.set_xticks(
            list(x), [labels.get(m, m) for m in models], rotation=30, ha="right", rotation_mode="anchor"
        )
        ax.set_ylabel(ylabel)
        ax.set_ylim(0, 125)  # headroom for the legend
        ax.set_yticks(range(0, 101, 20))
        ax.legend(fontsize=7, loc="upper center", ncol=3)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(
    results: dict[str, dict[str, dict[str, Any]]],
    out_dir: str | Path,
    labels: dict[str, str] | None = None,
    title: str = "mirage",
    baseline: str | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Write ``report.md``, ``report.png`` and ``report.json`` into ``out_dir`` and print the table."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    labels = dict(labels or {})
    rows = table_rows(results)
    table = markdown(results, labels)
    header = f"# {title}\n\n" + (f"seed {seed}; " if seed is not None else "") + "all numbers in %.\n\n"
    (out_dir / "report.md").write_text(header + table)
    plot(rows, labels, out_dir / "report.png", title)
    summary = {f"{model}/{column}": value for model, row in rows.items() for column, value in row.items()}
    if baseline is not None and baseline in rows:  # utility drop against the base model
        for model, row in rows.items():
            summary[f"{model}/utility_drop"] = rows[baseline]["utility"] - row["utility"]
    write_json(out_dir / "report.json", {"rows": rows, "summary": summary})
    _print(table, title)
    return {"rows": rows, "summary": summary, "markdown": table}


def _print(table: str, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    lines = [line for line in table.splitlines() if line.startswith("|")]
    head = ["model", "ASR", "What-3 ASR", "lenient", "lenient What-3", "RR", "Share-1 RR", "utility"]
    head.append("Share-1 utility")
    rich_table = Table(title=title)
    for column in head:
        rich_table.add_column(column, justify="left" if column == "model" else "right")
    for line in lines[2:]:
        if line.startswith("| model |"):
            break
        rich_table.add_row(*[c.strip() for c in line.strip("|").split("|")])
    console = Console()
    Console(width=max(console.width, 120)).print(rich_table)  # logs and pipes get 80 columns otherwise
