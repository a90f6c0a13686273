"""The pipeline job (``mirage-pipeline``): the stages in order (``mirage.workflows.stages``), the evaluation
of chosen stages, the report (the paper's Table 1), and optionally the audit of chosen stages
(``mirage.workflows.pipeline_audit``), appended to the report as "Does the safety survive?"."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mirage.utils.hydra import task_wrapper
from mirage.workflows.pipeline_curves import write_curves
from mirage.workflows.stages import run_evaluation, run_stage, stage_config, stage_order
from mirage.workflows.workers import Workers

log = logging.getLogger(__name__)


@dataclass
class Task:
    """One unit of the pipeline's work: a stage, an evaluation or one model's audit."""

    kind: str  # "stage", "evaluation" or "audit"
    name: str  # the stage it belongs to
    needs: tuple[str, ...]  # stages that must be finished first
    fn: Callable[..., Any]
    args: tuple
    alone: bool = False  # nothing else runs beside it (it gets every core)
    title: str = ""  # shown in the log when it starts


def trunk(stages: dict[str, Any]) -> set[str]:
    """Stages that every other stage descends from or leads to: nothing can train beside them."""
    lineage = {}
    for name in stages:
        line, parent = [name], (stages[name] or {}).get("init_from")
        while parent:
            line.append(parent)
            parent = (stages[parent] or {}).get("init_from")
        lineage[name] = set(line)
    return {n for n in stages if all(n in lineage[o] or o in lineage[n] for o in stages)}


def run_tasks(
    tasks: list[Task], workers: Workers, seconds: dict[tuple[str, str], float] | None = None
) -> dict[tuple[str, str], Any]:
    """Run ``tasks`` (in order of preference) as their stages finish, at most ``workers.jobs`` at once;
    ``seconds`` receives each task's wall time."""
    pending, running, finished, results = list(tasks), {}, set(), {}
    while pending or running:
        while len(running) < workers.jobs:
            blocked = any(t.alone for t, _ in running.values())
            task = next((t for t in pending if set(t.needs) <= finished and not blocked), None)
            if task is None or (task.alone and running):
                break
            pending.remove(task)
            log.info("%s %s: started%s", task.kind, task.name, f" ({task.title})" if task.title else "")
            threads = workers.threads(alone=task.alone)
            running[workers.submit(task.fn, *task.args, threads=threads)] = (task, time.perf_counter())
        if not running:
            raise RuntimeError(f"tasks wait on stages that never ran: {[(t.kind, t.name) for t in pending]}")
        done, _ = wait(list(running), return_when=FIRST_COMPLETED)
        for future in done:
            task, start = running.pop(future)
            results[(task.kind, task.name)] = future.result()  # a failure stops the pipeline here
            took = time.perf_counter() - start
            log.info("%s %s: done in %.0f s", task.kind, task.name, took)
            if seconds is not None:
                seconds[(task.kind, task.name)] = took
            if task.kind == "stage":
                finished.add(task.name)
    return results


@task_wrapper
def pipeline(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    from mirage.evaluation.mirage_table import write_report
    from mirage.workflows.audit import audit_one

    output_dir = Path(cfg.paths.output_dir)
    cache = Path(cfg.stage_cache_dir)
    # A stage set to null is dropped (e.g. `stages.rmu=null`), as Hydra users drop callbacks.
    stages = {
        k: v for k, v in (OmegaConf.to_container(cfg.stages, resolve=False) or {}).items() if v is not None
    }
    order = stage_order(stages)
    models = [str(m) for m in cfg.evaluation.models or []]
    unknown = [m for m in models if m not in stages]
    if unknown:
        raise KeyError(f"evaluation.models names {unknown}, which are not stages; stages: {order}")
    workers = Workers(
        int(cfg.get("jobs") or 1), quiet=bool((cfg.get("extras") or {}).get("ignore_warnings", True))
    )
    alone = trunk(stages)
    stage_dirs: dict[str, Path] = {}
    tasks = []
    for index, name in enumerate(order, 1):  # every stage's config and folder are known before any trains
        spec = cfg.stages[name]
        parent = spec.get("init_from")
        common = [str(o) for o in cfg.get("common_overrides") or []]
        threads = workers.threads(alone=name in alone)
        stage_cfg, digest = stage_config(name, spec, stage_dirs.get(parent), int(cfg.seed), common, threads)
        stage_dirs[name] = cache / f"{name}-{digest}"
        log.info("[%d/%d] stage %s (%s)", index, len(order), name, spec.get("description") or "")
        needs = (parent,) if parent else ()
        tasks.append(
            Task("stage", name, needs, run_stage, (name, stage_cfg, stage_dirs[name]), name in alone)
        )
    overrides = [str(o) for o in cfg.evaluation.get("overrides") or []]
    for name in models:
        tasks.append(
            Task(
                "evaluation",
                name,
                (name,),
                run_evaluation,
                (name, stage_dirs[name], overrides, int(cfg.seed)),
            )
        )
    audit_cfg = None
    if cfg.get("audit"):  # "Does the safety survive?": mirage-audit on chosen stages, appended to report.md
        from mirage.workflows.pipeline_audit import audit_config

        audit_cfg = audit_config(cfg.audit, stage_dirs, cfg, output_dir / "audit")
        for name, model_dir in audit_cfg.models.items():
            tasks.append(Task("audit", name, (name,), audit_one, (audit_cfg, name, model_dir)))
    seconds: dict[tuple[str, str], float] = {}
    started = time.perf_counter()
    with workers:
        done = run_tasks(tasks, workers, seconds)
    results = {name: done[("evaluation", name)] for name in models}
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
    if audit_cfg is not None:
        from mirage.workflows.pipeline_audit import finish_audit

        audited = {name: done[("audit", name)] for name in audit_cfg.models}
        summary.update(finish_audit(audit_cfg, audited, output_dir, labels or {}))
    write_times(seconds, time.perf_counter() - started, workers.jobs, output_dir)
    return summary, {"results": results, "stage_dirs": stage_dirs, "report": report}


def write_times(seconds: dict[tuple[str, str], float], total: float, jobs: int, output_dir: Path) -> None:
    """``times.json`` and the report's last section: each task's wall time (a reused one takes ~0 s)."""
    rows = [{"task": kind, "name": name, "seconds": round(s, 1)} for (kind, name), s in seconds.items()]
    (output_dir / "times.json").write_text(
        json.dumps({"jobs": jobs, "total": round(total, 1), "tasks": rows})
    )
    kinds = {kind: [r for r in rows if r["task"] == kind] for kind in dict.fromkeys(r["task"] for r in rows)}
    lines = [
        "## Time",
        "",
        f"{total / 60:.1f} min for the stages, evaluations and audits, in {jobs} worker(s) "
        "(a task's wall time; tasks of different branches overlap when jobs > 1).",
        "",
        "| stage | " + " | ".join(kinds) + " |",
        "|---" * (len(kinds) + 1) + "|",
    ]
    for name in dict.fromkeys(r["name"] for r in rows):
        cells = [next((f"{r['seconds']:.0f} s" for r in kinds[k] if r["name"] == name), "-") for k in kinds]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    report = output_dir / "report.md"
    if report.is_file():
        report.write_text(report.read_text().rstrip("\n") + "\n\n" + "\n".join(lines) + "\n")
