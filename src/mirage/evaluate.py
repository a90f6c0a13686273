"""``mirage-eval``: model -> benchmark -> attack -> generation -> judges -> metrics, per evaluation case.

    mirage-eval experiment=mirage_eval_tiny
    mirage-eval experiment=mirage_eval model=checkpoint model.name_or_path=logs/npo_tiny/runs/<ts>/hf
    mirage-eval ... hydra.run.dir=<killed eval dir>      # resumes: finished answers are not redone

The run itself is :func:`mirage.evaluation.runner.run_evaluation`; cases: :mod:`mirage.evaluation.cases`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from mirage.utils import distributed as dist
from mirage.utils.hydra import metric_value, print_config_tree, register_resolvers, task_wrapper

log = logging.getLogger(__name__)
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")


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


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval.yaml")
def main(cfg: DictConfig) -> float | None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if cfg.get("extras", {}).get("print_config", True) and os.environ.get("RANK", "0") == "0":
        print_config_tree(cfg, save_to=Path(cfg.paths.output_dir) / "config_tree.yaml")
    metrics, _ = evaluate(cfg)
    return metric_value(metrics, cfg.get("optimized_metric")) if not metrics.get("failed") else None


register_resolvers()

if __name__ == "__main__":
    main()
