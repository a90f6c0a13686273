"""Sweeps end to end on the tiny model: a multirun that trains and then evaluates every sweep point in one
command, read back from its W&B offline runs and summed up by mirage-report; an Optuna search of 3 trials
on a declared objective."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest
import yaml
from PIL import Image
from tests.cli import cli_command, run_cli
from tests.wandb_offline import read_offline_run

pytestmark = pytest.mark.slow

# Few steps and short answers: the point is the plumbing, not the numbers.
FAST = [
    "trainer.max_steps=3",
    "callbacks.rich_progress_bar=null",
    "evaluate.overrides=['generation.max_new_tokens=6','generation.batch_size=48']",
]
OBJECTIVE = {"eval/what3_asr/kshot_ASR": 1.0, "eval/share1_rr/RR": 1.0, "eval/plain_rr/helpfulness": -1.0}


def _jobs(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def _overrides(job: Path) -> list[str]:
    return yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())


def test_two_methods_by_two_lrs_train_then_evaluate_then_report(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "experiment=unlearn_eval_tiny",
        "method=npo,rmu",
        "method.optimizer.lr=1e-4,1e-3",
        "logger=many_loggers",
        "logger.wandb.log_export=true",
        f"hydra.sweep.dir={sweep}",
        *FAST,
    ]
    run_cli(cli_command("mirage.train", args, cache_dir), timeout=400)
    jobs = _jobs(sweep)
    assert [j.name for j in jobs] == ["0", "1", "2", "3"]
    points = set()
    for job in jobs:
        assert not (job / "error.txt").exists(), (job / "error.txt").read_text()
        overrides = _overrides(job)
        point = tuple(o for o in overrides if o.startswith("method"))
        points.add(point)
        # The job evaluated its own export: eval/ holds the four cases, the config names hf/.
        eval_cfg = yaml.safe_load((job / "eval" / "config.yaml").read_text())
        assert eval_cfg["model"]["name_or_path"] == str(job / "hf")
        assert eval_cfg["paths"]["cache_dir"] == str(cache_dir)
        cases = json.loads((job / "eval" / "metrics.json").read_text())
        assert set(cases) == {"plain_asr", "what3_asr", "plain_rr", "share1_rr"}
        for case in cases:
            assert (job / "eval" / case / "judged.jsonl").is_file()
        # ...and returned the metrics, and the declared objective computed from them, to the sweeper.
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["eval/what3_asr/kshot_ASR"] == cases["what3_asr"]["kshot_ASR"]
        expected = sum(w * metrics[k] for k, w in OBJECTIVE.items())
        assert metrics["objective"] == pytest.approx(expected)
        assert "train/loss" in metrics

        # W&B (offline): group = the sweep folder, tags and job type from the config and the multirun,
        # the resolved config with versions, commit and Hydra overrides, every loss term, the eval metrics,
        # the answer tables and the exported model as an artifact.
        (offline,) = (job / "wandb").glob("offline-run-*")
        run = read_offline_run(offline)
        assert run.run["group"] == "sweep" and run.run["job_type"] == "train"
        assert run.run["name"] == f"unlearn_eval_tiny-{job.name}"
        assert {"tiny", "unlearning", "train_eval", *point} <= set(run.run["tags"])
        config = run.config
        assert config["method"]["_target_"].endswith(("npo.NPO", "rmu.RMU"))
        assert config["method"]["optimizer"]["lr"] == float(point[1].split("=")[1])
        assert config["versions"]["torch"] and config["versions"]["hydra-core"].startswith("1.3")
        assert len(config["git_commit"]) == 40
        assert config["hydra"]["sweep_dir"] == str(sweep) and config["hydra"]["job_num"] == int(job.name)
        keys = run.history_keys()
        assert {"train/loss", "train/retain_ce", "eval/what3_asr/ASR", "eval/share1_rr/RR"} <= keys
        assert ("train/forget_npo" if "method=npo" in point else "train/forget_mse") in keys
        assert run.summary["objective"] == pytest.approx(metrics["objective"])
        kinds = {(a["type"], a["name"].split("-")[0]) for a in run.artifacts}
        assert ("model", "hf") in kinds and ("run_table", "run") in kinds
        export = next(a for a in run.artifacts if a["name"].startswith("hf-"))
        assert {"config.json", "model.safetensors", "mirage_export.json"} <= set(export["files"])
        (table,) = offline.glob("files/media/table/eval/what3_asr/answers_*.table.json")
        answers = json.loads(table.read_text())
        assert "label" in answers["columns"] and len(answers["data"]) == cases["what3_asr"]["answers"]
    assert len(points) == 4

    # One table and plots for the whole sweep, labelled by what each point changed.
    out = tmp_path / "report"
    run_cli([sys.executable, "-m", "mirage.report", str(sweep), "--out", str(out)])
    table = (out / "report.md").read_text()
    for label in ("method=npo method.optimizer.lr=0.0001", "method=rmu method.optimizer.lr=0.001"):
        assert f"| {label} | " in table
    assert "sweep objective" in table
    with open(out / "report.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len({r["run"] for r in rows}) == 4
    assert len([r for r in rows if r["metric"] == "objective"]) == 4
    for name in ("report.png", "loss_curves.png"):
        with Image.open(out / name) as image:
            assert image.size[0] > 300


def test_optuna_search_of_three_trials_returns_the_objective(tmp_path, cache_dir):
    sweep = tmp_path / "optuna"
    args = [
        "-m",
        "experiment=npo_tiny",
        "hparams_search=npo_optuna_tiny",
        "hydra.sweeper.n_trials=3",
        # The declared objective plus a small train/loss term, so that trials differ even after 3 steps.
        "+objective.loss={metric:train/loss,weight:0.01}",
        f"hydra.sweep.dir={sweep}",
        *FAST,
    ]
    run_cli(cli_command("mirage.train", args, cache_dir), timeout=400)
    jobs = _jobs(sweep)
    assert [j.name for j in jobs] == ["0", "1", "2"]
    values, params = [], []
    for job in jobs:
        assert not (job / "error.txt").exists(), (job / "error.txt").read_text()
        overrides = dict(o.split("=", 1) for o in _overrides(job) if o.startswith("method."))
        beta, lr = float(overrides["method.beta"]), float(overrides["method.optimizer.lr"])
        assert 0.2 <= beta <= 1.0 and 1e-4 <= lr <= 1e-2  # drawn from the declared search space
        metrics = json.loads((job / "metrics.json").read_text())
        expected = sum(w * metrics[k] for k, w in OBJECTIVE.items()) + 0.01 * metrics["train/loss"]
        assert metrics["objective"] == pytest.approx(expected)
        assert (job / "eval" / "metrics.json").is_file()
        values.append(metrics["objective"])
        params.append({"method.beta": beta, "method.optimizer.lr": lr})
    assert len({tuple(p.values()) for p in params}) == 3
    # Optuna received what each task returned: its best is the lowest objective and that trial's params.
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(min(values))
    best_params = params[values.index(min(values))]
    assert best["best_params"] == pytest.approx(best_params)


def test_a_sweep_with_a_failing_job_runs_the_others_then_exits_non_zero(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    args = ["-m", "experiment=sft_tiny", "trainer.max_steps=2", "callbacks.rich_progress_bar=null"]
    cmd = cli_command(
        "mirage.train", [*args, "method.optimizer.lr=1e-3,-1"], cache_dir, f"hydra.sweep.dir={sweep}"
    )
    result = run_cli(cmd, check=False)
    assert result.returncode == 1, result.stderr[-2000:]
    assert (sweep / "0" / "hf").is_dir() and not (sweep / "0" / "error.txt").exists()  # the good job ran
    assert (sweep / "1" / "error.txt").is_file() and not (sweep / "1" / "hf").exists()
    output = result.stdout + result.stderr
    assert "1 job(s) of the sweep failed" in output
    failed = next(line for line in output.splitlines() if line.strip().startswith("job 1 ("))
    assert "method.optimizer.lr=-1" in failed and "learning rate" in failed.split("):", 1)[1]  # and the error
    # A sweep whose jobs all pass exits 0.
    ok = run_cli(
        cli_command("mirage.train", [*args, "seed=1,2"], cache_dir, f"hydra.sweep.dir={tmp_path}/ok")
    )
    assert ok.returncode == 0 and "of the sweep failed" not in ok.stdout + ok.stderr
