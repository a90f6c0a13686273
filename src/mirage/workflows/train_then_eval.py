"""Evaluate a training run's exported ``hf/`` directory inside the same job (train.yaml's ``evaluate:``).

One command then trains and scores every sweep point, and the sweeper gets evaluation metrics back:

    mirage-train -m experiment=unlearn_eval_tiny method=npo,rmu method.optimizer.lr=1e-4,1e-3

The evaluation config is mirage-eval's own (``configs/eval.yaml`` with ``evaluate.experiment`` and
``evaluate.overrides``), composed with ``model=checkpoint`` on the export; it shares the training run's
``paths`` and writes to ``<run dir>/<evaluate.subdir>/``, where ``mirage-report`` finds it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)


def eval_overrides(spec: DictConfig, hf_dir: Path) -> list[str]:
    """mirage-eval overrides: the experiment, the exported model, then the user's own (which win)."""
    return [
        f"experiment={spec.experiment}",
        "model=checkpoint",
        f"model.name_or_path={hf_dir}",
        *list(spec.get("overrides") or []),
    ]


def compose_eval_config(spec: DictConfig, train_cfg: DictConfig, hf_dir: Path) -> DictConfig:
    """mirage-eval's config for ``hf_dir``, with the training run's paths and its own output folder."""
    from mirage.workflows.configs import compose

    # Inside mirage-train: the app's own search path (a user's hydra.searchpath included).
    cfg = compose("eval", eval_overrides(spec, hf_dir))
    # The training job's paths, resolved (they name the Hydra job's folder), with the evaluation's own folder.
    paths = OmegaConf.to_container(train_cfg.paths, resolve=True)
    paths["output_dir"] = str(Path(paths["output_dir"]) / spec.get("subdir", "eval"))
    with open_dict(cfg):
        cfg.paths = paths
        cfg.logger = None  # results go to the training run's loggers instead
    return cfg


def evaluate_export(
    spec: DictConfig, train_cfg: DictConfig, hf_dir: Path, loggers: list[Any], step: int = 0
) -> dict[str, float]:
    """Run mirage-eval's cases on ``hf_dir``; returns flat ``eval/<case>/<metric>`` metrics (every rank)."""
    from mirage.evaluation.report import print_summary, send_to_loggers
    from mirage.evaluation.runner import flat_metrics, run_evaluation
    from mirage.utils import distributed as dist

    cfg = compose_eval_config(spec, train_cfg, hf_dir)
    out_dir = Path(cfg.paths.output_dir)
    log.info("evaluating %s with experiment=%s into %s", hf_dir, spec.experiment, out_dir)
    if dist.is_main():
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "config.yaml").write_text(OmegaConf.to_yaml(cfg))  # what was asked, for the record
    results = run_evaluation(cfg)
    if dist.is_main():
        print_summary(results)
        if loggers:
            send_to_loggers(loggers, results, out_dir, step=step)
    return flat_metrics(results, prefix="eval/")
