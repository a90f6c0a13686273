"""`mirage-train` end to end, as a user runs it: single runs, multiruns, failures, resume, W&B offline."""

from __future__ import annotations

import csv
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.cli import ENV, REPO_ROOT, cli_command, run_cli

pytestmark = pytest.mark.slow


def train_command(args: list[str], cache_dir: Path) -> list[str]:
    return cli_command("mirage.train", args, cache_dir, "callbacks.rich_progress_bar=null")


def run_train(args: list[str], cache_dir: Path, timeout: int = 240, check: bool = True):
    return run_cli(train_command(args, cache_dir), timeout=timeout, check=check)


def _metrics_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "csv" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


def test_sft_tiny_trains_and_exports_a_reloadable_checkpoint(tmp_path, cache_dir, synthetic_dir):
    from mirage.data.collate import VLMCollator
    from mirage.data.readers import read_conversations
    from mirage.models.loading import load_vlm

    run_dir = tmp_path / "run"
    run_train(["experiment=sft_tiny", "trainer.max_steps=20", f"hydra.run.dir={run_dir}"], cache_dir)
    rows = [r for r in _metrics_rows(run_dir) if r.get("train/loss")]
    assert len(rows) == 20
    losses = [float(r["train/loss"]) for r in rows]
    assert sum(losses[-5:]) < sum(losses[:5])  # it learns
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "config.yaml").is_file() or (run_dir / ".hydra" / "config.yaml").is_file()
    model, processor = load_vlm(run_dir / "hf")
    batch = VLMCollator(processor)(read_conversations(synthetic_dir / "retain.json")[:2])
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "sample_ids", "sample_meta")}
    with torch.no_grad():
        logits = model(**inputs).logits
    assert torch.isfinite(logits).all() and logits.shape[-1] == len(processor.tokenizer)


def test_multirun_grid_gets_separate_dirs_and_survives_a_failing_job(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    result = run_train(
        [
            "-m",
            "experiment=sft_tiny",
            "finetune=full,lora",
            "method.optimizer.lr=1e-3,-1",
            "trainer.max_steps=3",
            f"hydra.sweep.dir={sweep}",
        ],
        cache_dir,
    )
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"], result.stdout[-2000:]
    for job in jobs:
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        if "lr=-1" in overrides:  # AdamW rejects a negative learning rate: this job fails alone
            assert "Invalid learning rate" in (job / "error.txt").read_text()
            assert not (job / "hf").exists()
        else:
            assert (job / "hf" / "mirage_export.json").is_file()
            assert (job / "hf" / "adapter_config.json").exists() == ("finetune=lora" in overrides)


def test_killed_run_resumes_from_last_ckpt(tmp_path, cache_dir):
    from mirage.methods.base import read_checkpoint

    run_dir = tmp_path / "run"
    args = [
        "experiment=sft_tiny",
        "trainer.max_steps=80",
        "trainer.max_epochs=-1",
        "logger=csv",
        "callbacks.model_checkpoint.every_n_train_steps=1",
        f"hydra.run.dir={run_dir}",
    ]
    cmd = train_command(args, cache_dir)
    proc = subprocess.Popen(
        cmd,
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 180
    while time.time() < deadline and proc.poll() is None:
        if last.is_file() and read_checkpoint_step(last) >= 5:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = read_checkpoint_step(last)
    assert 5 <= killed_at < 80
    result = run_train([*args, "ckpt_path=last"], cache_dir)
    assert f"resuming from {last}" in result.stdout + result.stderr
    assert read_checkpoint(last)["global_step"] == 80
    steps = [int(r["step"]) for r in _metrics_rows(run_dir) if r.get("train/loss")]
    assert min(steps) >= killed_at - 1  # the second run did not start over at step 0
    assert (run_dir / "hf" / "mirage_export.json").is_file()

    # A checkpoint of another kind (full fine-tuning) cannot resume a LoRA run.
    bad = run_train(
        [
            "experiment=sft_tiny",
            "finetune=lora",
            "trainer.max_steps=2",
            f"ckpt_path={last}",
            f"hydra.run.dir={tmp_path / 'lora'}",
        ],
        cache_dir,
        check=False,
    )
    assert bad.returncode != 0
    assert f"{last}: its trainable parameters differ" in bad.stdout + bad.stderr


def read_checkpoint_step(path: Path) -> int:
    from mirage.methods.base import read_checkpoint

    for _ in range(20):  # the file may be mid-write
        try:
            return int(read_checkpoint(path)["global_step"])
        except Exception:
            time.sleep(0.1)
    return -1


def test_wandb_offline_run_writes_local_files(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    run_train(
        ["experiment=sft_tiny", "trainer.max_steps=2", "logger=wandb", f"hydra.run.dir={run_dir}"], cache_dir
    )
    offline = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and any(offline[0].rglob("*.wandb"))


@pytest.mark.parametrize("experiment", ["npo_tiny", "rmu_tiny", "simnpo_tiny"])
def test_unlearning_experiments_run_and_export(experiment, tmp_path, cache_dir):
    from mirage.models.loading import load_vlm

    run_dir = tmp_path / "run"
    run_train([f"experiment={experiment}", "trainer.max_steps=6", f"hydra.run.dir={run_dir}"], cache_dir)
    terms = {k for row in _metrics_rows(run_dir) for k, v in row.items() if v and k.startswith("train/")}
    assert {"train/loss", "train/retain_ce"} <= terms
    model, _ = load_vlm(run_dir / "hf")
    assert model.config.model_type == "llava"
    if experiment == "rmu_tiny":
        assert {"train/forget_mse", "train/retain_mse"} <= terms
        control = load_file(run_dir / "hf" / "rmu_control_vector.safetensors")["control"]
        assert control.norm().item() == pytest.approx(20.0, rel=1e-5)  # c from configs/model_method/


def test_three_method_multirun(tmp_path, cache_dir):
    sweep = tmp_path / "sweep"
    run_train(
        [
            "-m",
            "experiment=unlearn_tiny",
            "method=npo,rmu,graddiff",
            "trainer.max_steps=3",
            f"hydra.sweep.dir={sweep}",
        ],
        cache_dir,
    )
    for job, method in zip(
        sorted(p for p in sweep.iterdir() if p.name.isdigit()), ["npo", "rmu", "graddiff"], strict=True
    ):
        assert f"method={method}" in (job / ".hydra" / "overrides.yaml").read_text()
        assert not (job / "error.txt").exists(), (job / "error.txt").read_text()
        assert (job / "hf" / "mirage_export.json").is_file()
