"""A run's loggers: building them from the ``logger`` config group (continuing a resumed run's history),
the metadata every run sends them, and the upload of the exported model. The loggers themselves are in
``mirage.utils.loggers`` (CSV, TensorBoard) and ``mirage.utils.wandb``."""

from __future__ import annotations

import inspect
import logging
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from mirage.utils.wandb import WandbLogger, wandb_logger

if TYPE_CHECKING:
    from mirage.utils.resume import ResumePoint

log = logging.getLogger(__name__)

_VERSIONED = (
    "mirage",
    "torch",
    "lightning",
    "transformers",
    "peft",
    "bitsandbytes",
    "hydra-core",
    "wandb",
    "torchmetrics",
)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_commit(cwd: str | Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd or Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run_metadata(cfg: DictConfig, params: dict[str, int] | None = None) -> dict[str, Any]:
    """The resolved config plus ``versions``, ``git_commit`` and ``hydra`` (job, overrides, sweep dir)."""
    hparams: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    if params is not None:
        hparams["params"] = params
    hparams["versions"] = package_versions()
    hparams["git_commit"] = git_commit()
    hparams["hydra"] = hydra_job_info()
    return hparams


def log_run_metadata(loggers: list[Any], cfg: DictConfig, params: dict[str, int] | None = None) -> None:
    """Send the resolved config, parameter counts, versions and commit to every logger."""
    if not loggers:
        return
    hparams = run_metadata(cfg, params)
    for logger in loggers:
        logger.log_hyperparams(hparams)


def hydra_job_info() -> dict[str, Any]:
    """The Hydra job's name, overrides and (in a multirun) sweep folder and job number; {} outside Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            return {}
        hc = HydraConfig.get()
        info: dict[str, Any] = {"job_name": hc.job.name, "overrides": list(hc.overrides.task)}
        if hc.mode == RunMode.MULTIRUN:
            info.update(sweep_dir=str(hc.sweep.dir), job_num=hc.job.num)
        return info
    except Exception:  # a half-initialised Hydra must not stop a run from logging
        return {}


def log_export_artifact(loggers: list[Any], hf_dir: Path) -> None:
    """Upload the exported ``hf/`` dir as a W&B model artifact, for W&B loggers built with
    ``log_export=True`` (offline runs keep it until ``wandb sync``)."""
    for logger in loggers:
        if isinstance(logger, WandbLogger) and logger.log_export:
            logger.log_directory(hf_dir, kind="model")


def instantiate_loggers(cfg: DictConfig | None, resume: ResumePoint | None = None) -> list[Logger]:
    """The loggers of a ``logger`` config group. Resuming, those that can continue the run's history do:
    the ``CSVLogger`` and ``TensorBoardLogger`` of ``mirage.utils.loggers`` get the checkpoint's step,
    ``wandb_logger`` the W&B run id saved in the checkpoint (unless ``id`` is set), so the resumed run
    continues the same W&B run."""
    from hydra.utils import get_object, instantiate

    loggers: list[Logger] = []
    if not cfg:
        return loggers
    if not isinstance(cfg, DictConfig):
        raise TypeError("logger config must be a dict of named entries")
    for name, entry in cfg.items():
        if not (isinstance(entry, DictConfig) and "_target_" in entry):
            continue
        extra: dict[str, Any] = {}
        if resume is not None:
            target = get_object(entry._target_)
            if "resume_step" in inspect.signature(target).parameters:
                if resume.step is not None:
                    extra["resume_step"] = resume.step
            elif isinstance(target, type) and issubclass(
                target, (LightningCSVLogger, LightningTensorBoardLogger)
            ):
                log.warning(
                    "logger %s <%s> starts its files afresh on resume; mirage.utils.loggers' would keep them",
                    name,
                    entry._target_,
                )
            if target is wandb_logger and entry.get("id") is None and resume.wandb_run_id:
                extra["id"] = resume.wandb_run_id
        log.info("instantiating logger %s <%s>", name, entry._target_)
        loggers.append(instantiate(entry, **extra))
    return loggers
