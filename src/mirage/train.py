"""``mirage-train``: load a VLM, make it trainable, run a method on a datamodule, export an HF directory,
and optionally evaluate that export in the same job (``evaluate.experiment``).

mirage-train experiment=sft_tiny
mirage-train -m finetune=full,lora method.optimizer.lr=1e-4,3e-4
mirage-train experiment=sft_tiny hydra.run.dir=<killed run dir> ckpt_path=last   # resume
mirage-train -m experiment=unlearn_eval_tiny method=npo,rmu method.optimizer.lr=1e-4,1e-3  # train, then eval
mirage-train -m experiment=npo_tiny hparams_search=npo_optuna_tiny             # Optuna on the objective
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mirage.utils.hydra import (
    instantiate_list,
    metric_value,
    print_config_tree,
    register_resolvers,
    task_wrapper,
)

log = logging.getLogger(__name__)
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")


def build_model(cfg: DictConfig):
    """(model made trainable per ``cfg.finetune``, processor)."""
    from mirage.models.finetune import FinetuneSpec, apply_finetune

    finetune: FinetuneSpec = instantiate(cfg.finetune, _convert_="all")
    model, processor = instantiate(cfg.model, quantization=finetune.quantization, _convert_="all")
    return apply_finetune(model, finetune), processor


def resolve_ckpt_path(ckpt_path: str | None, checkpoint_dir: Path) -> str | None:
    """``last`` means ``<checkpoint_dir>/last.ckpt`` of this run dir; absent, training starts fresh."""
    if ckpt_path in (None, ""):
        return None
    if ckpt_path == "last":
        last = checkpoint_dir / "last.ckpt"
        if last.exists():  # a file, or a folder for DeepSpeed
            return str(last)
        log.warning("ckpt_path=last but %s does not exist: starting from scratch", last)
        return None
    return str(ckpt_path)


@task_wrapper
def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    from mirage.methods.base import check_checkpoint_signature, read_checkpoint
    from mirage.models.finetune import count_parameters
    from mirage.utils.export import GatherForExport
    from mirage.utils.logging import log_export_artifact, log_run_metadata
    from mirage.utils.objective import OBJECTIVE_KEY, add_objective

    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)

    model, processor = build_model(cfg)
    method = instantiate(cfg.method, model=model, processor=processor)
    datamodule = instantiate(cfg.data, processor=processor, train_splits=method.train_splits)
    callbacks = instantiate_list(cfg.get("callbacks"), "callback")
    if cfg.get("export_hf", True):
        callbacks.append(GatherForExport())  # full weights for the export under FSDP / ZeRO-3
    loggers = instantiate_list(cfg.get("logger"), "logger")
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    params = count_parameters(model)
    log.info("parameters: %s", params)
    log_run_metadata(trainer.loggers, cfg, params)

    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir / "checkpoints")
    if ckpt_path is not None:
        if Path(ckpt_path).is_file():
            check_checkpoint_signature(
                read_checkpoint(ckpt_path), method.checkpoint_signature(), source=ckpt_path
            )
        else:  # DeepSpeed writes a folder of shards; Lightning checks it on load
            log.warning("%s is a folder (DeepSpeed): mirage's checkpoint signature is not checked", ckpt_path)
        log.info("resuming from %s", ckpt_path)
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
        from mirage.utils.eval_after_train import evaluate_export

        trainer.strategy.barrier()  # the export is complete before any rank loads it
        loggers_here = trainer.loggers if trainer.is_global_zero else []
        metrics.update(evaluate_export(spec, cfg, hf_dir, loggers_here, step=trainer.global_step))
    add_objective(metrics, cfg.get("objective"))
    if trainer.is_global_zero:
        import json

        if OBJECTIVE_KEY in metrics:
            for logger in trainer.loggers:  # a W&B sweep reads it from the run's summary
                logger.log_metrics({OBJECTIVE_KEY: metrics[OBJECTIVE_KEY]}, step=trainer.global_step)
        for logger in trainer.loggers:
            logger.save()
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics, {"trainer": trainer, "method": method, "datamodule": datamodule}


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train.yaml")
def main(cfg: DictConfig) -> float | None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if cfg.get("extras", {}).get("print_config", True):
        print_config_tree(cfg, save_to=Path(cfg.paths.output_dir) / "config_tree.yaml")
    metrics, _ = train(cfg)
    return metric_value(metrics, cfg.get("optimized_metric")) if not metrics.get("failed") else None


register_resolvers()

if __name__ == "__main__":
    main()
