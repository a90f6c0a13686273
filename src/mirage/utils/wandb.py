"""Weights & Biases: the logger factory (offline unless an account is configured), a logger that can upload
a directory as an artifact, and the resolvers that name a run, its group, job type and tags from the Hydra
job (registered by ``mirage.utils.hydra.register_resolvers``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger

log = logging.getLogger(__name__)


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
