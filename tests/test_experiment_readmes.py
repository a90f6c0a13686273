"""Every command in experiments/**/README.md exists and composes: mirage-train / mirage-eval overrides (each
job of a sweep, Hydra's own settings included) through Hydra, mirage-report and mirage-wandb-sweep through
their argument parsers, torchrun lines as the mirage-eval / mirage-train they start."""

from __future__ import annotations

import importlib
import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from mirage.workflows.configs import register_resolvers

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
READMES = sorted((ROOT / "experiments").rglob("README.md"))
# [project.scripts] of pyproject.toml: console script -> "module:function" (tomllib is Python 3.11+).
SCRIPTS = dict(re.findall(r'^(mirage-[\w-]+) = "([\w.:]+)"', (ROOT / "pyproject.toml").read_text(), re.M))
ENTRY_CONFIG = {"mirage.train": "train", "mirage.evaluate": "eval"}
_FENCE = re.compile(r"```(?:bash|sh)\n(.*?)```", re.S)
_INLINE = re.compile(r"`((?:mirage-|torchrun )[^`]+)`")
_PLACEHOLDER = re.compile(r"<[^<>\s]+>")


def commands(readme: Path) -> list[str]:
    """Shell commands from fenced bash blocks (continuations joined, comments cut) and inline code."""
    text = readme.read_text()
    found = []
    for block in _FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                found.append(line)
    found += [c for c in _INLINE.findall(text) if len(c.split()) > 1]  # not a bare name in prose
    return [c for c in found if c.split()[0].startswith("mirage-") or c.split()[0] == "torchrun"]


ALL = [(readme, command) for readme in READMES for command in commands(readme)]


def test_the_readmes_name_commands_that_exist():
    assert READMES, "no experiments/**/README.md"
    for readme in READMES:
        names = {c.split()[0] for r, c in ALL if r == readme}
        assert "mirage-train" in names, f"{readme} names no training command"
        assert names - {"torchrun"} <= set(SCRIPTS), f"{readme}: no such command {names - set(SCRIPTS)}"
    safety = {c.split()[0] for r, c in ALL if r.parent.name == "safety_mirage"}
    assert {"mirage-train", "mirage-eval", "mirage-report", "mirage-wandb-sweep", "torchrun"} <= safety


def _entry(argv: list[str]) -> tuple[str, list[str]]:
    """(module, arguments) of a console script or of the module a torchrun line starts."""
    if argv[0] == "torchrun":
        index = argv.index("-m")
        return argv[index + 1], argv[index + 2 :]
    module = SCRIPTS[argv[0]].split(":")[0]
    return module, argv[1:]


def _jobs(overrides: list[str], multirun: bool) -> list[list[str]]:
    """Override lists for the basic sweeper's jobs (a single list without -m)."""
    if not multirun:
        return [overrides]
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    batches = BasicSweeper.split_arguments(parsed, max_batch_size=None)
    # Every swept value in at least one job is enough (the product adds no new config); it keeps grids fast.
    chosen, seen = [], set()
    for job in (list(job) for batch in batches for job in batch):
        if set(job) - seen:
            chosen.append(job)
            seen |= set(job)
    return chosen


@pytest.mark.parametrize(("readme", "command"), ALL, ids=[f"{r.parent.name}:{c[:60]}" for r, c in ALL])
def test_readme_command_composes(readme, command, tmp_path):
    # <ts>, <run> ... stand for what the reader fills in (a run folder's timestamp, ...)
    argv = shlex.split(_PLACEHOLDER.sub("PLACEHOLDER", command))
    module, args = _entry(argv)
    if module == "mirage.report":
        from mirage.report import build_parser

        assert build_parser().parse_args(args).runs
        return
    if module not in (*ENTRY_CONFIG, "mirage.wandb_sweep"):  # another tool's own CLI: it must import
        importlib.import_module(module)
        return
    flags = [a for a in args if a.startswith("-") and "=" not in a]
    overrides = [a for a in args if a not in flags]
    if module == "mirage.wandb_sweep":
        from mirage.wandb_sweep import build_parser, compose_train, split_overrides, sweep_spec

        fixed, swept = split_overrides(build_parser().parse_args(args).overrides)
        assert sweep_spec(compose_train(fixed), fixed, swept)["parameters"]
        return
    assert module in ENTRY_CONFIG, f"{readme}: unknown entry point in {command!r}"
    unknown = set(flags) - {"-m", "--multirun"}
    assert not unknown, f"{readme}: {command!r} uses flags {unknown}"
    register_resolvers()
    for job in _jobs(overrides, multirun=bool(flags)):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            cfg = compose(
                ENTRY_CONFIG[module],
                overrides=[*job, f"paths.output_dir={tmp_path}", f"paths.root_dir={tmp_path}"],
                return_hydra_config=True,
            )
        assert cfg.task_name
        if module == "mirage.train":
            assert "_target_" in cfg.method and "_target_" in cfg.trainer
            evaluate = cfg.evaluate.experiment
            if evaluate:  # the evaluation a training job would run composes too
                _compose_eval([f"experiment={evaluate}", *cfg.evaluate.overrides], tmp_path)
        else:
            assert any(case is not None for case in cfg.cases.values())


def _compose_eval(overrides: list[str], tmp_path: Path) -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("eval", overrides=[*overrides, "model=checkpoint", "model.name_or_path=x"])
    assert any(case is not None for case in cfg.cases.values())
