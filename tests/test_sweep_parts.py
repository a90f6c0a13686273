"""The pieces of sweeps, without training: the declared objective, the hparams_search configs, the W&B
sweep bridge, W&B run fields from Hydra, and mirage-report on train-then-evaluate job folders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mirage.utils.objective import add_objective, objective_value
from mirage.wandb_sweep import parameter_spec, split_overrides, sweep_spec
from tests.compose import compose_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SEARCHES = sorted(p.stem for p in (CONFIGS / "hparams_search").glob("*.yaml"))


def _compose(overrides: list[str], tmp_path: Path, hydra_config: bool = True):
    return compose_config(overrides, tmp_path, hydra_config=hydra_config)


def test_objective_is_the_weighted_sum_of_declared_metrics():
    terms = {
        "asr": {"metric": "eval/what3_asr/kshot_ASR", "weight": 1.0},
        "utility": {"metric": "eval/plain_rr/helpfulness", "weight": -1.0},
        "off": None,  # a term switched off from the command line
    }
    metrics = {"eval/what3_asr/kshot_ASR": 0.25, "eval/plain_rr/helpfulness": 0.5, "train/loss": 3.0}
    assert objective_value(metrics, terms) == pytest.approx(-0.25)
    assert add_objective(dict(metrics), terms)["objective"] == pytest.approx(-0.25)
    assert "objective" not in add_objective(dict(metrics), None)
    with pytest.raises(KeyError, match="eval/share1_rr/RR"):
        objective_value(metrics, {"rr": {"metric": "eval/share1_rr/RR", "weight": 1.0}})


@pytest.mark.parametrize("search", SEARCHES)
def test_hparams_search_configs_declare_an_optuna_study_on_the_objective(search, tmp_path):
    experiment = "npo_tiny" if search.endswith("_tiny") else "npo_llava_1_5_7b"
    cfg = _compose([f"experiment={experiment}", f"hparams_search={search}"], tmp_path)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "minimize"
    assert cfg.optimized_metric == "objective" and cfg.evaluate.experiment
    metrics = {term.metric for term in cfg.objective.values()}
    assert metrics == {"eval/what3_asr/kshot_ASR", "eval/share1_rr/RR", "eval/plain_rr/helpfulness"}
    assert set(sweeper.params) == {"method.beta", "method.optimizer.lr"}
    spec = sweep_spec(cfg, [f"experiment={experiment}", f"hparams_search={search}", "logger=wandb"])
    assert spec["metric"] == {"name": "objective", "goal": "minimize"}
    if search == "npo_optuna":  # the reference grid
        assert spec["method"] == "grid"
        assert spec["parameters"]["method.beta"] == {"values": [0.8, 0.85, 0.9, 0.95]}
        assert spec["parameters"]["method.optimizer.lr"] == {"values": [4e-7, 4.5e-7, 5e-7]}
    else:
        assert spec["method"] == "bayes"
        assert spec["parameters"]["method.optimizer.lr"] == {
            "distribution": "log_uniform_values",
            "min": 1e-4,
            "max": 1e-2,
        }
    assert spec["command"][-1] == "${args_no_hyphens}" and "logger=wandb" in spec["command"]


def test_wandb_sweep_bridge_translates_hydra_sweep_syntax():
    assert parameter_spec("a", "interval(0.1, 0.5)") == {"distribution": "uniform", "min": 0.1, "max": 0.5}
    assert parameter_spec("a", "int(interval(1, 8))") == {"distribution": "int_uniform", "min": 1, "max": 8}
    assert parameter_spec("a", "choice(npo, rmu)") == {"values": ["npo", "rmu"]}
    assert parameter_spec("a", "npo,rmu,sft") == {"values": ["npo", "rmu", "sft"]}
    assert parameter_spec("a", "range(2, 8, 2)") == {"values": [2, 4, 6]}
    assert parameter_spec("a", "3") == {"value": 3}
    fixed, swept = split_overrides(["experiment=unlearn_tiny", "method=npo,rmu", "hydra.sweeper.n_trials=3"])
    assert fixed == ["experiment=unlearn_tiny"] and swept == {"method": "npo,rmu"}


def test_cli_sweep_becomes_a_wandb_grid(tmp_path, capsys):
    from mirage.wandb_sweep import main

    main(
        [
            "experiment=unlearn_eval_tiny",
            "method=npo,rmu",
            "method.optimizer.lr=1e-4,1e-3",
            "--out",
            str(tmp_path / "s.yaml"),
        ]
    )
    import yaml

    spec = yaml.safe_load((tmp_path / "s.yaml").read_text())
    assert spec["method"] == "grid" and spec["metric"]["name"] == "objective"
    assert spec["parameters"] == {
        "method": {"values": ["npo", "rmu"]},
        "method.optimizer.lr": {"values": [1e-4, 1e-3]},
    }
    assert spec["command"][3:] == [
        "mirage.train",
        "experiment=unlearn_eval_tiny",
        "logger=wandb",
        "${args_no_hyphens}",
    ]


def test_wandb_fields_outside_a_multirun_and_legacy_modes(tmp_path, monkeypatch):
    cfg = _compose(["logger=wandb", "task_name=x"], tmp_path, hydra_config=False)
    from omegaconf import OmegaConf

    fields = OmegaConf.to_container(cfg.logger.wandb, resolve=True)
    assert fields["group"] == "" and fields["name"] == "x" and fields["tags"] == ["dev"]
    from mirage.utils.wandb import wandb_logger

    # wandb sets WANDB_MODE=dryrun once a run started: the next job of a multirun must still build its logger.
    monkeypatch.setenv("WANDB_MODE", "dryrun")
    logger = wandb_logger(mode="auto", save_dir=str(tmp_path), log_model=True, log_export=True)
    assert logger._offline and logger._log_model is True and logger.log_export


def test_report_labels_job_evaluations_by_the_jobs_overrides(tmp_path):
    from mirage.report import make_report

    sweep = tmp_path / "sweep"
    case = {"ASR": 0.1, "IR": 0.2, "RR": 0.7, "n": 4}
    for num, (method, objective) in enumerate((("npo", 0.3), ("rmu", -0.2))):
        job = sweep / str(num)
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "overrides.yaml").write_text(
            f"- experiment=unlearn_eval_tiny\n- method={method}\n- evaluate.overrides=[x]\n"
        )
        (job / "metrics.json").write_text(json.dumps({"train/loss": 1.0, "objective": objective}))
        (job / "eval").mkdir()
        (job / "eval" / "metrics.json").write_text(json.dumps({"main": case}))
    table = make_report([sweep], tmp_path / "out")["md"].read_text()
    assert "| method=npo | main |" in table and "| method=rmu | main |" in table
    # The sweep objective, best first.
    assert table.index("| method=rmu | -0.2000 |") < table.index("| method=npo | 0.3000 |")
