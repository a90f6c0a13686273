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
import logging.handlers
import os
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mirage.utils.hydra import (
    RefusedBeforeStart,
    instantiate_list,
    metric_value,
    print_config_tree,
    register_resolvers,
    task_wrapper,
)
from mirage.utils.resume import ResumePoint

log = logging.getLogger(__name__)
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "configs")


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
        from mirage.utils.eval_after_train import evaluate_export

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


class DeferredRunFolder:
    """What Hydra and ``main()`` write to the run folder before the job, written once a resume is accepted.

    With ``ckpt_path`` set, configs/hydra/default.yaml withholds Hydra's ``.hydra/`` files and keeps the job
    log on the console (``if_resuming`` resolvers); this buffers the job's log records meanwhile. ``open()``
    then writes ``.hydra/``, ``config_tree.yaml`` and the job log (appending the buffered records) as Hydra
    would have; ``discard()`` leaves the folder as it was. Outside a ``mirage-train`` Hydra job (e.g. a
    pipeline stage) nothing was withheld, and both only drop the buffer.
    """

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.buffer = logging.handlers.MemoryHandler(capacity=1_000_000, flushLevel=logging.CRITICAL + 1)
        logging.getLogger().addHandler(self.buffer)

    def _hydra(self) -> Any:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return None
        hydra_cfg = HydraConfig.get()
        if Path(hydra_cfg.runtime.output_dir).resolve() != Path(self.cfg.paths.output_dir).resolve():
            return None  # train() called inside another job (mirage-pipeline): that job owns its folder
        return hydra_cfg

    def open(self) -> None:
        from hydra.core.hydra_config import HydraConfig

        root = logging.getLogger()
        root.removeHandler(self.buffer)
        hydra_cfg = self._hydra()
        if hydra_cfg is None:  # nothing was withheld: the records reached the job's handlers already
            self.discard()
            return
        output_dir = Path(hydra_cfg.runtime.output_dir)
        if hydra_cfg.output_subdir is None and OmegaConf.is_interpolation(hydra_cfg, "output_subdir"):
            hydra_dir = output_dir / ".hydra"  # the name configs/hydra/default.yaml gives when not resuming
            hydra_dir.mkdir(parents=True, exist_ok=True)
            (hydra_dir / "config.yaml").write_text(OmegaConf.to_yaml(self.cfg))
            (hydra_dir / "hydra.yaml").write_text(OmegaConf.to_yaml(HydraConfig.instance().cfg))
            (hydra_dir / "overrides.yaml").write_text(OmegaConf.to_yaml(hydra_cfg.overrides.task))
        if self.cfg.get("extras", {}).get("print_config", True):
            (output_dir / "config_tree.yaml").write_text(OmegaConf.to_yaml(self.cfg))
        job_logging = hydra_cfg.job_logging
        handlers = list(job_logging.get("root", {}).get("handlers") or [])
        file_spec = job_logging.get("handlers", {}).get("file")
        withheld = OmegaConf.is_interpolation(job_logging.root, "handlers")
        if file_spec is not None and "file" not in handlers and withheld:
            file_handler = logging.FileHandler(file_spec.filename, mode="a", encoding="utf-8")
            formatter = job_logging.get("formatters", {}).get(file_spec.get("formatter"), {})
            file_handler.setFormatter(logging.Formatter(formatter.get("format")))
            root.addHandler(file_handler)
            self.buffer.setTarget(file_handler)  # the records so far reached the console only
            self.buffer.flush()
        self.discard()

    def discard(self) -> None:
        logging.getLogger().removeHandler(self.buffer)
        self.buffer.buffer.clear()
        self.buffer.close()


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train.yaml")
def main(cfg: DictConfig) -> float | None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if cfg.get("extras", {}).get("print_config", True):
        # A resume saves the tree once its checkpoint is accepted (DeferredRunFolder).
        resuming = cfg.get("ckpt_path") not in (None, "")
        print_config_tree(cfg, save_to=None if resuming else Path(cfg.paths.output_dir) / "config_tree.yaml")
    metrics, _ = train(cfg)
    return metric_value(metrics, cfg.get("optimized_metric")) if not metrics.get("failed") else None


register_resolvers()

if __name__ == "__main__":
    main()
