"""mirage-pipeline: stages run in dependency order, are cached by config hash, and end in a report."""

from __future__ import annotations

import json

import pytest
from tests.cli import cli_command, run_cli

from mirage.workflows.stages import stage_order


def test_stage_order_puts_parents_first_and_rejects_cycles():
    stages = {"npo": {"init_from": "base"}, "base": {"init_from": "vision"}, "vision": {}}
    assert stage_order(stages) == ["vision", "base", "npo"]
    with pytest.raises(ValueError, match="cycle: a -> b -> a"):
        stage_order({"a": {"init_from": "b"}, "b": {"init_from": "a"}})
    with pytest.raises(KeyError, match="unknown stage 'basee'"):
        stage_order({"npo": {"init_from": "basee"}})


def _demo(cache_dir, tmp_path, run_name):
    # The real demo's stages and cases on a small world, two steps per stage.
    return cli_command(
        "mirage.pipeline",
        ["experiment=mirage_demo"],
        cache_dir,
        "data_root='${synthetic_data:" + f"{cache_dir}/datasets" + ",0,16,8,64,${world}}'",
        'common_overrides=["trainer.max_steps=2","data.batch_size=4","callbacks.rich_progress_bar=null"]',
        # The demo's audit on three of its models, relearning for 2 steps: the section is written and cached.
        "audit.models=[base,npo,sam_npo]",
        "audit.overrides=['experiment=audit_demo','probes.relearn.steps=[0,2]']",
        f"stage_cache_dir={tmp_path}/stages",
        f"hydra.run.dir={tmp_path}/{run_name}",
    )


@pytest.mark.slow
def test_demo_pipeline_runs_every_stage_then_reuses_them(cache_dir, tmp_path):
    first = run_cli(_demo(cache_dir, tmp_path, "run1"), timeout=900)
    stage_dirs = json.loads((tmp_path / "run1" / "stages.json").read_text())
    assert list(stage_dirs) == ["vision", "warmup", "base", "mixed", "posthoc", "npo", "sam_npo", "rmu"]
    for name, path in stage_dirs.items():
        export = json.loads(
            (tmp_path / "stages" / path.split("/")[-1] / "hf" / "mirage_export.json").read_text()
        )
        expected = {"vision": "VisionPretrain", "npo": "NPO", "sam_npo": "NPO", "rmu": "RMU"}.get(name, "SFT")
        assert export["method"] == expected, name
    report = (tmp_path / "run1" / "report.md").read_text()
    for label in ("Base", "Mixed SFT", "Post-hoc SFT", "NPO", "SAM-NPO", "RMU"):
        assert f"| {label} |" in report
    # The safety curves the SFT and unlearning stages recorded (steps 0 and 2), before the audit's section.
    curves = report.split("## Watching the mirage form")[1].split("## Does the safety survive?")[0]
    for label in ("Mixed SFT", "Post-hoc SFT", "NPO", "SAM-NPO", "RMU"):
        assert f"| {label} | 2 |" in curves, label
    assert "| Base |" not in curves  # the base stage records none
    assert (tmp_path / "run1" / "curves.png").stat().st_size > 10_000
    # The audit: its section in the report, one row per audited model, every probe of audit_demo a column.
    survive = report.split("## Does the safety survive?")[1]
    for column in ("unprobed", "quantize/nf4", "relearn/forget/2", "relearn/benign/2", "ablate_refusal/hook"):
        assert column in survive.splitlines()[4], column
    assert "| NPO |" in survive and "| SAM-NPO |" in survive and "| RMU |" not in survive
    assert "- **Base** is the compliant reference" in survive
    assert "![ASR against relearning steps](audit/relearn.png)" in survive
    audit = json.loads((tmp_path / "run1" / "audit" / "audit.json").read_text())
    assert set(audit["models"]) == {"base", "npo", "sam_npo"}
    assert (tmp_path / "run1" / "report.png").stat().st_size > 10_000
    assert "Mixed SFT" in first.stdout  # the table is printed

    # A second run trains and evaluates nothing: same stage folders, same numbers.
    second = run_cli(_demo(cache_dir, tmp_path, "run2"), timeout=900)
    # 8 stages, 6 evaluations, and per audited model 2 relearning runs and 8 variant evaluations.
    assert second.stderr.count("reusing") + second.stdout.count("reusing") >= 8 + 6 + 3 * (2 + 8)
    assert json.loads((tmp_path / "run2" / "stages.json").read_text()) == stage_dirs
    assert json.loads((tmp_path / "run1" / "report.json").read_text()) == json.loads(
        (tmp_path / "run2" / "report.json").read_text()
    )
    assert not list((tmp_path / "stages").glob("*.partial"))
