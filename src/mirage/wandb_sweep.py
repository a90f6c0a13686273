"""``mirage-wandb-sweep``: turn a Hydra sweep (``hydra.sweeper.params`` of an hparams_search config, or
sweep overrides) into a ``wandb sweep`` YAML, so the same search can run with W&B agents.

    mirage-wandb-sweep experiment=npo_tiny hparams_search=npo_optuna_tiny --out sweep.yaml
    wandb sweep sweep.yaml && wandb agent <entity/project/sweep id>

Each agent run is one plain ``mirage-train`` job: the given overrides (the hparams_search config included,
for its objective and ``evaluate:``) plus ``logger=wandb`` plus the sampled parameters, which W&B passes as
``key=value`` (``${args_no_hyphens}``), Hydra's own override syntax. The run logs ``objective`` to W&B,
which the sweep's ``metric`` names.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# Optuna samplers -> W&B search methods (W&B has no TPE; its Bayesian search plays the same part).
_METHODS = {"TPESampler": "bayes", "RandomSampler": "random", "GridSampler": "grid", "CmaEsSampler": "bayes"}


def parameter_spec(key: str, value: Any) -> dict[str, Any]:
    """One Hydra sweep value (``interval(a, b)``, ``tag(log, interval(a, b))``, ``choice(...)``,
    ``range(a, b, step)``, ``a,b,c`` or a plain value) as a W&B parameter."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    override = OverridesParser.create().parse_override(f"{key}={value}")
    parsed = override.value()
    if isinstance(parsed, IntervalSweep):
        log = "log" in parsed.tags
        if isinstance(parsed.start, int) and isinstance(parsed.end, int) and not log:
            return {"distribution": "int_uniform", "min": parsed.start, "max": parsed.end}
        return {
            "distribution": "log_uniform_values" if log else "uniform",
            "min": float(parsed.start),
            "max": float(parsed.end),
        }
    if isinstance(parsed, ChoiceSweep):
        return {"values": list(parsed.list)}
    if isinstance(parsed, RangeSweep):
        values, current = [], parsed.start
        while (parsed.step > 0 and current < parsed.stop) or (parsed.step < 0 and current > parsed.stop):
            values.append(current)
            current += parsed.step
        return {"values": values}
    return {"value": parsed}


def split_overrides(overrides: list[str]) -> tuple[list[str], dict[str, str]]:
    """(fixed overrides, sweep overrides such as ``method=npo,rmu`` as {key: value})."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    fixed, swept = [], {}
    for text in overrides:
        override = parser.parse_override(text)
        if override.is_sweep_override():
            swept[override.get_key_element()] = text.split("=", 1)[1]
        elif not text.startswith("hydra.sweeper."):
            fixed.append(text)
    return fixed, swept


def sweep_spec(
    cfg: DictConfig, fixed: list[str], swept: dict[str, str] | None = None, module: str = "mirage.train"
) -> dict[str, Any]:
    """The W&B sweep for a composed config (with its ``hydra`` node), the run's fixed overrides and any
    sweep overrides given besides ``hydra.sweeper.params``."""
    sweeper = cfg.hydra.sweeper
    declared = sweeper.get("params")
    params = {**(OmegaConf.to_container(declared) if declared else {}), **(swept or {})}
    if not params:
        raise ValueError("no sweep parameters: pick an hparams_search config or pass hydra.sweeper.params")
    sampler = str(OmegaConf.select(sweeper, "sampler._target_", default="") or "")
    specs = {key: parameter_spec(key, value) for key, value in params.items()}
    if sampler:
        method = _METHODS.get(sampler.rsplit(".", 1)[-1], "bayes")
    else:  # a basic sweep: a grid when every parameter is a list of values
        method = "grid" if all("values" in spec for spec in specs.values()) else "bayes"
    metric = cfg.get("optimized_metric")
    if not metric:
        raise ValueError("set optimized_metric (e.g. objective): a W&B sweep needs a metric to optimise")
    direction = str(sweeper.get("direction", "minimize")).rsplit(".", 1)[-1]
    return {
        "name": str(OmegaConf.select(sweeper, "study_name", default=None) or cfg.task_name),
        "method": method,
        "metric": {"name": metric, "goal": direction},
        "parameters": specs,
        "command": ["${env}", "${interpreter}", "-m", module, *fixed, "${args_no_hyphens}"],
    }


def compose_train(overrides: list[str]) -> DictConfig:
    from mirage.workflows.configs import compose

    return compose("train", overrides, return_hydra_config=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mirage-wandb-sweep", description=__doc__.splitlines()[0])
    parser.add_argument(
        "overrides", nargs="*", help="mirage-train overrides, e.g. hparams_search=npo_optuna_tiny"
    )
    parser.add_argument("--out", help="write the sweep YAML here (default: print it)")
    parser.add_argument("--logger", default="wandb", help="the logger override added to every run")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    import yaml

    fixed, swept = split_overrides(args.overrides)
    spec = sweep_spec(compose_train(fixed), [*fixed, f"logger={args.logger}"], swept)
    text = yaml.safe_dump(spec, sort_keys=False)
    if args.out:
        Path(args.out).write_text(text)
        print(f"wrote {args.out}: wandb sweep {args.out}")
    else:
        print(text)


if __name__ == "__main__":
    main()
