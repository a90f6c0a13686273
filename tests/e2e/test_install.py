"""mirage as a user installs and extends it: the wheel carries its configs and runs from any folder, and a
user's own config folder adds a method, an attack and a judge without touching the package."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from tests.cli import ENV, REPO_ROOT, cli_command, run_cli

pytestmark = pytest.mark.slow
EXTENDING = REPO_ROOT / "tests" / "extending" / "configs"
SCRIPTS = (
    "mirage-train",
    "mirage-eval",
    "mirage-serve",
    "mirage-report",
    "mirage-wandb-sweep",
    "mirage-pipeline",
    "mirage-build-tiny",
    "mirage-build-splits",
    "mirage-make-synthetic",
    "mirage-analyze",
)


def _run(cmd: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=ENV)
    assert result.returncode == 0, (
        f"{' '.join(map(str, cmd))}:\n{result.stdout[-3000:]}\n{result.stderr[-4000:]}"
    )
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv holding mirage's wheel. Its dependencies come from this test's own environment (no
    download): the venv is made with --system-site-packages and a .pth file adds this environment's
    site-packages, whose editable mirage (an import hook) is not loaded from a .pth-added folder."""
    root = tmp_path_factory.mktemp("install")
    source = root / "source"  # a copy, so the build writes nothing into the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, source / name)
    shutil.copytree(REPO_ROOT / "configs", source / "configs", ignore=shutil.ignore_patterns("local"))
    (source / "configs" / "local").mkdir()
    shutil.copytree(
        REPO_ROOT / "src", source / "src", symlinks=True, ignore=shutil.ignore_patterns("*.egg-info")
    )
    wheels = root / "wheels"
    pip = [sys.executable, "-m", "pip"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", str(source), "-w", str(wheels)], root)
    (wheel,) = wheels.glob("mirage-*.whl")
    venv = root / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], root)
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "parent_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
        root,
    )
    return venv


def test_the_wheel_carries_its_configs_and_runs_from_another_folder(installed, tmp_path, cache_dir):
    bin_dir, elsewhere = installed / "bin", tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = _run([str(bin_dir / "python"), "-c", "import mirage; print(mirage.__file__)"], elsewhere)
    assert str(installed) in where.stdout  # the wheel's copy, not the checkout's
    helps = [subprocess.Popen([str(bin_dir / s), "--help"], cwd=elsewhere, env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for s in SCRIPTS]  # fmt: skip
    for script, proc in zip(SCRIPTS, helps, strict=True):
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{script} --help:\n{out[-2000:]}"
    common = [f"paths.cache_dir={cache_dir}", "extras.print_config=false"]
    run_dir = elsewhere / "run"
    train = [str(bin_dir / "mirage-train"), "experiment=sft_tiny", "trainer.max_steps=2", *common]
    _run([*train, "callbacks.rich_progress_bar=null", f"hydra.run.dir={run_dir}"], elsewhere)
    assert (run_dir / "hf" / "mirage_export.json").is_file()
    eval_dir = elsewhere / "eval"
    model = ["model=checkpoint", f"model.name_or_path={run_dir / 'hf'}"]
    short = ["benchmark.max_questions=2", "generation.max_new_tokens=2"]
    outputs = [f"hydra.run.dir={eval_dir}", f"judge_cache_dir={tmp_path / 'verdicts'}"]
    _run(
        [str(bin_dir / "mirage-eval"), "experiment=mirage_eval_tiny", *model, *short, *outputs, *common],
        elsewhere,
    )
    assert set(json.loads((eval_dir / "metrics.json").read_text())) == {
        "plain_asr",
        "what3_asr",
        "plain_rr",
        "share1_rr",
    }


def test_a_user_config_folder_adds_a_method_an_attack_and_a_judge(tmp_path, cache_dir):
    searchpath = f"hydra.searchpath=[file://{EXTENDING}]"
    run_dir = tmp_path / "run"
    train = cli_command("mirage.train", [], cache_dir, "callbacks.rich_progress_bar=null")
    run_cli(
        [
            *train,
            "experiment=sft_tiny",
            "method=weighted_sft",
            "trainer.max_steps=2",
            searchpath,
            f"hydra.run.dir={run_dir}",
        ]
    )
    assert (run_dir / "weighted_sft_tiny.log").is_file()  # the task name follows the user's method
    assert json.loads((run_dir / "hf" / "mirage_export.json").read_text())["method"] == "WeightedSFT"
    eval_dir = tmp_path / "eval"
    evaluate = cli_command("mirage.evaluate", [], cache_dir)
    plugins = ["attack=shout", "judge=short_answer", searchpath]
    model = ["model=checkpoint", f"model.name_or_path={run_dir / 'hf'}"]
    short = ["benchmark.max_questions=3", "generation.max_new_tokens=2"]
    outputs = [f"hydra.run.dir={eval_dir}", f"judge_cache_dir={tmp_path / 'verdicts'}"]
    run_cli([*evaluate, *plugins, *model, *short, *outputs])
    records = [json.loads(line) for line in (eval_dir / "main" / "judged.jsonl").read_text().splitlines()]
    assert records and all(r["attack"] == "shout" and r["question"] == r["question"].upper() for r in records)
    # Two-token answers are under three words: the user's judge labels every one of them irrelevant.
    assert all(r["verdicts"]["short_answer"]["decision"] == "irrelevant" for r in records)
    assert json.loads((eval_dir / "metrics.json").read_text())["main"]["IR"] == 1.0
