"""``mirage-pipeline``: a chain of training stages, then evaluation of chosen stages, then a report.

    mirage-pipeline experiment=mirage_demo            # what `make demo` runs
    mirage-pipeline experiment=mirage_demo seed=3     # another seed: new data, new models

A stage is a ``mirage-train`` run (``configs/train.yaml`` plus the stage's overrides) that may start
from another stage's exported model (``init_from``). Each stage lives under
``<stage_cache_dir>/<name>-<hash>``, the hash taken over everything that determines its weights (the
resolved model, data, method, fine-tuning and trainer settings and the seed; a parent's directory name
carries the parent's hash). A finished stage is reused; an interrupted one resumes from its
``last.ckpt``. Evaluations are cached the same way, under the stage's folder, and resume from the
answers already written. The report (``report.md``, ``report.png``, ``report.json``) goes to this
run's directory.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from mirage.utils.hydra import start_run
from mirage.utils.sweeps import hydra_cli
from mirage.workflows.configs import CONFIG_DIR, register_resolvers
from mirage.workflows.pipeline import pipeline


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="pipeline.yaml")
def main(cfg: DictConfig) -> float | None:
    start_run(cfg)
    metrics, _ = pipeline(cfg)
    name = cfg.get("optimized_metric")
    return float(metrics[name]) if name and name in metrics else None


register_resolvers()
cli = hydra_cli(main)  # the console script: exits non-zero when a multirun job failed

if __name__ == "__main__":
    cli()
