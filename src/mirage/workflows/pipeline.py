"""The pipeline job (``mirage-pipeline``): the stages in order (``mirage.workflows.stages``), the evaluation
of chosen stages, the report (the paper's Table 1), and optionally the audit of chosen stages
(``mirage.workflows.pipeline_audit``), appended to the report as "Does the safety survive?"."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mirage.utils.hydra import task_wrapper
from mirage.workflows.pipeline_curves import write_curves
from mirage.workflows.stages import run_evaluation, run_stage, stage_config, stage_order

log = logging.getLogger(__name__)


@task_wrapper
def pipeline(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    from mirage.evaluation.mirage_table import write_report

    output_dir = Path(cfg.paths.output_dir)
    cache = Path(cfg.stage_cache_dir)
    # A stage set to null is dropped (e.g. `stages.rmu=null`), as Hydra users drop callbacks.
    stages = {
        k: v for k, v in (OmegaConf.to_container(cfg.stages, resolve=False) or {}).items() if v is not None
    }
    order = stage_order(stages)
    stage_dirs: dict[str, Path] = {}
    for index, name in enumerate(order, 1):
        spec = cfg.stages[name]
        parent = spec.get("init_from")
        common = [str(o) for o in cfg.get("common_overrides") or []]
        stage_cfg, digest = stage_config(name, spec, stage_dirs.get(parent), int(cfg.seed), common)
        log.info("[%d/%d] stage %s (%s)", index, len(order), name, spec.get("description") or "")
        stage_dirs[name] = run_stage(name, stage_cfg, cache / f"{name}-{digest}")
    evaluation = cfg.evaluation
    models = list(evaluation.models or [])
    unknown = [m for m in models if m not in stage_dirs]
    if unknown:
        raise KeyError(f"evaluation.models names {unknown}, which are not stages; stages: {order}")
    results = {}
    for index, name in enumerate(models, 1):
        log.info("[%d/%d] evaluating %s", index, len(models), name)
        overrides = [str(o) for o in evaluation.get("overrides") or []]
        results[name] = run_evaluation(name, stage_dirs[name], overrides, int(cfg.seed))
    report = write_report(
        results,
        output_dir,
        labels=OmegaConf.to_container(cfg.report.labels, resolve=True) if cfg.get("report") else None,
        title=cfg.report.get("title", "mirage") if cfg.get("report") else "mirage",
        baseline=cfg.report.get("baseline") if cfg.get("report") else None,
        seed=int(cfg.seed),
    )
    (output_dir / "stages.json").write_text(json.dumps({k: str(v) for k, v in stage_dirs.items()}, indent=2))
    summary = dict(report["summary"])
    labels = OmegaConf.to_container(cfg.report.labels, resolve=True) if cfg.get("report") else {}
    # "Watching the mirage form": the safety curves the stages recorded while training (curves.png).
    summary.update(write_curves(stage_dirs, models, labels or {}, output_dir))
    if cfg.get("audit"):  # "Does the safety survive?": mirage-audit on chosen stages, appended to report.md
        from mirage.workflows.pipeline_audit import audit_stages

        summary.update(audit_stages(cfg, stage_dirs, output_dir, labels or {}))
    return summary, {"results": results, "stage_dirs": stage_dirs, "report": report}
