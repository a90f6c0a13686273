"""Two mirage-pipeline runs on one cache: the second waits for the stage and the evaluation the first is
building, then reuses them; each is built once."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from tests.cli import ENV, REPO_ROOT, cli_command


def _pipeline(cache_dir, tmp_path, run_name):
    return cli_command(
        "mirage.pipeline",
        [],
        cache_dir,
        # One stage long enough (a few hundred tiny steps) for the second run to start while it trains.
        "+stages.sft={overrides:['experiment=sft_tiny','trainer.max_steps=400','trainer.max_epochs=-1',"
        "'callbacks.rich_progress_bar=null','trainer.limit_val_batches=0']}",
        "evaluation.models=[sft]",
        "evaluation.overrides=['experiment=mirage_eval_tiny']",
        f"stage_cache_dir={tmp_path}/stages",
        f"hydra.run.dir={tmp_path}/{run_name}",
    )


@pytest.mark.slow
def test_two_pipelines_on_one_cache_build_each_stage_once(cache_dir, tmp_path):
    first = subprocess.Popen(
        _pipeline(cache_dir, tmp_path, "first"),
        cwd=REPO_ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not list((tmp_path / "stages").glob("sft-*.partial")):  # the first run is training the stage
        assert first.poll() is None, first.communicate()
        assert time.monotonic() < deadline, "the first run never started its stage"
        time.sleep(0.2)
    second = subprocess.run(
        _pipeline(cache_dir, tmp_path, "second"),
        cwd=REPO_ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out, err = first.communicate(timeout=900)
    assert first.returncode == 0, err[-3000:]
    assert second.returncode == 0, second.stderr[-3000:]
    logs = err + out + second.stderr + second.stdout
    assert logs.count("stage sft: training in") == 1  # trained once, by the first run
    said = second.stdout + second.stderr  # Hydra's console log goes to stdout
    assert "another run is building" in said  # the second waited for it...
    assert "stage sft: reusing" in said  # ...then reused it
    assert said.count("reusing evaluation") == 1  # and the evaluation the first one wrote
    stages = [json.loads((tmp_path / run / "stages.json").read_text()) for run in ("first", "second")]
    assert stages[0] == stages[1]
    reports = [json.loads((tmp_path / run / "report.json").read_text()) for run in ("first", "second")]
    assert reports[0] == reports[1]
    assert not list((tmp_path / "stages").glob("*.partial"))
