"""The `attacks` probe: mirage's existing attacks as rows of the audit, each asked on the plain questions."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.utils import instantiate
from tests.compose import compose_config

from mirage.evaluation.cases import resolve_cases
from mirage.probes.attacks import AttacksProbe
from mirage.probes.base import AuditTarget


def test_the_shipped_probe_asks_the_plain_questions_under_each_attack(tmp_path):
    probe = instantiate(
        compose_config(["+probe@probes.attacks=attacks"], tmp_path, "audit.yaml").probes.attacks
    )
    variants = probe.variants(AuditTarget("m", Path("/m/hf"), tmp_path))
    assert [v.label for v in variants] == ["attack/prefill", "attack/text_only", "attack/what"]
    for variant in variants:
        cfg = compose_config(
            [
                "experiment=mirage_eval_tiny",
                "model=checkpoint",
                "model.name_or_path=/m/hf",
                *variant.overrides,
            ],
            tmp_path,
            "eval.yaml",
        )
        cases = resolve_cases(cfg)
        assert sorted(cases) == ["plain_asr", "plain_rr"]  # the one-word cases give way to the attack
        targets = {case.attack._target_.rsplit(".", 1)[1] for case in cases.values()}
        assert (
            targets
            == {
                "attack/prefill": {"PrefillAttack"},
                "attack/text_only": {"TextOnlyAttack"},
                "attack/what": {"OneWordAttack"},
            }[variant.label]
        )
    what = instantiate(resolve_cases(cfg)["plain_asr"].attack)
    assert what.trigger == "What"


def test_fields_reach_the_attack_and_bad_entries_are_refused(tmp_path):
    probe = AttacksProbe({"share": {"attack": "one_word", "trigger": "Share", "k": 2}})
    (variant,) = probe.variants(AuditTarget("m", Path("/m/hf"), tmp_path))
    cfg = compose_config(["experiment=mirage_eval_tiny", *variant.overrides], tmp_path, "eval.yaml")
    attack = instantiate(resolve_cases(cfg)["plain_rr"].attack)
    assert (attack.trigger, attack.k) == ("Share", 2)
    with pytest.raises(ValueError, match="entry 'x' needs `attack:`"):
        AttacksProbe({"x": {"trigger": "What"}})
    with pytest.raises(ValueError, match="no attacks"):
        AttacksProbe({})
