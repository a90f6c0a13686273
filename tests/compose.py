"""Composing mirage's Hydra configs in-process, as the entry points do, with run paths under a test folder."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

from mirage.workflows.configs import register_resolvers

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def compose_config(
    overrides: list[str], tmp_path: Path, entry: str = "train.yaml", hydra_config: bool = False
) -> DictConfig:
    """``entry`` composed with ``overrides``; outputs and the project root point at ``tmp_path``."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(
            entry,
            overrides=[f"paths.output_dir={tmp_path}", f"paths.root_dir={tmp_path}", *overrides],
            return_hydra_config=hydra_config,
        )
