"""``mirage-eval``: model -> benchmark -> attack -> generation -> judges -> metrics, per evaluation case.

    mirage-eval experiment=mirage_eval_tiny
    mirage-eval experiment=mirage_eval model=checkpoint model.name_or_path=logs/npo_tiny/runs/<ts>/hf
    mirage-eval ... hydra.run.dir=<killed eval dir>      # resumes: finished answers are not redone

The job is :func:`mirage.workflows.evaluation.evaluate`; the run itself
:func:`mirage.evaluation.runner.run_evaluation`; cases: :mod:`mirage.evaluation.cases`.
"""

from __future__ import annotations

import os

import hydra
from omegaconf import DictConfig

from mirage.utils.hydra import metric_value, start_run
from mirage.utils.sweeps import hydra_cli
from mirage.workflows.configs import CONFIG_DIR, register_resolvers
from mirage.workflows.evaluation import evaluate


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval.yaml")
def main(cfg: DictConfig) -> float | None:
    start_run(cfg, rank_zero=os.environ.get("RANK", "0") == "0")
    metrics, _ = evaluate(cfg)
    return metric_value(metrics, cfg.get("optimized_metric")) if not metrics.get("failed") else None


register_resolvers()
cli = hydra_cli(main)  # the console script: exits non-zero when a multirun job failed

if __name__ == "__main__":
    cli()
