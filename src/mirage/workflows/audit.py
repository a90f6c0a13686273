"""The audit job (``mirage-audit``): every probe of every model, evaluated with the usual cases, then one card
per model and a comparison of all (``mirage.workflows.audit_card``).

For each model: the unprobed evaluation (the baseline), then every variant of every probe. A variant that
trains first (relearning) is trained with mirage's own training job, from the audited model, into a stage
folder keyed by everything that decides its weights (the audited weights included); an interrupted one
resumes from its ``last.ckpt``. Each evaluation is cached under the model's audit folder, keyed by the
resolved cases, judges, model loading and weights, and resumes from the answers already written. So a
killed audit, run again, redoes nothing that finished.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mirage.probes.base import AuditTarget, Probe, ProbeVariant
from mirage.utils.hashing import stable_hash
from mirage.utils.hydra import task_wrapper
from mirage.utils.locks import claimed
from mirage.workflows.configs import compose
from mirage.workflows.workers import pinned_threads

log = logging.getLogger(__name__)
BASELINE = "none"


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label)


def weights_fingerprint(model_dir: Path) -> list[tuple[str, int, int]]:
    """Names, sizes and times of a model directory's weight files (as a cached evaluation keys them): what
    a probe's results depend on."""
    from mirage.evaluation.cases import weight_files

    files = weight_files(str(model_dir))
    if not files:
        raise FileNotFoundError(f"{model_dir}: no weight files (*.safetensors); is it an exported hf/ dir?")
    return files


def audit_target(name: str, model_dir: str | Path, cfg: DictConfig) -> AuditTarget:
    model_dir = Path(model_dir).resolve()
    key = stable_hash({"dir": str(model_dir), "weights": weights_fingerprint(model_dir)})[:10]
    return AuditTarget(
        name=name,
        model_dir=model_dir,
        work_dir=Path(cfg.audit_cache_dir) / f"{_slug(name)}-{key}",
        seed=int(cfg.seed),
        train_overrides=tuple(str(o) for o in cfg.get("train_overrides") or []),
    )


def train_variant(target: AuditTarget, variant: ProbeVariant) -> Path:
    """The exported model of a variant that trains first (cached like a pipeline stage)."""
    from mirage.workflows.stages import WEIGHT_KEYS, run_stage

    overrides = [*variant.train_overrides, f"seed={target.seed}", "paths.output_dir=.", "paths.work_dir=."]
    cfg = compose("train", overrides)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    weights = {key: resolved.get(key) for key in WEIGHT_KEYS}
    weights["from"] = weights_fingerprint(target.model_dir)
    if pinned_threads() is not None:  # trained in a pipeline worker: its float sums depend on the threads
        weights["threads"] = pinned_threads()
    digest = stable_hash(weights)[:10]
    stage_dir = run_stage(variant.label, cfg, target.work_dir / "train" / f"{_slug(variant.label)}-{digest}")
    return stage_dir / "hf"


def evaluate_variant(
    target: AuditTarget, variant: ProbeVariant, model_dir: Path, cfg: DictConfig
) -> tuple[dict[str, Any], Path]:
    """(metrics per case, evaluation folder) of one variant, from the cache when it finished before."""
    from mirage.evaluation.cases import cases_fingerprint
    from mirage.workflows.evaluation import evaluate

    overrides = [
        *[str(o) for o in cfg.evaluation.get("overrides") or []],
        "model=checkpoint",
        f"model.name_or_path={model_dir}",
        *variant.overrides,
        f"seed={target.seed}",
        "paths.output_dir=.",
        "paths.work_dir=.",
    ]
    eval_cfg = compose("eval", overrides)
    out_dir = (
        target.work_dir / "eval" / f"{_slug(variant.label)}-{stable_hash(cases_fingerprint(eval_cfg))[:10]}"
    )
    done = out_dir / "metrics.json"
    with claimed(out_dir, f"{target.name} / {variant.label}"):
        if done.exists():
            log.info("%s / %s: reusing %s", target.name, variant.label, out_dir)
            return json.loads(done.read_text()), out_dir
        OmegaConf.update(eval_cfg, "paths.output_dir", str(out_dir))
        metrics, objects = evaluate(eval_cfg)
    if metrics.get("failed"):
        raise RuntimeError(f"evaluation of {target.name} / {variant.label} failed: {metrics.get('error')}")
    return objects["results"], out_dir


