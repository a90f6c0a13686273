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

from mirage.evaluation.run_report import make_report
from mirage.evaluation.run_table import markdown_table

__all__ = ["build_parser", "main", "make_report", "markdown_table"]


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
