"""Run metadata for loggers, and the W&B logger factory (offline unless an account is configured)."""

from __future__ import annotations

import logging
import os
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

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


def log_run_metadata(trainer: Any, cfg: DictConfig, params: dict[str, int]) -> None:
    """Send the resolved config, parameter counts, versions and commit to every logger."""
    if not trainer.loggers:
        return
    hparams: dict[str, Any] = OmegaConf.to_container(cfg, resolve=True)  # type: ignore[assignment]
    hparams["params"] = params
    hparams["versions"] = package_versions()
    hparams["git_commit"] = git_commit()
    for logger in trainer.loggers:
        logger.log_hyperparams(hparams)


def wandb_has_credentials() -> bool:
    """True when an API key is available (environment or ``wandb login``'s netrc entry)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text()
    except OSError:
        return False


def wandb_logger(mode: str = "auto", **kwargs: Any):
    """Lightning's ``WandbLogger``; ``mode`` is ``auto`` (online with credentials, else offline),
    ``online``, ``offline`` or ``disabled``. An explicit ``WANDB_MODE`` in the environment wins."""
    from lightning.pytorch.loggers import WandbLogger

    env_mode = os.environ.get("WANDB_MODE")
    if env_mode:
        mode = env_mode
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
    return WandbLogger(offline=mode == "offline", **kwargs)
