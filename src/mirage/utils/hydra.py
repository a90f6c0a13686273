"""Hydra helpers: the task wrapper, instantiation of callbacks and loggers, config printing, resolvers."""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)


class RefusedBeforeStart(Exception):
    """A task refused to start before writing anything to its run folder (e.g. a resume from a checkpoint
    of another method): ``task_wrapper`` reports it without writing
    ``error.txt``: the folder stays as it was."""


def register_resolvers() -> None:
    """The OmegaConf resolvers of run folders and loggers (idempotent); the data resolvers are in
    ``mirage.data.resolvers``, and ``mirage.workflows.configs.register_resolvers`` registers both."""
    _register_wandb_resolvers()
    if not OmegaConf.has_resolver("if_resuming"):

        def if_resuming(ckpt_path: Any, resuming: Any, otherwise: Any) -> Any:
            """``${if_resuming:${oc.select:ckpt_path,null},<value when resuming>,<value otherwise>}``: Hydra's
            run-folder writes that a resume withholds until its checkpoint is accepted (configs/hydra/)."""
            return otherwise if ckpt_path in (None, "") else resuming

        OmegaConf.register_new_resolver("if_resuming", if_resuming)


def _register_wandb_resolvers() -> None:
    """``wandb_group``, ``wandb_name``, ``wandb_job_type``, ``wandb_tags`` (configs/logger/wandb.yaml)."""
    from mirage.utils import wandb as wandb_resolvers

    for name in ("wandb_group", "wandb_name", "wandb_job_type", "wandb_tags"):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, getattr(wandb_resolvers, name))


def task_wrapper(task: Callable[[DictConfig], tuple[dict[str, Any], dict[str, Any]]]):
    """Run a task so that a failure is logged (with traceback, into the run dir) instead of killing a
    multirun, and so that W&B is always closed. Returns ``(metrics, objects)``; on failure the metrics
    hold ``{"failed": True, "error": ...}`` and the exception is re-raised only for single runs. A
    ``RefusedBeforeStart`` is only logged (to the console): the run folder stays as it was."""

    @functools.wraps(task)
    def wrapped(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            return task(cfg)
        except RefusedBeforeStart as err:
            log.error("%s", err)  # the run folder is left exactly as it was: no error.txt
            if not is_multirun():
                raise
            return {"failed": True, "error": f"{type(err).__name__}: {err}"}, {}
        except Exception as err:
            output_dir = Path(cfg.paths.output_dir)
            output_dir.mkdir(parents=True, exist_ok=True)
            (output_dir / "error.txt").write_text(traceback.format_exc())
            log.exception("task failed; traceback saved to %s", output_dir / "error.txt")
            if not is_multirun():
                raise
            return {"failed": True, "error": f"{type(err).__name__}: {err}"}, {}
        finally:
            close_wandb()
            log.info("output dir: %s", cfg.paths.output_dir)

    return wrapped


def is_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # outside Hydra
        return False


def close_wandb() -> None:
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            log.info("closing wandb run")
            wandb.finish()


def instantiate_list(cfg: DictConfig | None, kind: str) -> list[Any]:
    """Instantiate every ``_target_`` entry of a config group dict (callbacks, loggers)."""
    from hydra.utils import instantiate

    objects: list[Any] = []
    if not cfg:
        return objects
    if not isinstance(cfg, DictConfig):
        raise TypeError(f"{kind} config must be a dict of named entries")
    for name, entry in cfg.items():
        if isinstance(entry, DictConfig) and "_target_" in entry:
            log.info("instantiating %s %s <%s>", kind, name, entry._target_)
            objects.append(instantiate(entry))
    return objects


def start_run(cfg: DictConfig, save_tree: bool = True, rank_zero: bool = True) -> None:
    """What every entry point does first: no tokenizer threads beside torch's, the known third-party noise
    dropped (``extras.ignore_warnings``), the config saved to ``config_tree.yaml`` (unless ``save_tree`` is
    off, e.g. for a resume, which saves it once its checkpoint is accepted) and printed with
    ``extras.print_config``; only ``rank_zero`` writes or prints."""
    from mirage.utils.quiet import quiet_third_party

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    extras = cfg.get("extras") or {}
    quiet_third_party(bool(extras.get("ignore_warnings", True)))
    if rank_zero:
        tree = Path(cfg.paths.output_dir) / "config_tree.yaml" if save_tree else None
        print_config_tree(cfg, save_to=tree, show=bool(extras.get("print_config", False)))


def print_config_tree(
    cfg: DictConfig, save_to: str | Path | None = None, resolve: bool = False, show: bool = True
) -> None:
    """Save the composed config as YAML, and with ``show`` print it as a rich tree (top-level groups
    first): ``extras.print_config`` (off by default: a run's console is for its progress)."""
    if save_to is not None:
        Path(save_to).write_text(OmegaConf.to_yaml(cfg, resolve=resolve))
    if not show:
        return
    import rich
    import rich.syntax
    import rich.tree

    tree = rich.tree.Tree("config", style="dim", guide_style="dim")
    order = ["data", "model", "method", "finetune", "trainer", "callbacks", "logger", "paths", "extras"]
    for field in [*[f for f in order if f in cfg], *[f for f in cfg if f not in order]]:
        branch = tree.add(str(field), style="bold", guide_style="dim")
        value = cfg[field]
        text = OmegaConf.to_yaml(value, resolve=resolve) if isinstance(value, DictConfig) else str(value)
        branch.add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)


def metric_value(metrics: dict[str, Any], name: str | None) -> float | None:
    """The value of ``name`` for Hydra sweepers (Optuna) to optimise."""
    if not name:
        return None
    if name not in metrics:
        raise KeyError(f"optimized metric {name!r} not among {sorted(metrics)}; check `optimized_metric`")
    value = metrics[name]
    return float(value.item() if hasattr(value, "item") else value)
