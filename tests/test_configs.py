"""Every config composes, and the cheap parts of each instantiate."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tests.compose import compose_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIGS / "experiment").glob("*.yaml"))


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml") if p.stem != "base")


def _entry(experiment: str) -> str:
    """Pipelines define `stages`, audits `probes`, evaluation experiments `cases`; the others train."""
    text = (CONFIGS / "experiment" / f"{experiment}.yaml").read_text()
    if "\nstages:" in text:
        return "pipeline.yaml"
    if "\nprobes:" in text:
        return "audit.yaml"
    return "eval.yaml" if "\ncases:" in text else "train.yaml"


def _compose(overrides: list[str], tmp_path: Path, entry: str = "train.yaml"):
    return compose_config(overrides, tmp_path, entry)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes(experiment, tmp_path):
    entry = _entry(experiment)
    cfg = _compose([f"experiment={experiment}"], tmp_path, entry)
    assert cfg.task_name == experiment
    if entry == "pipeline.yaml":
        _check_pipeline(cfg, tmp_path)
        return
    if entry == "audit.yaml":
        _check_audit(cfg, tmp_path)
        return
    if entry == "eval.yaml":
        from mirage.evaluation.cases import resolve_cases

        cases = resolve_cases(cfg)
        assert cases, experiment
        for name, case in cases.items():
            assert "_target_" in case.benchmark and "_target_" in case.attack, f"{experiment}: case {name}"
        for judge in cfg.judges.values():
            assert "_target_" in judge
        return
    for key in ("model", "method", "finetune", "data", "trainer"):
        assert "_target_" in cfg[key], f"{experiment}: {key} has no _target_"
    assert cfg.task_name == experiment
    instantiate(cfg.finetune, _convert_="all")  # validates mode, components and quantization


def _check_audit(cfg, tmp_path: Path) -> None:
    """Every probe instantiates; the training and evaluation overrides compose."""
    from mirage.evaluation.cases import resolve_cases
    from mirage.probes.base import Probe

    assert all(isinstance(instantiate(p), Probe) for p in cfg.probes.values() if p is not None)
    _compose([*cfg.train_overrides], tmp_path)
    evaluation = _compose([*cfg.evaluation.overrides, "model=checkpoint"], tmp_path, "eval.yaml")
    assert resolve_cases(evaluation)


def _check_pipeline(cfg, tmp_path: Path) -> None:
    """Every stage's overrides compose into a training config (parents as `model=checkpoint`), and the
    evaluation overrides into an evaluation config; nothing is resolved (that would generate data)."""
    from mirage.workflows.stages import stage_order

    stages = OmegaConf.to_container(cfg.stages, resolve=False)
    order = stage_order(stages)
    assert set(cfg.evaluation.models) <= set(order)
    common = OmegaConf.to_container(cfg.common_overrides, resolve=False)
    for name in order:
        overrides = [*stages[name]["overrides"], *common]
        if stages[name].get("init_from"):
            overrides += ["model=checkpoint", "model.name_or_path=/parent/hf"]
        stage = _compose(overrides, tmp_path)
        for key in ("model", "method", "finetune", "data", "trainer"):
            assert "_target_" in stage[key], f"stage {name}: {key} has no _target_"
        instantiate(stage.finetune, _convert_="all")
    eval_overrides = [*OmegaConf.to_container(cfg.evaluation.overrides, resolve=False), "model=checkpoint"]
    from mirage.evaluation.cases import resolve_cases

    evaluation = _compose(eval_overrides, tmp_path, "eval.yaml")
    assert all("_target_" in case.attack for case in resolve_cases(evaluation).values())
    if cfg.get("audit"):  # the pipeline's audit: stages it names, and a mirage-audit config that composes
        audit = cfg.audit
        assert set(OmegaConf.to_container(audit, resolve=False)) <= {
            "models",
            "overrides",
            "train_overrides",
            "evaluation_overrides",
        }
        assert set(audit.models) <= set(order)  # resolves only the list it points to
        audit_cfg = _compose([*audit.overrides], tmp_path, "audit.yaml")
        _check_audit(audit_cfg, tmp_path)
        _compose([str(o) for o in OmegaConf.to_container(audit.train_overrides, resolve=False)], tmp_path)


@pytest.mark.parametrize(
    ("group", "option"),
    [
        (g, o)
        for g in ("finetune", "trainer", "logger", "callbacks", "method", "model", "data", "debug")
        for o in _options(g)
    ],
)
def test_every_group_option_composes(group, option, tmp_path):
    cfg = _compose([f"{group}={option}"], tmp_path)
    assert OmegaConf.select(cfg, "method._target_")
    if group == "finetune":
        spec = instantiate(cfg.finetune, _convert_="all")
        assert spec.mode in ("full", "lora") and (spec.quantization is not None) == (option == "qlora")


@pytest.mark.parametrize(
    ("group", "option"), [(g, o) for g in ("attack", "judge", "benchmark", "steering") for o in _options(g)]
)
def test_every_eval_group_option_composes(group, option, tmp_path):
    cfg = _compose([f"{group}={option}"], tmp_path, "eval.yaml")
    assert cfg.judges and all("_target_" in j for j in cfg.judges.values())
    if group == "attack" and option in (
        "none",
        "one_word",
        "what_3shot",
        "share_1shot",
        "prefill",
        "text_only",
        "blank_image",
    ):
        from mirage.evaluation.attacks.base import Attack

        attack = instantiate(cfg.attack)
        assert isinstance(attack, Attack)
    if group == "judge" and option in ("keyword", "irrelevance_rules", "rules", "keyword_only"):
        from mirage.evaluation.judges.base import Judge

        assert all(isinstance(instantiate(j), Judge) for j in cfg.judges.values())


def test_trainer_logger_and_callbacks_instantiate(tmp_path):
    from mirage.utils.hydra import instantiate_list

    cfg = _compose(["logger=many_loggers", "trainer.max_steps=1"], tmp_path)
    loggers = instantiate_list(cfg.logger, "logger")
    assert sorted(type(lg).__name__ for lg in loggers) == ["CSVLogger", "WandbLogger"]
    callbacks = instantiate_list(cfg.callbacks, "callback")
    assert {type(c).__name__ for c in callbacks} >= {"ModelCheckpoint", "RichProgressBar"}
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    assert trainer.max_steps == 1


def test_unknown_config_key_is_rejected(tmp_path):
    with pytest.raises(Exception, match=r"finetune\.lora\.rank"):
        _compose(["finetune=lora", "finetune.lora.rank=4"], tmp_path)


def test_every_config_line_is_commented():
    """Each key line of every config file carries a comment (the template's convention)."""
    missing = []
    for path in CONFIGS.rglob("*.yaml"):
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            stripped = line.strip()
            if (
                not stripped
                or stripped.startswith("#")
                or stripped.startswith("- ")
                or stripped == "defaults:"
            ):
                continue
            if stripped.startswith(("_target_", "_partial_")) or stripped.endswith(":"):
                continue  # targets name themselves; section headers are explained by their children
            if "#" not in line:
                missing.append(f"{path.relative_to(CONFIGS)}:{number}: {stripped}")
    assert not missing, "uncommented config lines:\n" + "\n".join(missing)
