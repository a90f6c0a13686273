"""The evaluation job: every case of the config (``mirage.evaluation.runner``), then the summary table,
the loggers and the declared objective. ``mirage-eval`` runs it; so does each evaluation of
``mirage-pipeline``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mirage.utils import distributed as dist
from mirage.utils.hydra import task_wrapper


@task_wrapper
def evaluate(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    from mirage.evaluation.report import log_to_loggers, print_summary
    from mirage.evaluation.runner import flat_metrics, run_evaluation
    from mirage.utils.objective import add_objective

    results = run_evaluation(cfg)
    flat = add_objective(flat_metrics(results), cfg.get("objective"))
    if dist.is_main():
        print_summary(results)
        log_to_loggers(cfg, results, Path(cfg.paths.output_dir))
    return flat, {"results": results}
