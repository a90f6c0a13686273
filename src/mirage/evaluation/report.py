"""Showing evaluation results: a rich table on the terminal, metrics and an answer table for loggers."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mirage.evaluation.formatting import MISSING, percent

log = logging.getLogger(__name__)


def print_summary(results: dict[str, dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="mirage evaluation (%)")
    for column in ("case", "attack", "answers", "ASR", "IR", "RR", "K-shot ASR", "helpful", "unparsed"):
        table.add_column(column, justify="left" if column in ("case", "attack") else "right", no_wrap=True)
    for name, m in results.items():
        kshot = percent(m.get("kshot_ASR")) if len(m.get("per_shot_ASR", {})) > 1 else MISSING
        table.add_row(
            name,
            m.get("attack", ""),
            str(m.get("answers", m.get("n"))),
            percent(m["ASR"]),
            percent(m["IR"]),
            percent(m["RR"]),
            kshot,
            percent(m.get("helpfulness")),
            str(m.get("judge_unparsed", 0)),
        )
    # Logs and captured output are not terminals: give the table room instead of squeezing its columns.
    Console(width=None if sys.stdout.isatty() else 160).print(table)


def log_to_loggers(cfg: DictConfig, results: dict[str, dict[str, Any]], output_dir: Path) -> None:
    """Send scalar metrics, and a table of answers with verdicts, to the configured loggers."""
    from mirage.utils.hydra import instantiate_list

    loggers = instantiate_list(cfg.get("logger"), "logger")
    if loggers:
        send_to_loggers(loggers, results, output_dir)
        for logger in loggers:
            logger.finalize("success")


def send_to_loggers(
    loggers: list[Any], results: dict[str, dict[str, Any]], output_dir: Path, step: int = 0
) -> None:
    """Scalars as ``eval/<case>/<metric>``; for W&B also each case's answers with their verdicts, as a
    table (``output_dir/<case>/judged.jsonl``). Used by mirage-eval and by training runs that evaluate
    their own export."""
    from lightning.pytorch.loggers import WandbLogger

    scalars = {
        f"eval/{case}/{k}": float(v)
        for case, m in results.items()
        for k, v in m.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    for logger in loggers:
        logger.log_metrics(scalars, step=step)
        if isinstance(logger, WandbLogger):
            for case in results:
                rows = [
                    json.loads(line) for line in (output_dir / case / "judged.jsonl").read_text().splitlines()
                ]
                columns = ["id", "shot", "subset", "attack", "question", "answer", "label", "verdicts"]
                data = [[str(r.get(c)) if c == "verdicts" else r.get(c) for c in columns] for r in rows]
                logger.log_table(key=f"eval/{case}/answers", columns=columns, data=data)
