"""Resume equals an unbroken run (issue 12): a training run SIGKILLed mid-epoch, shuffled data included,
and resumed with ``ckpt_path=last`` ends with the same weights, bit for bit, as a run never stopped (full
fine-tuning, LoRA with dropout, NPO's two loaders); the logs keep their history; a refused resume changes
nothing on disk."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.cli import ENV, REPO_ROOT, cli_command, run_cli

pytestmark = pytest.mark.slow

# Four jobs, numbered as Hydra numbers a multirun over these two overrides (the last one varies fastest).
SWEEP = ["experiment=sft_tiny,npo_tiny", "finetune=full,lora"]
JOBS = [("sft_tiny", "full"), ("sft_tiny", "lora"), ("npo_tiny", "full"), ("npo_tiny", "lora")]
ARGS = [
    "trainer.max_steps=16",
    "++finetune.lora.dropout=0.1",  # LoRA dropout draws from the global torch RNG every step (unused in full)
    "logger=[csv,wandb,tensorboard]",
    "callbacks.model_checkpoint.every_n_train_steps=1",
    "data.shuffle=true",
]
# 12 steps an epoch (96 retain samples / 8; NPO's 48 forget samples restart after 6). Killed at step 5 (mid-
# epoch), the resumed run goes through the forget split's restart and a fresh shuffle of the next epoch; the
# last job is killed just after the checkpoint that ends epoch 0 (the next epoch starts fresh passes).
KILL_STEPS = [5, 5, 5, 12]
IDS = [
    f"{e}-{f}-killed_{'at_epoch_end' if k == 12 else 'mid_epoch'}"
    for (e, f), k in zip(JOBS, KILL_STEPS, strict=True)
]


def train_command(args: list[str], cache_dir: Path) -> list[str]:
    return cli_command(
        "mirage.train", args, cache_dir, "callbacks.rich_progress_bar=null", "callbacks.model_summary=null"
    )


def run_train(args: list[str], cache_dir: Path, check: bool = True):
    return run_cli(train_command(args, cache_dir), timeout=300, check=check)


@dataclass
class Runs:
    unbroken: Path  # a multirun of the four jobs
    resumed: Path  # the same, each job SIGKILLed mid-epoch first, then resumed with ckpt_path=last
    killed: Path  # copies of the killed jobs' folders, as they were before the resume


@pytest.fixture(scope="module")
def runs(tiny_llava_dir, synthetic_dir, tmp_path_factory, cache_dir) -> Runs:
    """Built once for the module. The tiny model and the dataset exist before the first run: building the
    model inside a run reseeds the global torch RNG, which would give that run alone another data order."""
    from mirage.methods.base import read_checkpoint

    root = tmp_path_factory.mktemp("resume")
    runs = Runs(root / "unbroken", root / "resumed", root / "killed")
    run_train(["-m", *SWEEP, *ARGS, f"hydra.sweep.dir={runs.unbroken}"], cache_dir)
    # The four runs to kill go side by side (one thread each: the same numbers as one at a time); the unbroken
    # multirun has filled NPO's reference cache, so they only read it.
    doomed = []
    for job, (experiment, finetune) in enumerate(JOBS):
        job_dir = runs.resumed / str(job)
        kill = [
            "+callbacks.kill._target_=tests.e2e.sigkill.SigkillAtStep",
            f"+callbacks.kill.step={KILL_STEPS[job]}",
        ]
        args = [f"experiment={experiment}", f"finetune={finetune}", *ARGS, f"hydra.run.dir={job_dir}", *kill]
        output = open(root / f"killed_{job}.out", "w")  # noqa: SIM115 (closed below)
        command = train_command(args, cache_dir)
        doomed.append(
            (job_dir, output, subprocess.Popen(command, cwd=REPO_ROOT, env=ENV, stdout=output, stderr=output))
        )
    try:
        for job, (job_dir, output, process) in enumerate(doomed):
            returncode = process.wait(timeout=300)
            output.close()
            assert returncode == -signal.SIGKILL, Path(output.name).read_text()[-3000:]
            checkpoint = read_checkpoint(job_dir / "checkpoints" / "last.ckpt")
            progress = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]
            assert checkpoint["global_step"] == KILL_STEPS[job] and checkpoint["epoch"] == 0
            assert progress["is_last_batch"] == (KILL_STEPS[job] == 12)  # mid-epoch, or the end of epoch 0
            assert not (job_dir / "hf").exists()
            shutil.copytree(job_dir, runs.killed / job_dir.name, symlinks=True)
    finally:  # a run that did not die as planned is not left behind
        for _, output, process in doomed:
            if process.poll() is None:
                process.kill()
                process.wait()
            output.close()
    result = run_train(["-m", *SWEEP, *ARGS, "ckpt_path=last", f"hydra.sweep.dir={runs.resumed}"], cache_dir)
    for job in range(len(JOBS)):
        assert f"resuming from {runs.resumed / str(job) / 'checkpoints' / 'last.ckpt'}" in result.stdout
    return runs


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    files = sorted((run_dir / "hf").glob("*.safetensors"))
    assert files, f"no exported weights in {run_dir / 'hf'}"
    return {f"{f.name}:{k}": v for f in files for k, v in load_file(f).items()}


def _rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("job", range(len(JOBS)), ids=IDS)
def test_killed_run_resumes_bit_identical(job, runs):
    unbroken, resumed = _weights(runs.unbroken / str(job)), _weights(runs.resumed / str(job))
    assert unbroken.keys() == resumed.keys()
    differ = [name for name in unbroken if not torch.equal(unbroken[name], resumed[name])]
    assert not differ, f"{len(differ)} of {len(unbroken)} tensors differ, e.g. {differ[:3]}"
    epochs = {int(row["epoch"]) for row in _rows(runs.unbroken / str(job))}
    assert epochs == {0, 1}  # the resumed run went through an epoch boundary (a fresh shuffle) too


@pytest.mark.parametrize("job", range(len(JOBS)), ids=IDS)
def test_resume_keeps_the_history_of_every_logger(job, runs):
    from mirage.methods.base import read_checkpoint

    unbroken, resumed, killed = (path / str(job) for path in (runs.unbroken, runs.resumed, runs.killed))
    # CSV: the killed run's rows are kept, none is logged twice, and (training being bit-identical) the file
    # ends up equal to the unbroken run's, validation row included.
    killed_rows = _rows(killed)
    assert [int(r["step"]) for r in killed_rows if r["train/loss"]] == list(range(KILL_STEPS[job]))
    resumed_rows = _rows(resumed)
    kept = [{key: row[key] for key in killed_rows[0]} for row in resumed_rows[: len(killed_rows)]]
    assert kept == killed_rows  # (the header gained val/loss since)
    assert resumed_rows == _rows(unbroken)
    assert [int(r["step"]) for r in resumed_rows if r["train/loss"]] == list(range(16))

    # TensorBoard: the killed run's event file is still there, unchanged; the resumed run adds its own.
    killed_events = {p.name: p.read_bytes() for p in (killed / "tensorboard").glob("events.*")}
    resumed_events = {p.name: p.read_bytes() for p in (resumed / "tensorboard").glob("events.*")}
    assert len(killed_events) == 1 and len(resumed_events) == 2
    assert all(resumed_events[name] == data for name, data in killed_events.items())

    # W&B: the resumed run continues the killed run's id (the one its checkpoint recorded).
    offline_runs = list((resumed / "wandb").glob("offline-run-*"))
    checkpoint = read_checkpoint(resumed / "checkpoints" / "last.ckpt")
    assert len(offline_runs) == 2
    assert {p.name.rsplit("-", 1)[-1] for p in offline_runs} == {
        checkpoint["callbacks"]["ExactResume"]["wandb_run_id"]
    }

    # The job log is continued, not rewritten.
    (killed_log,) = killed.glob("*.log")
    resumed_log = (resumed / killed_log.name).read_text()
    assert resumed_log.startswith(killed_log.read_text())
    assert "resuming from" in resumed_log[len(killed_log.read_text()) :]


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file's bytes (and every link's target) below ``root``."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            files[str(path.relative_to(root))] = os.readlink(path).encode()
        elif path.is_file():
            files[str(path.relative_to(root))] = path.read_bytes()
    return files


def test_refused_resumes_change_nothing_on_disk(runs, tmp_path, cache_dir):
    """Four refusals in one multirun (jobs 0-3): another fine-tuning mode, another method, and twice an
    unreadable checkpoint. Each job folder holds a copy of the killed run and must stay byte-identical."""
    sweep, garbage = tmp_path / "sweep", tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    for job in range(4):
        shutil.copytree(runs.killed / "0", sweep / str(job), symlinks=True)  # full fine-tuning, SFT
    before = {job: _snapshot(sweep / str(job)) for job in range(4)}
    args = ["-m", "experiment=sft_tiny", "finetune=lora", *ARGS]
    sweep_args = ["method=sft,npo", f"ckpt_path=last,{garbage}", f"hydra.sweep.dir={sweep}"]
    result = run_train([*args, *sweep_args], cache_dir, check=False)
    output = result.stdout + result.stderr
    last = sweep / "{job}" / "checkpoints" / "last.ckpt"
    assert f"{str(last).format(job=0)}: its trainable parameters differ" in output  # sft, lora on full
    assert f"{str(last).format(job=2)}: written by method 'SFT', but this run uses 'NPO'" in output
    assert output.count(f"{garbage}: cannot be read as a Lightning checkpoint") == 2
    for job in range(4):  # no file changed, none added (no error.txt, no .hydra rewrite, no log line)
        assert _snapshot(sweep / str(job)) == before[job], f"job {job} changed its folder"


def test_a_missing_ckpt_path_is_an_error_naming_it(tmp_path, cache_dir):
    missing = tmp_path / "no_such_run" / "last.ckpt"
    run_dir = tmp_path / "run"
    result = run_train(
        ["experiment=sft_tiny", f"ckpt_path={missing}", f"hydra.run.dir={run_dir}"], cache_dir, check=False
    )
    assert result.returncode != 0
    assert f"ckpt_path={missing}: no such checkpoint file or folder" in result.stdout + result.stderr
    assert not [p for p in run_dir.rglob("*") if p.is_file()]
