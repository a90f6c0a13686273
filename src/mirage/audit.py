"""``mirage-audit``: is a safety method's safety real? Every probe (configs/probe/) on every model, the usual
cases on each, and an audit card per model plus one comparison (:mod:`mirage.workflows.audit`).

    mirage-audit models="{npo: logs/npo_tiny/runs/<ts>/hf, sft: logs/sft_tiny/runs/<ts>/hf}"
    mirage-audit experiment=audit_tiny probes.relearn.steps=[0,10,50]      # any probe setting
    mirage-audit ... probes.quantize=null                                    # leave a probe out
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from mirage.utils.hydra import metric_value, start_run
from mirage.utils.sweeps import hydra_cli
from mirage.workflows.audit import audit
from mirage.workflows.configs import CONFIG_DIR, register_resolvers


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="audit.yaml")
def main(cfg: DictConfig) -> float | None:
    start_run(cfg)
    metrics, _ = audit(cfg)
    return metric_value(metrics, cfg.get("optimized_metric")) if not metrics.get("failed") else None


register_resolvers()
cli = hydra_cli(main)  # the console script: exits non-zero when a multirun job failed

if __name__ == "__main__":
    cli()
