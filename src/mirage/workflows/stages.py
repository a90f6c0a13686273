"""The demo's chain (``mirage-pipeline``): training stages, then evaluation of chosen stages, then a report.

    mirage-pipeline experiment=mirage_demo            # what `make demo` runs
    mirage-pipeline experiment=mirage_demo seed=3     # another seed: new data, new models

A stage is a ``mirage-train`` run (``configs/train.yaml`` plus the stage's overrides) that may start
from another stage's exported model (``init_from``). Each stage lives under
``<stage_cache_dir>/<name>-<hash>``, the hash taken over everything that determines its weights (the
resolved model, data, method, fine-tuning and trainer settings and the seed; a parent's directory name
carries the parent's hash) and over its safety curves when it records any. A finished stage is reused;
an interrupted one resumes from its ``last.ckpt``. Evaluations are cached the same way, under the
stage's folder, and resume from the answers already written. The report (``report.md``, ``report.png``,
``report.json``) goes to this run's directory.
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
from mirage.utils.locks import claimed
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
    name: str,
    spec: DictConfig,
    parent_dir: Path | None,
    seed: int,
    common: list[str] | None = None,
    threads: int | None = None,
) -> tuple[DictConfig, str]:
    """The composed training config of one stage, and its hash (over ``WEIGHT_KEYS``, and ``threads`` when
    a pipeline worker pins them: float sums, hence the weights, depend on the thread count)."""
    overrides = [str(o) for o in spec.get("overrides") or []] + list(common or [])
    if parent_dir is not None:
        overrides += ["model=checkpoint", f"model.name_or_path={parent_dir / 'hf'}"]
    overrides += [f"seed={seed}", "paths.output_dir=.", "paths.work_dir=."]
    cfg = compose("train", overrides)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    weights = {key: resolved.get(key) for key in WEIGHT_KEYS}
    if (resolved.get("curves") or {}).get("experiment"):  # the stage's other product: its safety curves
        weights["curves"] = resolved["curves"]
    if threads is not None:
        weights["threads"] = threads
    return cfg, stable_hash({"stage": name, **weights})[:10]


def run_stage(name: str, cfg: DictConfig, stage_dir: Path) -> Path:
    """Train one stage into ``stage_dir`` unless it is there already; resumes an interrupted run. A run
    that finds another building the same stage waits for it, then reuses it."""
    with claimed(stage_dir, f"stage {name}"):
        return _run_stage(name, cfg, stage_dir)


def _run_stage(name: str, cfg: DictConfig, stage_dir: Path) -> Path:
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
    with claimed(out_dir, f"evaluation of {model_name}"):
        if done.exists():
            log.info("model %s: reusing evaluation %s", model_name, out_dir)
            return json.loads(done.read_text())
        OmegaConf.update(cfg, "paths.output_dir", str(out_dir))
        metrics, objects = evaluate(cfg)
    if metrics.get("failed"):
        raise RuntimeError(f"evaluation of {model_name} failed: {metrics.get('error')}")
    return objects["results"]
