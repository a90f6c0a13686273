"""``mirage-train``: load a VLM, make it trainable, run a method on a datamodule, export an HF directory,
and optionally evaluate that export in the same job (``evaluate.experiment``). The job itself is
:func:`mirage.workflows.training.train`.

mirage-train experiment=sft_tiny
mirage-train -m finetune=full,lora method.optimizer.lr=1e-4,3e-4
mirage-train experiment=sft_tiny hydra.run.dir=<killed run dir> ckpt_path=last   # resume
mirage-train -m experiment=unlearn_eval_tiny method=npo,rmu method.optimizer.lr=1e-4,1e-3  # train, then eval
mirage-train -m experiment=npo_tiny hparams_search=npo_optuna_tiny             # Optuna on the objective
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from mirage.utils.hydra import metric_value, start_run
from mirage.utils.sweeps import hydra_cli
from mirage.workflows.configs import CONFIG_DIR, register_resolvers
from mirage.workflows.training import train


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train.yaml")
def main(cfg: DictConfig) -> float | None:
    # A resume saves the tree once its checkpoint is accepted (DeferredRunFolder).
    start_run(cfg, save_tree=cfg.get("ckpt_path") in (None, ""))
    metrics, _ = train(cfg)
    return metric_value(metrics, cfg.get("optimized_metric")) if not metrics.get("failed") else None


register_resolvers()
cli = hydra_cli(main)  # the console script: exits non-zero when a multirun job failed

if __name__ == "__main__":
    cli()
