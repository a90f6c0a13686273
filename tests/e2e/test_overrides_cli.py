"""Overrides as a user types them: each takes effect in the run, or the run stops with a message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import get_class
from omegaconf import OmegaConf
from tests.cli import cli_command, run_cli

pytestmark = pytest.mark.slow
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
UNLEARNING = sorted(
    p.stem
    for p in (CONFIGS / "method").glob("*.yaml")
    if p.stem != "base" and getattr(get_class(OmegaConf.load(p)._target_), "unlearning", False)
)


def _train(args: list[str], cache_dir: Path, check: bool = True):
    cmd = cli_command("mirage.train", args, cache_dir, "callbacks.rich_progress_bar=null")
    return run_cli(cmd, check=check)


def _eval(args: list[str], cache_dir: Path, check: bool = True):
    return run_cli(cli_command("mirage.evaluate", args, cache_dir), check=check)


def test_unlearning_methods_are_discovered():
    assert {"npo", "rmu", "graddiff", "simnpo"} <= set(UNLEARNING)


def test_every_unlearning_method_runs_in_the_generic_experiment(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    _train(
        [
            "-m",
            "experiment=unlearn_tiny",
            f"method={','.join(UNLEARNING)}",
            "trainer.max_steps=2",
            f"hydra.sweep.dir={sweep}",
        ],
        cache_dir,
    )
    jobs = sorted((p for p in sweep.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    assert len(jobs) == len(UNLEARNING)
    for job, method in zip(jobs, UNLEARNING, strict=True):
        assert not (job / "error.txt").exists(), (job / "error.txt").read_text()
        export = json.loads((job / "hf" / "mirage_export.json").read_text())
        assert export["method"].lower() == method.replace("_", ""), export


def test_a_method_experiment_takes_another_method_and_names_the_run_after_it(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    _train(
        ["experiment=npo_tiny", "method=graddiff", "trainer.max_steps=2", f"hydra.run.dir={run_dir}"],
        cache_dir,
    )
    assert (run_dir / "graddiff_tiny.log").is_file()  # the job log is named after the task
    assert json.loads((run_dir / "hf" / "mirage_export.json").read_text())["method"] == "GradDiff"


def test_a_diverging_run_stops_at_the_first_non_finite_loss_and_exports_nothing(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    result = _train(
        [
            "experiment=sft_tiny",
            "method.optimizer.lr=1e30",
            "trainer.max_steps=6",
            f"hydra.run.dir={run_dir}",
        ],
        cache_dir,
        check=False,
    )
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "NonFiniteError" in output and "loss term(s) ['loss', 'retain_loss'] not finite" in output
    assert not (run_dir / "hf").exists() and not (run_dir / "metrics.json").exists()


def test_an_attack_that_cannot_reach_the_cases_is_refused(tmp_path, cache_dir):
    result = _eval(
        ["experiment=mirage_eval_tiny", "attack=prefill", f"hydra.run.dir={tmp_path}"], cache_dir, False
    )
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "CaseConfigError" in message
    for case in ("plain_asr", "what3_asr", "plain_rr", "share1_rr"):
        assert case in message


def test_benchmark_and_generation_overrides_reach_every_case(tmp_path, cache_dir):
    run_dir = tmp_path / "eval"
    _eval(
        [
            "experiment=mirage_eval_tiny",
            "benchmark.max_questions=4",
            "generation.max_new_tokens=3",
            f"hydra.run.dir={run_dir}",
            f"judge_cache_dir={tmp_path / 'verdicts'}",
        ],
        cache_dir,
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {case: m["answers"] for case, m in metrics.items()} == {
        "plain_asr": 4,
        "what3_asr": 12,
        "plain_rr": 4,
        "share1_rr": 4,
    }
    assert {m["questions"] for m in metrics.values()} == {4}
