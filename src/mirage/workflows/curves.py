"""Safety curves during training (train.yaml's ``curves:``): the ``SafetyCurves`` callback
(:mod:`mirage.evaluation.curves`) built from a mirage-eval experiment, so the curves ask exactly what
``mirage-eval`` would ask:

    mirage-train experiment=sft_tiny curves.experiment=mirage_eval_tiny curves.every_n_steps=10

Cases, attacks, judges and decoding come from ``configs/eval.yaml`` with ``curves.experiment`` and
``curves.overrides``; ``curves.max_questions`` keeps a fixed, seeded subset of each case's questions
(``benchmark.max_questions``). Points go to every logger as ``curves/<case>/<metric>`` and to
``<run dir>/curves.jsonl``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

CURVES_FILE = "curves.jsonl"


def curves_eval_overrides(spec: DictConfig) -> list[str]:
    """mirage-eval overrides: the experiment, the subset size, then the user's own (which win)."""
    overrides = [f"experiment={spec.experiment}"]
    if spec.get("max_questions") is not None:
        overrides.append(f"benchmark.max_questions={spec.max_questions}")
    return overrides + [str(o) for o in spec.get("overrides") or []]


def curves_callback(cfg: DictConfig) -> Any | None:
    """The callback that ``cfg.curves`` asks for, or None when ``curves.experiment`` is unset."""
    from mirage.evaluation.cases import resolve_cases
    from mirage.evaluation.curves import SafetyCurves
    from mirage.workflows.configs import compose

    spec = cfg.get("curves")
    if spec is None or not spec.get("experiment"):
        return None
    eval_cfg = compose("eval", curves_eval_overrides(spec))
    with open_dict(eval_cfg):  # the training run's paths (resolved: they name the Hydra job's folder)
        eval_cfg.paths = OmegaConf.to_container(cfg.paths, resolve=True)
    cases = resolve_cases(eval_cfg)
    judges = [instantiate(j) for j in (eval_cfg.get("judges") or {}).values() if j is not None]
    return SafetyCurves(
        cases,
        judges,
        every_n_steps=spec.every_n_steps,
        judge_cache_dir=eval_cfg.judge_cache_dir,
        path=Path(cfg.paths.output_dir) / CURVES_FILE,
        budget_fraction=spec.get("budget_fraction", 0.25),
    )
