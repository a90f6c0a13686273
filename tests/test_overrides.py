"""Every override takes effect or fails: experiments x methods, and evaluation overrides x cases.

Composition only (nothing is resolved that would build data or models): each documented top-level
override must be visible in every case's resolved config, or the run is refused with an error naming
the cases it could not reach.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from mirage.evaluation.cases import CaseConfigError, resolve_cases
from tests.compose import compose_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
METHODS = sorted(p.stem for p in (CONFIGS / "method").glob("*.yaml") if p.stem != "base")


def _experiments(kind: str) -> list[str]:
    out = []
    for path in sorted((CONFIGS / "experiment").glob("*.yaml")):
        text = path.read_text()
        entry = "pipeline" if "\nstages:" in text else "audit" if "\nprobes:" in text else None
        entry = entry or ("eval" if "\ncases:" in text else "train")
        if entry == kind:
            out.append(path.stem)
    return out


TRAIN_EXPERIMENTS = _experiments("train")
EVAL_EXPERIMENTS = _experiments("eval")


def _accepted_keys(target: str) -> set[str]:
    """Keyword arguments the method class (and every base up to MethodModule) accepts."""
    keys: set[str] = set()
    for cls in get_class(target).__mro__:
        if "__init__" in vars(cls):
            keys |= {
                n for n, p in inspect.signature(cls.__init__).parameters.items() if p.kind == p.KEYWORD_ONLY
            }
            keys |= {n for n, p in inspect.signature(cls.__init__).parameters.items() if n != "self"}
        if cls.__name__ == "MethodModule":
            break
    return keys


@pytest.mark.parametrize("experiment", TRAIN_EXPERIMENTS)
def test_every_training_experiment_takes_every_method(experiment, tmp_path):
    own = compose_config([f"experiment={experiment}"], tmp_path)
    own_method = own.method.name
    names_method = own_method in own.task_name  # e.g. npo_tiny: its run folder names the method
    for method in METHODS:
        try:
            cfg = compose_config([f"experiment={experiment}", f"method={method}"], tmp_path)
        except ConfigCompositionException as err:
            # Only an experiment's reference-model or SAM choice may refuse a method that has no such
            # sub-group (SFT reads no reference and has no forget loss), and Hydra's message names it.
            group = next((g for g in ("reference", "sam") if f"method/{g}" in str(err)), None)
            assert group, (experiment, method, err)
            defaults = OmegaConf.load(CONFIGS / "method" / f"{method}.yaml").get("defaults") or []
            assert not any(isinstance(d, DictConfig) and group in d for d in defaults), (experiment, method)
            continue
        assert cfg.method.name == method
        extra = set(cfg.method) - _accepted_keys(cfg.method._target_) - {"_target_", "_partial_"}
        assert not extra, f"experiment={experiment} method={method}: keys the method does not take: {extra}"
        assert method in cfg.tags, (experiment, method, list(cfg.tags))
        if names_method:
            assert method in cfg.task_name, (experiment, method, cfg.task_name)
            if method != own_method:
                assert own_method not in cfg.task_name.replace(method, ""), (experiment, cfg.task_name)


def test_method_specific_keys_live_in_method_configs():
    """No experiment sets a key under `method:` that is not shared by every method (optimizer, scheduler)."""
    shared = set(OmegaConf.load(CONFIGS / "method" / "base.yaml"))
    for experiment in TRAIN_EXPERIMENTS:
        node = OmegaConf.load(CONFIGS / "experiment" / f"{experiment}.yaml").get("method") or {}
        assert set(node) <= shared, f"{experiment}: method-specific keys {set(node) - shared} at top level"


def _cases(overrides: list[str], tmp_path: Path):
    return resolve_cases(compose_config(overrides, tmp_path, entry="eval.yaml"))


# (override, check of one resolved case) for every documented top-level evaluation override
CASE_OVERRIDES = {
    "benchmark.max_questions=4": lambda case: case.benchmark.max_questions == 4,
    "benchmark.seed=7": lambda case: case.benchmark.seed == 7,
    "benchmark=vlguard_test": lambda case: OmegaConf.to_container(case.benchmark)["path"].endswith(
        "vlguard/test.json"
    ),
    "generation.max_new_tokens=7": lambda case: case.generation.max_new_tokens == 7,
    "generation.batch_size=3": lambda case: case.generation.batch_size == 3,
    "attack=prefill": lambda case: case.attack._target_.endswith("PrefillAttack"),
    "attack=what_3shot": lambda case: case.attack.trigger == "What" and case.attack.k == 3,
}


@pytest.mark.parametrize("experiment", [None, *EVAL_EXPERIMENTS])
@pytest.mark.parametrize("override", sorted(CASE_OVERRIDES))
def test_every_eval_override_reaches_every_case_or_is_refused(experiment, override, tmp_path):
    base = [f"experiment={experiment}"] if experiment else []
    raw = compose_config(base, tmp_path, entry="eval.yaml")
    own_attack = [n for n, c in raw.cases.items() if c is not None and c.get("attack") is not None]
    plain = resolve_cases(raw)
    try:
        cases = _cases([*base, override], tmp_path)
    except CaseConfigError as err:
        assert override.startswith("attack=") and own_attack, (experiment, override, err)
        for name in own_attack:
            assert name in str(err), f"{experiment}: the refusal of {override} does not name case {name}"
        return
    assert not (override.startswith("attack=") and own_attack), f"{experiment}: {override} was not refused"
    assert set(cases) == set(plain)
    for name, case in cases.items():
        assert CASE_OVERRIDES[override](case), f"experiment={experiment} {override}: case {name} missed it"


@pytest.mark.parametrize("experiment", EVAL_EXPERIMENTS)
def test_judge_override_replaces_the_chain(experiment, tmp_path):
    cfg = compose_config([f"experiment={experiment}", "judge=rules"], tmp_path, entry="eval.yaml")
    assert set(cfg.judges) == {"keyword", "irrelevance_rules"}


def test_per_case_overrides_reach_one_case(tmp_path):
    cases = _cases(
        [
            "experiment=mirage_eval_tiny",
            "cases.what3_asr.attack.k=5",
            "+cases.plain_rr.generation.max_new_tokens=9",
            "cases.share1_rr=null",
        ],
        tmp_path,
    )
    assert set(cases) == {"plain_asr", "what3_asr", "plain_rr"}
    assert cases["what3_asr"].attack.k == 5
    assert [c.generation.max_new_tokens for c in cases.values()] == [32, 32, 9]


def test_cases_refuse_contradictions(tmp_path):
    with pytest.raises(CaseConfigError, match=r"case 'main': unknown keys \['atack'\]"):
        _cases(["+cases.main.atack.k=3"], tmp_path)
    with pytest.raises(CaseConfigError, match="no evaluation cases"):
        _cases(["cases.main=null"], tmp_path)
    with pytest.raises(CaseConfigError, match=r"cases \['other'\] name a benchmark reader of their own"):
        _cases(["+cases.other.benchmark._target_=mirage.data.readers.read_conversations"], tmp_path)
    with pytest.raises(CaseConfigError, match=r"sets attack fields .* but no attack is chosen"):
        _cases(["+cases.main.attack.k=3"], tmp_path)
    with pytest.raises(ConfigCompositionException, match=r"attack\.k"):
        _cases(["attack.k=3"], tmp_path)  # no top-level attack to change: Hydra says so


def test_train_then_evaluate_overrides_reach_the_cases(tmp_path):
    from mirage.workflows.train_then_eval import compose_eval_config

    overrides = ["experiment=unlearn_eval_tiny", "paths.work_dir=."]
    train = compose_config([*overrides, 'evaluate.overrides=["benchmark.max_questions=2"]'], tmp_path)
    cfg = compose_eval_config(train.evaluate, train, tmp_path / "hf")
    assert {name: c.benchmark.max_questions for name, c in resolve_cases(cfg).items()} == dict.fromkeys(
        ["plain_asr", "what3_asr", "plain_rr", "share1_rr"], 2
    )
    train = compose_config([*overrides, 'evaluate.overrides=["attack=prefill"]'], tmp_path)
    with pytest.raises(CaseConfigError, match="what3_asr"):
        resolve_cases(compose_eval_config(train.evaluate, train, tmp_path / "hf"))


def test_a_cached_evaluation_is_keyed_by_the_content_of_the_files_it_reads(tmp_path):
    from mirage.evaluation.cases import cases_fingerprint

    rewrites = tmp_path / "rewrites.json"
    rewrites.write_text("[]")
    cfg = compose_config(["attack=from_file", f"attack.path={rewrites}"], tmp_path, entry="eval.yaml")
    cfg.benchmark.path = str(tmp_path / "test.json")  # not generated: only the attack file exists
    before = cases_fingerprint(cfg)
    assert str(rewrites) in before["files"]
    rewrites.write_text('[{"id": "x"}]')  # edited in place, same path
    assert cases_fingerprint(cfg) != before


def test_a_cached_evaluation_and_an_audit_are_keyed_by_the_weights_they_load(tmp_path):
    """A model retrained into the same folder must not be served the old model's answers or probes."""
    from mirage.evaluation.cases import cases_fingerprint
    from mirage.workflows.audit import weights_fingerprint

    model = tmp_path / "hf"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"0" * 10)
    cfg = compose_config(["model=checkpoint", f"model.name_or_path={model}"], tmp_path, entry="eval.yaml")
    cfg.benchmark.path = str(tmp_path / "test.json")
    before, probed = cases_fingerprint(cfg), weights_fingerprint(model)
    (model / "model.safetensors").write_bytes(b"0" * 11)  # retrained in place, same path
    assert cases_fingerprint(cfg) != before and weights_fingerprint(model) != probed
    (model / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weight files"):
        weights_fingerprint(model)
