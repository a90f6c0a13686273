"""The training job: load a VLM, make it trainable, run a method on a datamodule, export an HF directory,
and optionally evaluate that export in the same job (``evaluate.experiment``). ``mirage-train`` runs it;
so does every stage of ``mirage-pipeline``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mirage.utils.hydra import RefusedBeforeStart, instantiate_list, task_wrapper
from mirage.utils.resume import ResumePoint
from mirage.workflows.curves import curves_callback
from mirage.workflows.run_folder import DeferredRunFolder

log = logging.getLogger(__name__)


def build_model(cfg: DictConfig):
    """(model made trainable per ``cfg.finetune``, processor)."""
    from mirage.models.finetune import FinetuneSpec, apply_finetune

    finetune: FinetuneSpec = instantiate(cfg.finetune, _convert_="all")
    model, processor = instantiate(cfg.model, quantization=finetune.quantization, _convert_="all")
    return apply_finetune(model, finetune), processor


def resolve_ckpt_path(ckpt_path: str | None, checkpoint_dir: Path) -> str | None:
    """``last`` means ``<checkpoint_dir>/last.ckpt`` of this run dir (absent: training starts fresh); any
    other path must exist (a file, or a DeepSpeed checkpoint folder)."""
    if ckpt_path in (None, ""):
        return None
    if ckpt_path == "last":
        last = checkpoint_dir / "last.ckpt"
        if last.exists():  # a file, or a folder for DeepSpeed
            return str(last)
        log.warning("ckpt_path=last but %s does not exist: starting from scratch", last)
        return None
    if not Path(ckpt_path).exists():
        raise RefusedBeforeStart(f"ckpt_path={ckpt_path}: no such checkpoint file or folder")
    return str(ckpt_path)


def check_resume(ckpt_path: str, method: Any) -> ResumePoint:
    """Where the checkpoint resumes (step, logger ids) if it belongs to this run's method and set-up; else
    ``RefusedBeforeStart``, raised before anything is written to the run folder."""
    from mirage.methods.base import CheckpointMismatchError, check_checkpoint_signature, read_checkpoint

    if not Path(ckpt_path).is_file():  # DeepSpeed writes a folder of shards; Lightning checks it on load
        log.warning(
            "%s is a folder (DeepSpeed): mirage's checkpoint signature is not checked, and the loggers start "
            "their files afresh",
            ckpt_path,
        )
        return ResumePoint(step=None)
    try:
        checkpoint = read_checkpoint(ckpt_path)
        check_checkpoint_signature(checkpoint, method.checkpoint_signature(), source=ckpt_path)
    except CheckpointMismatchError as err:
        raise RefusedBeforeStart(str(err)) from err
    return ResumePoint.from_checkpoint(checkpoint)


@task_wrapper
def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    from mirage.models.finetune import count_parameters
    from mirage.utils.export import GatherForExport
    from mirage.utils.io import write_json
    from mirage.utils.logging import instantiate_loggers, log_export_artifact, log_run_metadata
    from mirage.utils.objective import OBJECTIVE_KEY, add_objective
    from mirage.utils.resume import ExactResume

    output_dir = Path(cfg.paths.output_dir)
    # A resume writes nothing to the run folder until its checkpoint is accepted (configs/hydra/default.yaml).
    run_folder = DeferredRunFolder(cfg) if cfg.get("ckpt_path") not in (None, "") else None
    try:
        ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir / "checkpoints")
        if cfg.get("seed") is not None:
            L.seed_everything(cfg.seed, workers=True)
        model, processor = build_model(cfg)
        method = instantiate(cfg.method, model=model, processor=processor)
        resume = check_resume(ckpt_path, method) if ckpt_path is not None else None
    except RefusedBeforeStart:
        if run_folder is not None:
            run_folder.discard()
        raise
    except BaseException:
        if run_folder is not None:  # a failure, not a refusal: the folder gets its files (and error.txt)
            run_folder.open()
        raise
    if run_folder is not None:
        run_folder.open()
    if resume is not None:
        log.info("resuming from %s", ckpt_path)

    datamodule = instantiate(cfg.data, processor=processor, train_splits=method.train_splits)
    callbacks = instantiate_list(cfg.get("callbacks"), "callback")
    curves = curves_callback(cfg)  # train.yaml's curves: safety metrics every N steps
    if curves is not None:
        callbacks.append(curves)
    callbacks.append(ExactResume())  # data order, random states and log history continue across a resume
    if cfg.get("export_hf", True):
        callbacks.append(GatherForExport())  # full weights for the export under FSDP / ZeRO-3
    loggers = instantiate_loggers(cfg.get("logger"), resume)
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    params = count_parameters(model)
    log.info("parameters: %s", params)
    log_run_metadata(trainer.loggers, cfg, params)
    trainer.fit(method, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    metrics["trainable_params"] = params["trainable"]
    hf_dir = output_dir / "hf"
    if cfg.get("export_hf", True) and trainer.is_global_zero:
        method.save_pretrained(hf_dir, extra={"config": OmegaConf.to_container(cfg.model)})
        log_export_artifact(trainer.loggers, hf_dir)
    spec = cfg.get("evaluate")
    if spec is not None and spec.get("experiment"):
        if not cfg.get("export_hf", True):
            raise ValueError("evaluate.experiment needs export_hf=true: it evaluates the exported hf/ dir")
        from mirage.workflows.train_then_eval import evaluate_export

        trainer.strategy.barrier()  # the export is complete before any rank loads it
        loggers_here = trainer.loggers if trainer.is_global_zero else []
        metrics.update(evaluate_export(spec, cfg, hf_dir, loggers_here, step=trainer.global_step))
    add_objective(metrics, cfg.get("objective"))
    if trainer.is_global_zero:
        if OBJECTIVE_KEY in metrics:
            for logger in trainer.loggers:  # a W&B sweep reads it from the run's summary
                logger.log_metrics({OBJECTIVE_KEY: metrics[OBJECTIVE_KEY]}, step=trainer.global_step)
        for logger in trainer.loggers:
            logger.save()
        write_json(output_dir / "metrics.json", metrics)  # strict JSON: a NaN metric is written as null
    return metrics, {"trainer": trainer, "method": method, "datamodule": datamodule}
