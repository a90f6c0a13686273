"""mirage's Hydra configs: where they are (inside the package, so an installed wheel finds them from any
folder), the resolvers they use, and composing them outside a Hydra app."""

from __future__ import annotations

from omegaconf import DictConfig

from mirage.utils.config_dirs import packaged_config_dir

#: The primary config folder of every entry point (a user's own folders join through hydra.searchpath).
CONFIG_DIR = str(packaged_config_dir())
_searchpath: list[str] = []  # a worker process's copy of its parent app's hydra.searchpath


def set_searchpath(searchpath: list[str]) -> None:
    """Config folders that ``compose`` adds outside a Hydra app (a pipeline worker gets its parent's)."""
    _searchpath[:] = [str(p) for p in searchpath]


def register_resolvers() -> None:
    """Every resolver mirage's configs use: run folders and loggers (utils), generated data (data)."""
    from mirage.data.resolvers import register_resolvers as register_data_resolvers
    from mirage.utils.hydra import register_resolvers as register_run_resolvers

    register_run_resolvers()
    register_data_resolvers()


def compose(config_name: str, overrides: list[str], **kwargs) -> DictConfig:
    """``config_name`` composed with ``overrides``: inside a running Hydra app with its own search path
    (the user's ``hydra.searchpath`` included), else from mirage's packaged configs."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    if GlobalHydra.instance().is_initialized():
        return hydra_compose(config_name=config_name, overrides=overrides, **kwargs)
    if _searchpath and not any(o.startswith("hydra.searchpath=") for o in overrides):
        overrides = [*overrides, "hydra.searchpath=[" + ",".join(f"'{p}'" for p in _searchpath) + "]"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides, **kwargs)