def audit_model(target: AuditTarget, probes: dict[str, Probe], cfg: DictConfig) -> dict[str, dict[str, Any]]:
    """``{variant label: {"params", "probe", "results", "eval_dir"}}``, the baseline first."""
    rows: dict[str, dict[str, Any]] = {}
    plan = [(BASELINE, ProbeVariant(BASELINE))]
    for name, probe in probes.items():
        log.info("%s: probe %s", target.name, name)
        plan += [(name, variant) for variant in probe.variants(target)]
    for index, (probe_name, variant) in enumerate(plan, 1):
        log.info("[%d/%d] %s / %s", index, len(plan), target.name, variant.label)
        model_dir = train_variant(target, variant) if variant.train_overrides else target.model_dir
        results, eval_dir = evaluate_variant(target, variant, model_dir, cfg)
        rows[variant.label] = {
            "probe": probe_name,
            "params": dict(variant.params),
            "results": results,
            "eval_dir": str(eval_dir),
        }
    return rows


def instantiate_probes(cfg: DictConfig) -> dict[str, Probe]:
    probes = {name: instantiate(spec) for name, spec in (cfg.get("probes") or {}).items() if spec is not None}
    for name, probe in probes.items():
        if not isinstance(probe, Probe):
            raise TypeError(f"probes.{name} is a {type(probe).__name__}, not a mirage.probes.base.Probe")
    return probes


def audit_one(cfg: DictConfig, label: str, model_dir: str | Path) -> dict[str, dict[str, Any]]:
    """One model's rows (``audit_model``): what a pipeline worker runs, the verdicts left to ``run_audit``."""
    return audit_model(audit_target(label, model_dir, cfg), instantiate_probes(cfg), cfg)


def run_audit(
    cfg: DictConfig, done: dict[str, dict[str, dict[str, Any]]] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Audit every model of ``cfg.models`` with every probe of ``cfg.probes`` (``done``: rows of models
    already audited, by ``audit_one``); write the cards into ``cfg.paths.output_dir``; return the flat
    summary and ``{"audited", "payload"}``."""
    from mirage.workflows.audit_card import write_audit

    models = {str(k): str(v) for k, v in (cfg.get("models") or {}).items() if v is not None}
    if not models:
        raise ValueError("mirage-audit: no models; give them as models={label: <exported hf dir>, ...}")
    reference = (cfg.get("verdict") or {}).get("reference")
    if reference and reference not in models:  # found before any work, not after every probe has run
        raise KeyError(f"verdict.reference={reference!r} is not an audited model; models: {sorted(models)}")
    probes = instantiate_probes(cfg)
    audited = {}
    for label, model_dir in models.items():
        rows = (done or {}).get(label)
        audited[label] = (
            rows if rows is not None else audit_model(audit_target(label, model_dir, cfg), probes, cfg)
        )
    verdict = OmegaConf.to_container(cfg.verdict, resolve=True)
    summary, payload = write_audit(
        audited, Path(cfg.paths.output_dir), verdict=verdict, title=str(cfg.get("title", ""))
    )
    log_audit(cfg, summary, payload)
    return summary, {"audited": audited, "payload": payload}


@task_wrapper
def audit(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    return run_audit(cfg)


def log_audit(cfg: DictConfig, summary: dict[str, float], payload: dict[str, Any]) -> None:
    """Send the ASRs as ``audit/<model>/<variant>/ASR`` and, to W&B, the table of every cell and verdict."""
    from lightning.pytorch.loggers import WandbLogger

    from mirage.utils.hydra import instantiate_list
    from mirage.workflows.audit_card import COLUMNS

    loggers = instantiate_list(cfg.get("logger"), "logger")
    columns = ["model", "variant", "probe", *COLUMNS, "verdict"]
    rows = [
        [model, label, row["probe"], *[_value(row["cells"], c) for c in COLUMNS], row["verdict"]]
        for model, variants in payload["models"].items()
        for label, row in variants.items()
    ]
    for logger in loggers:
        logger.log_metrics({f"audit/{key}": value for key, value in summary.items()}, step=0)
        if isinstance(logger, WandbLogger):
            logger.log_table(key="audit/table", columns=columns, data=rows)
        logger.finalize("success")


def _value(cells: dict[str, Any], column: str) -> float | None:
    return (cells.get(column) or {}).get("value")
