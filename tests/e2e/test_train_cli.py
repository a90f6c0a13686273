"""`mirage-train` end to end, as a user runs it: single runs, multiruns, failures, W&B offline (resume:
tests/e2e/test_resume.py)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tests.cli import cli_command, run_cli

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
        check=False,
    )
    assert result.returncode == 1  # every job ran, then the sweep says that two failed
    assert "2 job(s) of the sweep failed" in result.stdout + result.stderr
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


def test_a_short_run_is_quiet_by_default_and_keeps_its_config(cache_dir, tmp_path):
    # The 20-step tiny run of the issue: under 40 console lines besides progress bars; the config tree is
    # written to the run folder, and printed only on request.
    quiet = run_cli(
        cli_command(
            "mirage.train",
            ["experiment=sft_tiny", "trainer.max_steps=20"],
            cache_dir,
            f"hydra.run.dir={tmp_path}/q",
        )
    )
    lines = [line for line in (quiet.stdout + quiet.stderr).splitlines() if "━" not in line]
    assert len(lines) < 40, "\n".join(lines)
    assert "Tip:" not in quiet.stderr and "LeafSpec" not in quiet.stderr
    assert "method" in (tmp_path / "q" / "config_tree.yaml").read_text()
    loud = run_cli(
        cli_command(
            "mirage.train",
            ["experiment=sft_tiny", "trainer.max_steps=2", "extras.print_config=true"],
            cache_dir,
            f"hydra.run.dir={tmp_path}/loud",
        )
    )
    assert "config" in loud.stdout and "finetune" in loud.stdout and len(loud.stdout.splitlines()) > 60
