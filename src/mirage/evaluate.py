"""``mirage-eval``: model -> benchmark -> attack -> generation -> judges -> metrics, per evaluation case.

    mirage-eval experiment=mirage_eval_tiny
    mirage-eval experiment=mirage_eval model=checkpoint model.name_or_path=logs/npo_tiny/runs/<ts>/hf
    mirage-eval ... hydra.run.dir=<killed eval dir>      # resumes: finished answers are not redone

The job is :func:`mirage.workflows.evaluation.evaluate`; the run itself
:func:`mirage.evaluation.runner.run_evaluation`; cases: :mod:`mirage.evaluation.cases`.
"""

from __future__ import annotations

import os
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mirage.utils.hydra import metric_value, print_config_tree
from mirage.workflows.configs import CONFIG_DIR, register_resolvers
from mirage.workflows.evaluation import evaluate


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
