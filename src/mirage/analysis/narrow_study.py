"""``mirage-analyze narrow <multirun dir>``: every run of a narrow fine-tuning sweep against its base model.

Per run (a folder with ``hf/`` and ``.hydra/config.yaml``, as ``mirage-train`` writes): misalignment
on each evaluation set (worst of K vs one base answer), PCA of the activation differences per
site and component, and misalignment again under steering. Then the runs are grouped by (LoRA
rank, harmful fraction) and aggregated over seeds into ``<out>/table.md``, ``table.csv``,
``summary.json`` and plots (:mod:`mirage.analysis.narrow_report`). Settings: ``configs/narrow_study.yaml``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from mirage.utils.hashing import stable_hash
from mirage.utils.io import write_json

log = logging.getLogger(__name__)


def find_runs(root: str | Path) -> list[Path]:
    """Training runs below ``root`` (itself included), in job order."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no such run folder: {root}")
    runs = [p.parent for p in root.rglob("hf") if (p.parent / ".hydra" / "config.yaml").is_file()]
    if (root / "hf").is_dir():
        runs.append(root)
    runs = sorted(set(runs), key=lambda p: (len(p.parts), int(p.name) if p.name.isdigit() else 0, str(p)))
    if not runs:
        raise FileNotFoundError(
            f"{root}: no training run (a folder with hf/ and .hydra/config.yaml) below it"
        )
    return runs


def run_settings(run_dir: Path) -> dict[str, Any]:
    """The sweep point of a run: LoRA rank, harmful fraction of its training split, seed."""
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    split = OmegaConf.select(cfg, "method.split", default="retain")
    adapter = run_dir / "hf" / "adapter_config.json"
    # The exported adapter knows its rank, also when a run kept training a loaded one (benign fine-tuning).
    rank = json.loads(adapter.read_text()).get("r") if adapter.is_file() else None
    return {
        "run": str(run_dir),
        "rank": rank,
        "harmful_fraction": OmegaConf.select(cfg, f"data.splits.{split}.harmful_fraction", default=None),
        "seed": OmegaConf.select(cfg, "seed", default=None),
    }


def base_model_path(run_dir: Path, override: str | None) -> str:
    """The explicit base model, else the LoRA adapter's base, else an error naming the run."""
    if override:
        return str(override)
    adapter = run_dir / "hf" / "adapter_config.json"
    if adapter.is_file():
        base = json.loads(adapter.read_text()).get("base_model_name_or_path")
        if base:
            return str(base)
    raise ValueError(f"{run_dir}: not a LoRA export; set base_model=<the model it was fine-tuned from>")


class _BaseCache:
    """Base model outputs shared by every run on the same base: answers per set and activations."""

    def __init__(self) -> None:
        self.path: str | None = None
        self.model: Any = None
        self.processor: Any = None
        self.answers: dict[str, list[str]] = {}
        self.activations: dict[str, Any] | None = None

    def load(self, path: str) -> None:
        from mirage.models.loading import load_vlm

        if path != self.path:
            self.model, self.processor = load_vlm(path)
            self.path, self.answers, self.activations = path, {}, None


def _misalignment_per_set(cfg, model, processor, eval_sets, base, judge, sampling, out: Path, tag: str):
    from mirage.analysis.misalignment import evaluate_misalignment

    results = {}
    for name, samples in eval_sets.items():
        results[name] = evaluate_misalignment(
            model,
            processor,
            samples,
            base.answers[name],
            judge,
            sampling,
            cache_dir=cfg.judge_cache_dir,
            records_path=out / f"{tag}_{name}.jsonl",
        )
        log.info("%s %s: worst-of-K %.1f", tag, name, results[name]["worst_of_k_mean"])
    return results


def analyze_run(
    cfg: DictConfig, run_dir: Path, eval_sets, judge, sampling, base: _BaseCache
) -> dict[str, Any]:
    """Misalignment, geometry and steering of one run; writes ``<out>/runs/<name>/``."""
    from mirage.analysis.geometry import activation_differences, geometry, model_activations
    from mirage.analysis.misalignment import sample_answers
    from mirage.analysis.pca import write_pca
    from mirage.models.loading import load_vlm

    settings = run_settings(run_dir)
    out = Path(cfg.out_dir) / "runs" / f"{run_dir.name}-{stable_hash(str(run_dir))[:6]}"
    out.mkdir(parents=True, exist_ok=True)
    base.load(base_model_path(run_dir, cfg.base_model))
    for name, samples in eval_sets.items():
        if name not in base.answers:  # one base answer per prompt, shared by all runs on this base
            base.answers[name] = [
                a[0] for a in sample_answers(base.model, base.processor, samples, 1, sampling)
            ]
    model, processor = load_vlm(run_dir / "hf")
    result: dict[str, Any] = {**settings, "base_model": base.path}
    result["misalignment"] = _misalignment_per_set(
        cfg, model, processor, eval_sets, base, judge, sampling, out, "misalignment"
    )
    geo = cfg.geometry
    inputs = eval_sets[geo.inputs]
    if base.activations is None:
        base.activations = model_activations(base.model, base.processor, inputs, list(geo.sites), geo.pooling)
    tuned = model_activations(model, processor, inputs, list(geo.sites), geo.pooling)
    per_site, per_component = geometry(activation_differences(tuned, base.activations), center=geo.center)
    write_pca({**per_component, **per_site}, out, title=f"{run_dir.name}: rank {settings['rank']}")
    result["geometry"] = {
        "sites": {s: r.to_dict() for s, r in per_site.items()},
        "components": {c: r.to_dict() for c, r in per_component.items()},
    }
    if cfg.get("steering") is not None:
        steer = instantiate(cfg.steering)
        with steer.applied(model, processor):
            result["steered"] = _misalignment_per_set(
                cfg, model, processor, eval_sets, base, judge, sampling, out, "steered"
            )
        result["steering"] = {
            "layer": steer.layer,
            "coeff": steer.coeff,
            "mode": steer.mode,
            "zscore": steer.zscore,
        }
    write_json(out / "result.json", result)
    return result


def run_study(cfg: DictConfig) -> dict[str, Any]:
    """Analyse every run below ``cfg.runs_dir`` and write the report; returns the summary."""
    from mirage.analysis.misalignment import SamplingConfig
    from mirage.analysis.narrow_report import write_report

    runs = find_runs(cfg.runs_dir)
    log.info("narrow study: %d runs below %s", len(runs), cfg.runs_dir)
    eval_sets = {name: instantiate(reader)() for name, reader in cfg.eval_sets.items()}
    for name, samples in eval_sets.items():
        if not samples:
            raise ValueError(f"evaluation set {name!r} is empty")
    if cfg.geometry.inputs not in eval_sets:
        raise KeyError(f"geometry.inputs={cfg.geometry.inputs!r} is not one of eval_sets {sorted(eval_sets)}")
    judge = instantiate(cfg.misalignment_judge)
    sampling = SamplingConfig(**OmegaConf.to_container(cfg.sampling, resolve=True))
    base = _BaseCache()
    results = [analyze_run(cfg, run, eval_sets, judge, sampling, base) for run in runs]
    return write_report(results, Path(cfg.out_dir), list(eval_sets))
