"""Where mirage's own Hydra configs live, and the config folders of the running Hydra app."""

from __future__ import annotations

import importlib.resources
from pathlib import Path


def packaged_config_dir() -> Path:
    """The config folder that ships with mirage, ``mirage/configs`` inside the package (the one place that
    knows where it is). In a source checkout it is a link to the project's top-level ``configs/``; a wheel
    carries the files themselves (pyproject.toml, package-data)."""
    return Path(str(importlib.resources.files("mirage") / "configs")).resolve()


def hydra_config_dirs() -> list[Path]:
    """The folders of the running Hydra app's config search path, in Hydra's order: the primary config
    folder, then ``hydra.searchpath`` (``file://`` and ``pkg://`` entries). Empty outside a Hydra app.
    Hydra's own configs and structured-config sources are left out."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return []
    hydra_config = HydraConfig.get()
    cwd = Path(OmegaConf.select(hydra_config, "runtime.cwd", default=None) or ".")
    folders = []
    for source in OmegaConf.select(hydra_config, "runtime.config_sources", default=None) or []:
        if source.provider == "hydra" or source.schema not in ("file", "pkg"):
            continue
        if source.schema == "file":
            # A relative file:// path is relative to where the app was started.
            folders.append(cwd / source.path)
            continue
        try:  # pkg://a.b -> the package's folder on disk (a zipped package has none)
            folder = Path(str(importlib.resources.files(source.path.replace("/", "."))))
        except ModuleNotFoundError:
            continue
        if folder.is_dir():
            folders.append(folder)
    return folders
