"""The demo's chain (``mirage-pipeline``): training stages, then evaluation of chosen stages, then a report.

    mirage-pipeline experiment=mirage_demo            # what `make demo` runs
    mirage-pipeline experiment=mirage_demo seed=3     # another seed: new data, new models

A stage is a ``mirage-train`` run (``configs/train.yaml`` plus the stage's overrides) that may start
from another stage's exported model (``init_from``). Each stage lives under
``<stage_cache_dir>/<name>-<hash>``, the hash taken over everything that determines its weights (the
resolved model, data, method, fine-tuning and trainer settings and the seed; a parent's directory name
carries the parent's hash). A finished stage is reused; an interrupted one resumes from its
``last.ckpt``. Evaluations are cached the same way, under the stage's folder, and resume from the
answers already written. The report (``report.md``, ``report.png``, ``report.json``) goes to this
run's directory.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mirage.utils.hashing import stable_hash
from mirage.utils.hydra import task_wrapper
from mirage.workflows.configs import compose

log = logging.getLogger(__name__)
# The parts of a training config that determine the trained weights (paths, loggers and callbacks do not).
WEIGHT_KEYS = ("model", "data", "method", "finetune", "trainer", "seed")
EXPORT_MARKER = "mirage_export.json"


def stage_order(stages: dict[str, Any]) -> list[str]:
    """Stage names with every ``init_from`` parent before its children; cycles and unknown parents fail."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "visiting":
            raise ValueError(f"stages form a cycle: {' -> '.join((*path, name))}")
        if name not in stages:
            raise KeyError(f"stage {path[-1]!r} starts from unknown stage {name!r}; known: {sorted(stages)}")
        state[name] = "visiting"
        parent = (stages[name] or {}).get("init_from")
        if parent:
            visit(parent, (*path, name))
        state[name] = "done"
        order.append(name)

    for name in stages:
        visit(name, ())  # path: the children that led here
    return order


def stage_config(
    name: str, spec: DictConfig, parent_dir: Path | None, seed: int, common: list[str] | None = None
) -> tuple[DictConfig, str]:
    """The composed training config of one stage, and its hash (over ``WEIGHT_KEYS``)."""
    overrides = [str(o) for o in spec.get("overrides") or []] + list(common or [])
    if parent_dir is not None:
        overrides += ["model=checkpoint", f"model.name_or_path={parent_dir / 'hf'}"]
    overrides += [f"seed={seed}", "paths.output_dir=.", "paths.work_dir=."]
    cfg = compose("train", overrides)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    weights = {key: resolved.get(key) for key in WEIGHT_KEYS}
    return cfg, stable_hash({"stage": name, **weights})[:10]


def run_stage(name: str, cfg: DictConfig, stage_dir: Path) -> Path:
    """Train one stage into ``stage_dir`` unless it is there already; resumes an interrupted run."""
    from mirage.workflows.training import train

    if (stage_dir / "hf" / EXPORT_MARKER).exists():
        log.info("stage %s: reusing %s", name, stage_dir)
        return stage_dir
    partial = stage_dir.with_name(stage_dir.name + ".partial")
    resume = (partial / "checkpoints" / "last.ckpt").exists()
    log.info("stage %s: %s in %s", name, "resuming" if resume else "training", partial)
    OmegaConf.update(cfg, "paths.output_dir", str(partial))
    OmegaConf.update(cfg, "ckpt_path", "last" if resume else None)
    partial.mkdir(parents=True, exist_ok=True)
    (partial / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    metrics, _ = train(cfg)
    if metrics.get("failed"):
        raise RuntimeError(f"stage {name} failed: {metrics.get('error')} (see {partial}/error.txt)")
    shutil.rmtree(partial / "checkpoints", ignore_errors=True)  # the export is what later stages read
    if stage_dir.exists():
        shutil.rmtree(stage_dir)
    os.replace(partial, stage_dir)
    return stage_dir


def run_evaluation(model_name: str, stage_dir: Path, overrides: list[str], seed: int) -> dict[str, Any]:
    """Evaluate a stage's exported model (cached under the stage, resuming from written answers)."""
    from mirage.evaluation.cases import cases_fingerprint
    from mirage.workflows.evaluation import evaluate

    overrides = [
        *overrides,
        "model=checkpoint",
        f"model.name_or_path={stage_dir / 'hf'}",
        f"seed={seed}",
        "paths.output_dir=.",
        "paths.work_dir=.",
    ]
    cfg = compose("eval", overrides)
    out_dir = stage_dir / f"eval-{stable_hash(cases_fingerprint(cfg))[:10]}"
    done = out_dir / "metrics.json"
    if done.exists():
        log.info("model %s: reusing evaluation %s", model_name, out_dir)
        return json.loads(done.read_text())
    OmegaConf.update(cfg, "paths.output_dir", str(out_dir))
    metrics, objects = evaluate(cfg)
    if metrics.get("failed"):
        raise RuntimeError(f"evaluation of {model_name} failed: {metrics.get('error')}")
    return objects["results"]


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
    return report["summary"], {"results": results, "stage_dirs": stage_dirs, "report": report}
