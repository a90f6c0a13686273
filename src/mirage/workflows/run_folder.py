"""Holding back a resumed run's writes to its folder until its checkpoint is accepted."""

from __future__ import annotations

import logging
import logging.handlers
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


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
