"""mirage-pipeline: stages run in dependency order, are cached by config hash, and end in a report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.cli import cli_command, run_cli

from mirage.workflows.stages import stage_order


def test_stage_order_puts_parents_first_and_rejects_cycles():
    stages = {"npo": {"init_from": "base"}, "base": {"init_from": "vision"}, "vision": {}}
    assert stage_order(stages) == ["vision", "base", "npo"]
    with pytest.raises(ValueError, match="cycle: a -> b -> a"):
        stage_order({"a": {"init_from": "b"}, "b": {"init_from": "a"}})
    with pytest.raises(KeyError, match="unknown stage 'basee'"):
        stage_order({"npo": {"init_from": "basee"}})


def _demo(cache_dir, tmp_path, run_name, stages="stages", jobs=2):
    # The real demo's stages and cases on a small world, two steps a stage, 2 workers (as the demo).
    return cli_command(
        "mirage.pipeline",
        ["experiment=mirage_demo"],
        cache_dir,
        "data_root='${synthetic_data:" + f"{cache_dir}/datasets" + ",0,16,8,64,${world}}'",
        'common_overrides=["trainer.max_steps=2","data.batch_size=4","callbacks.rich_progress_bar=null"]',
        # The demo's audit on three of its models, relearning for 2 steps: the section is written and cached.
        "audit.models=[base,npo,sam_npo]",
        "audit.overrides=['experiment=audit_demo','probes.relearn.steps=[0,2]']",
        f"stage_cache_dir={tmp_path}/{stages}",
        f"hydra.run.dir={tmp_path}/{run_name}",
        f"jobs={jobs}",
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
    # Each task's wall time: 8 stages, 6 evaluations, 3 audits, in times.json and the report's last section.
    times = json.loads((tmp_path / "run1" / "times.json").read_text())
    assert times["jobs"] == 2 and len(times["tasks"]) == 8 + 6 + 3
    assert {t["task"] for t in times["tasks"]} == {"stage", "evaluation", "audit"}
    assert report.rstrip().endswith("|") and "## Time" in report.split("## Does the safety survive?")[1]
    assert "| rmu | " in report.split("## Time")[1] and "| vision | " in report.split("## Time")[1]

    # A second run trains and evaluates nothing: same stage folders, same numbers.
    second = run_cli(_demo(cache_dir, tmp_path, "run2"), timeout=900)
    # 8 stages, 6 evaluations, and per audited model 2 relearning runs and 5 variant evaluations.
    assert second.stderr.count("reusing") + second.stdout.count("reusing") >= 8 + 6 + 3 * (2 + 5)
    assert json.loads((tmp_path / "run2" / "stages.json").read_text()) == stage_dirs
    assert json.loads((tmp_path / "run1" / "report.json").read_text()) == json.loads(
        (tmp_path / "run2" / "report.json").read_text()
    )
    assert not list((tmp_path / "stages").glob("*.partial"))


def _weights(stage_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(stage_dir / "hf" / "model.safetensors")


def _answers(stage_dir: Path) -> list[str]:
    return [
        json.loads(line)["answer"]
        for case in sorted(stage_dir.glob("eval-*/*/generations.jsonl"))
        for line in case.read_text().splitlines()
    ]


@pytest.mark.slow
def test_two_workers_train_and_answer_exactly_as_one_job(cache_dir, tmp_path):
    # The tests run at one thread (tests/cli.py), so every task gets one thread with 1 job or 2: the stages
    # must then come out bit-identical, and every answer the same, however the workers interleaved them.
    run_cli(_demo(cache_dir, tmp_path, "parallel", stages="stages2", jobs=2), timeout=900)
    run_cli(_demo(cache_dir, tmp_path, "serial", stages="stages1", jobs=1), timeout=900)
    parallel = json.loads((tmp_path / "parallel" / "stages.json").read_text())
    serial = json.loads((tmp_path / "serial" / "stages.json").read_text())
    assert parallel != serial  # workers key what they train by their pinned thread count
    log = (tmp_path / "parallel" / "mirage_demo.log").read_text()
    assert log.index("stage mixed: started") < log.index("stage base: done")  # side by side
    for name in serial:
        left, right = _weights(Path(parallel[name])), _weights(Path(serial[name]))
        assert left.keys() == right.keys(), name
        assert all(torch.equal(left[k], right[k]) for k in left), name
        assert _answers(Path(parallel[name])) == _answers(Path(serial[name])), name
    assert sum(len(_answers(Path(p))) for p in parallel.values()) > 0
    # The same audit, row for row (each row also names its own evaluation folder, which differs).
    rows = []
    for run in ("parallel", "serial"):
        audit = json.loads((tmp_path / run / "audit" / "audit.json").read_text())["models"]
        rows.append(
            {
                m: {v: {k: x for k, x in r.items() if k != "eval_dir"} for v, r in variants.items()}
                for m, variants in audit.items()
            }
        )
    assert rows[0] == rows[1] and len(rows[0]) == 3
