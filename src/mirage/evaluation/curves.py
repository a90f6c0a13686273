"""Safety curves: a Lightning callback that answers a fixed set of evaluation cases every N optimizer steps.

It watches a safety property form (or decay) during training: e.g. the four paper cases on a fixed subset
of questions give attacked ASR, Share RR and utility against the training step. At step 0, every
``every_n_steps`` and at the end of training, the model in training answers each case's prompts with batched
greedy generation (the same code and settings as ``mirage-eval``), the judges label the answers, and every
numeric case metric goes to every logger as ``<prefix><case>/<metric>`` at that step. Rank 0 also appends
one JSON line per evaluation to ``path``.

It leaves training exactly as it would be without it: every random state is restored after each evaluation
and the model's train/eval mode is kept, so the trained weights are bit-identical with or without curves.
Under DDP the prompts are dealt round-robin to the ranks, answers are gathered, and rank 0 alone judges and
writes; every rank gets the same metrics. The time it takes is measured and reported as a fraction of the
whole fit; more than ``budget_fraction`` of it draws a warning.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from hydra.utils import instantiate

from mirage.utils import distributed as dist

log = logging.getLogger(__name__)


class SafetyCurves(L.Callback):
    """Evaluate ``cases`` (resolved mirage-eval cases: ``{name: {benchmark, attack, generation}}``) with
    ``judges`` every ``every_n_steps`` optimizer steps, at step 0 and at the end of training."""

    def __init__(
        self,
        cases: Mapping[str, Any],
        judges: Sequence[Any],
        every_n_steps: int,
        judge_cache_dir: str | Path,
        path: str | Path | None = None,
        prefix: str = "curves/",
        budget_fraction: float = 0.25,
    ) -> None:
        if not isinstance(every_n_steps, int) or every_n_steps <= 0:
            raise ValueError(f"curves.every_n_steps must be a positive integer, got {every_n_steps!r}")
        if not cases:
            raise ValueError("curves: no evaluation cases")
        self.cases = dict(cases)
        self.judges = list(judges)
        self.every_n_steps = every_n_steps
        self.judge_cache_dir = Path(judge_cache_dir)
        self.path = Path(path) if path is not None else None
        self.prefix = prefix
        self.budget_fraction = budget_fraction
        self.samples: dict[str, list[Any]] = {}
        self.seconds = 0.0  # spent evaluating, over the whole fit (kept across a resume)
        self.last_step: int | None = None
        self._fit_start = 0.0
        self._fit_seconds_before = 0.0  # fit time of the run before a resume

    # --- preparing the prompts once -----------------------------------------------------------------

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        from mirage.evaluation.runner import generation_config

        if self.samples:
            return
        with _kept_random_state():  # an attack that draws rewrites must not move training's random state
            for name, case in self.cases.items():
                samples = instantiate(case.benchmark)()
                if not samples:
                    raise ValueError(f"curves: case {name}: the benchmark produced no samples")
                self.samples[name] = instantiate(case.attack).apply(samples)
                generation_config(case)  # a bad decoding setting fails before training starts
        total = sum(len(s) for s in self.samples.values())
        log.info(
            "safety curves: %d prompts in %d cases every %d steps, shared by %d rank(s)",
            total,
            len(self.cases),
            self.every_n_steps,
            dist.world_size(),
        )

    # --- when to evaluate ---------------------------------------------------------------------------

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter()
        if trainer.global_step == 0:  # a resumed run logged its earlier points already
            self.evaluate(trainer, pl_module)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step  # optimizer steps: with gradient accumulation several batches share one
        if step % self.every_n_steps == 0 and step != self.last_step:
            self.evaluate(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step != self.last_step:  # the final weights, whatever the step
            self.evaluate(trainer, pl_module)
        fit = self._fit_seconds_before + time.perf_counter() - self._fit_start
        fraction = self.seconds / fit if fit > 0 else 0.0
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(
                    {f"{self.prefix}seconds": self.seconds, f"{self.prefix}cost_fraction": fraction},
                    step=trainer.global_step,
                )
        message = "safety curves took %.1f s of %.1f s of training (%.0f%%)"
        log.info(message, self.seconds, fit, 100 * fraction)
        if fraction > self.budget_fraction:
            log.warning(
                "safety curves took %.0f%% of training, over the declared %.0f%%: raise curves.every_n_steps "
                "or lower curves.max_questions",
                100 * fraction,
                100 * self.budget_fraction,
            )

    # --- one evaluation -----------------------------------------------------------------------------

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, dict[str, Any]]:
        """Every case on the model as it is now; metrics logged at ``trainer.global_step`` and returned."""
        start = time.perf_counter()
        step = trainer.global_step
        with _kept_random_state():
            judged = {name: self._run_case(name, pl_module) for name in self.cases}
        results = {name: metrics for name, (metrics, _) in judged.items()}
        self.seconds += time.perf_counter() - start
        self.last_step = step
        if trainer.is_global_zero:
            from mirage.evaluation.runner import flat_metrics

            flat = flat_metrics(results, prefix=self.prefix)
            for logger in trainer.loggers:
                logger.log_metrics(flat, step=step)
            if self.path is not None:
                self._write(step, flat, judged)
            log.info("curves at step %d: %s", step, _summary_line(results))
        return results

    def _write(self, step: int, flat: dict[str, float], judged: dict[str, Any]) -> None:
        """One line of metrics to ``path``; every answer and label to ``<path stem>_answers.jsonl``."""
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(
                json.dumps({"step": step, "seconds": round(self.seconds, 3), "metrics": flat}) + "\n"
            )
        keep = ("key", "id", "subset", "shot", "question", "answer", "label")
        with self.path.with_name(f"{self.path.stem}_answers.jsonl").open("a") as handle:
            for name, (_, records) in judged.items():
                for record in records:
                    row = {"step": step, "case": name, **{k: record.get(k) for k in keep}}
                    handle.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")

    def _run_case(
        self, name: str, pl_module: L.LightningModule
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        from mirage.evaluation.chain import judge_records
        from mirage.evaluation.generation import generate_batch
        from mirage.evaluation.metrics import summarize
        from mirage.evaluation.runner import generation_config, make_record

        config = generation_config(self.cases[name])
        samples = self.samples[name]
        mine = dist.shard(samples)  # rank r answers prompts r, r + W, ... (all of them in one process)
        answers: list[str] = []
        for start in range(0, len(mine), config.batch_size):
            answers += generate_batch(
                pl_module.model, pl_module.processor, mine[start : start + config.batch_size], config
            )
        parts = dist.gather_objects(answers)
        records = []
        for index, sample in enumerate(samples):  # back in the case's order
            rank, position = index % len(parts), index // len(parts)
            records.append(make_record(sample, parts[rank][position]))
        metrics = None
        if dist.is_main():
            judge_records(
                records, self.judges, self.judge_cache_dir, description=f"curves {name}", quiet=True
            )
            metrics = summarize(records)
        return dist.broadcast_object(metrics), records

    # --- resume -------------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        fit = self._fit_seconds_before + (time.perf_counter() - self._fit_start if self._fit_start else 0.0)
        return {"seconds": self.seconds, "last_step": self.last_step, "fit_seconds": fit}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seconds = float(state_dict.get("seconds", 0.0))
        self.last_step = state_dict.get("last_step")
        self._fit_seconds_before = float(state_dict.get("fit_seconds", 0.0))


def _summary_line(results: dict[str, dict[str, Any]]) -> str:
    parts = []
    for name, metrics in results.items():
        shown = {"ASR": metrics.get("kshot_ASR", metrics.get("ASR")), "RR": metrics.get("RR")}
        parts.append(f"{name} " + " ".join(f"{k} {v:.2f}" for k, v in shown.items() if v is not None))
    return "; ".join(parts)


class _kept_random_state:
    """Restores Python's, NumPy's and torch's (CPU and CUDA) random states on exit."""

    def __enter__(self) -> None:
        self._python, self._numpy = random.getstate(), np.random.get_state()
        self._fork = torch.random.fork_rng(devices=range(torch.cuda.device_count()))
        self._fork.__enter__()

    def __exit__(self, *exc: Any) -> None:
        self._fork.__exit__(*exc)
        random.setstate(self._python)
        np.random.set_state(self._numpy)
