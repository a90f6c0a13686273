"""Loggers and run metadata: the W&B logger factory (offline unless an account is configured), CSV and
TensorBoard loggers that continue a resumed run's history, and the metadata every run logs."""

from __future__ import annotations

import csv
import inspect
import logging
import os
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import Logger
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from omegaconf import DictConfig, OmegaConf

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


def wandb_has_credentials() -> bool:
    """True when an API key is available (environment or ``wandb login``'s netrc entry)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


_LEGACY_MODES = {"dryrun": "offline", "run": "online"}


class WandbLogger(LightningWandbLogger):
    """Lightning's ``WandbLogger`` that can also log a directory (the HF export) as an artifact."""

    def __init__(
        self, *args: Any, log_export: bool = False, log_model: bool | str = False, **kwargs: Any
    ) -> None:
        # Lightning refuses log_model in offline mode, yet an offline W&B run records artifacts and uploads
        # them at `wandb sync`: set the flag after Lightning's check.
        super().__init__(*args, log_model=False, **kwargs)
        self._log_model = log_model
        self.log_export = log_export

    def log_directory(self, path: Path, kind: str = "model") -> None:
        import wandb

        run = self.experiment
        artifact = wandb.Artifact(name=f"hf-{run.id}", type=kind, metadata={"path": str(path)})
        artifact.add_dir(str(path))
        run.log_artifact(artifact, aliases=["latest"])
        log.info("logged %s as W&B artifact %s", path, artifact.name)


def wandb_logger(mode: str = "auto", log_export: bool = False, **kwargs: Any) -> WandbLogger:
    """Lightning's ``WandbLogger``; ``mode`` is ``auto`` (online with credentials, else offline),
    ``online``, ``offline`` or ``disabled``. An explicit ``WANDB_MODE`` in the environment wins.
    ``log_model`` (Lightning's) uploads checkpoints, ``log_export`` the final ``hf/`` dir, as artifacts."""
    env_mode = os.environ.get("WANDB_MODE")
    if env_mode:
        # wandb itself sets WANDB_MODE to its legacy names (dryrun, run) once a run has started, so the
        # second job of a multirun in the same process reads those.
        mode = _LEGACY_MODES.get(env_mode, env_mode)
    elif mode == "auto":
        mode = "online" if wandb_has_credentials() else "offline"
    if mode not in ("online", "offline", "disabled"):
        raise ValueError(f"logger.wandb.mode must be auto, online, offline or disabled, got {mode!r}")
    save_dir = kwargs.get("save_dir")
    if save_dir:
        Path(save_dir).mkdir(parents=True, exist_ok=True)
    log.info("W&B logging %s", mode)
    if mode == "disabled":
        return WandbLogger(mode="disabled", **kwargs)
    return WandbLogger(offline=mode == "offline", log_export=log_export, **kwargs)


# --- loggers that continue a resumed run's history ----------------------------------------------------------
class _ContinuedExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, except that an existing ``metrics.csv`` is continued rather than deleted: rows
    logged before ``resume_step`` stay as they are, rows from it on (the resumed run logs them again) go."""

    def __init__(self, log_dir: str, resume_step: int) -> None:
        self.resume_step = resume_step
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            rows = list(reader)
        kept = [row for number, row in enumerate(rows, 1) if self._step(row, number) < self.resume_step]
        self.metrics_keys = header  # later rows append under the same header (widened if new keys come)
        if len(kept) < len(rows):
            with self._fs.open(self.metrics_file_path, "w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=header)
                writer.writeheader()
                writer.writerows(kept)
        log.info(
            "continuing %s: kept %d rows before step %d", self.metrics_file_path, len(kept), self.resume_step
        )

    def _step(self, row: dict[str, str], number: int) -> float:
        try:
            return float(row.get("step") or "")
        except ValueError:
            raise ValueError(
                f"{self.metrics_file_path}: row {number}: field 'step': not a number ({row.get('step')!r}); "
                "cannot tell which rows come before the checkpoint"
            ) from None


class CSVLogger(LightningCSVLogger):
    """Lightning's ``CSVLogger``; with ``resume_step`` (set by mirage-train when it resumes from a
    checkpoint), ``metrics.csv`` keeps the rows logged before that step instead of being deleted."""

    def __init__(self, *args: Any, resume_step: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.resume_step = resume_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None and self.resume_step is not None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuedExperimentWriter(self.log_dir, self.resume_step)
        return super().experiment


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's ``TensorBoardLogger``; with ``resume_step`` (set by mirage-train when it resumes), the new
    event file tells TensorBoard to hide the killed run's events from that step on (``purge_step``), which the
    resumed run logs again; the events before it stay."""

    def __init__(self, *args: Any, resume_step: int | None = None, **kwargs: Any) -> None:
        if resume_step is not None:
            kwargs["purge_step"] = resume_step
        super().__init__(*args, **kwargs)


def instantiate_loggers(cfg: DictConfig | None, resume: ResumePoint | None = None) -> list[Logger]:
    """The loggers of a ``logger`` config group. Resuming, those that can continue the run's history do:
    mirage's ``CSVLogger`` and ``TensorBoardLogger`` get the checkpoint's step, ``wandb_logger`` the W&B run
    id saved in the checkpoint (unless ``id`` is set), so the resumed run continues the same W&B run."""
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
                    "logger %s <%s> starts its files afresh on resume; mirage.utils.logging's keeps them",
                    name,
                    entry._target_,
                )
            if target is wandb_logger and entry.get("id") is None and resume.wandb_run_id:
                extra["id"] = resume.wandb_run_id
        log.info("instantiating logger %s <%s>", name, entry._target_)
        loggers.append(instantiate(entry, **extra))
    return loggers


# --- W&B run fields from the Hydra job (resolvers, registered by mirage.utils.hydra.register_resolvers) ---
_JOB_TYPES = {"train": "train", "evaluate": "eval"}
_UNTAGGED = ("paths.", "hydra.", "hydra/", "extras.", "logger", "callbacks.", "evaluate.")


def _hydra_job() -> Any:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if HydraConfig.initialized():
            hc = HydraConfig.get()
            return hc, hc.mode == RunMode.MULTIRUN
    except Exception:  # pragma: no cover - composing outside a Hydra app
        pass
    return None, False


def wandb_group() -> str:
    """``${wandb_group:}``: a multirun's sweep folder name, so every job of one sweep is one W&B group."""
    hc, multirun = _hydra_job()
    return Path(str(hc.sweep.dir)).name if multirun else ""


def wandb_name(task_name: str) -> str:
    """``${wandb_name:${task_name}}``: the task name, plus ``-<job number>`` in a multirun."""
    hc, multirun = _hydra_job()
    return f"{task_name}-{hc.job.num}" if multirun else str(task_name)


def wandb_job_type() -> str:
    """``${wandb_job_type:}``: ``train`` or ``eval`` after the entry point (its Hydra job name)."""
    hc, _ = _hydra_job()
    name = str(hc.job.name) if hc is not None else "run"
    return _JOB_TYPES.get(name, name)


def wandb_tags(tags: Any) -> list[str]:
    """``${wandb_tags:${tags}}``: the config's tags, plus a multirun job's own overrides (e.g. ``method=npo``,
    W&B's 64-character limit applied) so that sweep points can be filtered by tag."""
    out = [str(t) for t in (tags or [])]
    hc, multirun = _hydra_job()
    if multirun:
        out += [o[:64] for o in hc.overrides.task if not o.startswith(_UNTAGGED)]
    return list(dict.fromkeys(out))
