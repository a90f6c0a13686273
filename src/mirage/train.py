"""``mirage-train``: load a VLM, make it trainable, run a method on a datamodule, export an HF directory.

mirage-train experiment=sft_tiny
mirage-train -m finetune=full,lora method.optimizer.lr=1e-4,3e-4
mirage-train experiment=sft_tiny hydra.run.dir=<killed run dir> ckpt_path=last   # resume
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
    from mirage.utils.logging import log_run_metadata

    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)

    model, processor = build_model(cfg)
    method = instantiate(cfg.method, model=model, processor=processor)
    datamodule = instantiate(cfg.data, processor=processor, train_splits=method.train_splits)
    callbacks = instantiate_list(cfg.get("callbacks"), "callback")
    loggers = instantiate_list(cfg.get("logger"), "logger")
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    params = count_parameters(model)
    log.info("parameters: %s", params)
    log_run_metadata(trainer, cfg, params)

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
    if cfg.get("export_hf", True) and trainer.is_global_zero:
        method.save_pretrained(output_dir / "hf", extra={"config": OmegaConf.to_container(cfg.model)})
    if trainer.is_global_zero:
        import json

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
