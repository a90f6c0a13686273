"""A declared sweep objective: a weighted sum of a run's metrics, returned to Hydra sweepers as ``objective``.

    objective:                                                    # named terms (lower is better)
      attacked_asr: {metric: eval/what3_asr/kshot_ASR, weight: 1.0}
      over_refusal: {metric: eval/share1_rr/RR, weight: 1.0}
      utility: {metric: eval/plain_rr/helpfulness, weight: -1.0}
    optimized_metric: objective

Declaring the objective as data (not code) puts it in the run's saved config, so every sweep point says
what it was scored on. Named terms keep it editable from the command line (metric names hold slashes,
which Hydra's override grammar does not take in keys): ``objective.utility.weight=-2``,
``+objective.loss={metric:train/loss,weight:0.01}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OBJECTIVE_KEY = "objective"


def objective_value(metrics: Mapping[str, Any], terms: Mapping[str, Mapping[str, Any]]) -> float:
    """sum(weight * metrics[metric]) over the terms; a missing metric is an error listing those there are."""
    total = 0.0
    for name, term in terms.items():
        if term is None:  # a term switched off with objective.<name>=null
            continue
        metric, weight = term["metric"], float(term.get("weight", 1.0))
        if metric not in metrics:
            raise KeyError(f"objective term {name!r}: metric {metric!r} is not among {sorted(metrics)}")
        value = metrics[metric]
        total += weight * float(value.item() if hasattr(value, "item") else value)
    return total


def add_objective(metrics: dict[str, Any], terms: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Any]:
    """``metrics`` plus ``objective`` when terms are declared. A NaN term (e.g. helpfulness with no safe
    question) makes the objective NaN, which Optuna records as a failed trial, not as a good one."""
    if terms:
        metrics[OBJECTIVE_KEY] = objective_value(metrics, terms)
    return metrics
