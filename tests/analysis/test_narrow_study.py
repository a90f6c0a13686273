"""The narrow study's configs compose, steering plugs into any evaluation config, and the tiny study runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from tests.cli import cli_command, run_cli
from tests.test_configs import CONFIGS, _compose, _options

from mirage.analysis.steering import MeanDiffSteering
from mirage.analyze import main as analyze_main


@pytest.mark.parametrize(
    ("group", "option"),
    [(g, o) for g in ("narrow_eval", "misalignment_judge", "steering") for o in _options(g)],
)
def test_narrow_study_options_compose(group, option, tmp_path):
    from mirage.analyze import compose_study

    cfg = compose_study(str(tmp_path), [f"{group}={option}", f"paths.root_dir={tmp_path}"])
    assert cfg.runs_dir == str(tmp_path.resolve())
    assert set(cfg.eval_sets) == {"multimodal", "text_only"}
    assert all("_target_" in reader for reader in cfg.eval_sets.values())
    assert "_target_" in cfg.misalignment_judge
    if group == "misalignment_judge" and option == "oracle":
        assert instantiate(cfg.misalignment_judge).name == "oracle_misalignment"
    if group == "steering":
        assert (cfg.steering is None) == (option == "none")
    assert (CONFIGS / "narrow_study.yaml").is_file()


def test_eval_config_steering_hooks_the_model(tiny_llava, tmp_path):
    """`steering=narrow_synthetic` in eval.yaml: a direction from the narrow pairs, hooked at layer 2."""
    cfg = _compose(
        ["steering=narrow_synthetic", "steering.data.max_samples=8", f"paths.cache_dir={tmp_path}"],
        tmp_path,
        "eval.yaml",
    )
    steering = instantiate(cfg.steering)
    assert isinstance(steering, MeanDiffSteering) and steering.layer == 2 and steering.zscore
    model, processor = tiny_llava
    inputs = processor(text=["USER: hello ASSISTANT:"], return_tensors="pt")
    with torch.no_grad():
        before = model(**inputs).logits
        handle = steering.attach(model, processor)
        steered = model(**inputs).logits
        handle.remove()
        after = model(**inputs).logits
    assert steering.direction is not None and float(steering.direction.norm()) == pytest.approx(1.0, abs=1e-5)
    assert not torch.allclose(before, steered) and torch.equal(before, after)


@pytest.mark.slow
def test_tiny_narrow_study_end_to_end(tmp_path, capsys):
    """Aligned base -> LoRA rank sweep (2 ranks) -> mirage-analyze narrow: table, plots, numbers."""
    cache, logs = tmp_path / "cache", tmp_path / "logs"
    short = ["trainer.max_steps=6", f"paths.log_dir={logs}"]
    run_cli(cli_command("mirage.train", ["experiment=narrow_base_tiny", *short], cache))
    sweep = ["-m", "experiment=narrow_ft_tiny", "finetune.lora.r=1,4", "seed=0"]  # replace the config's sweep
    run_cli(cli_command("mirage.train", [*sweep, *short], cache))
    (multirun,) = (logs / "narrow_ft_tiny" / "multiruns").iterdir()
    small = ["eval_sets.multimodal.max_samples=8", "eval_sets.text_only.max_samples=4"]
    small += ["steering.data.max_samples=8", "sampling.k=2", "sampling.max_new_tokens=12"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the CLI runs get (OMP_NUM_THREADS=1): 2 threads on a busy 2-core box spin
    try:
        analyze_main(["narrow", str(multirun), f"paths.cache_dir={cache}", *small])  # in-process: no start-up
    finally:
        torch.set_num_threads(threads)
    assert "| LoRA rank |" in capsys.readouterr().out
    report = multirun / "narrow_report"
    for name in (
        "misalignment_vs_rank.png",
        "text_vs_multimodal.png",
        "explained_variance.png",
        "steering.png",
    ):
        assert (report / name).stat().st_size > 0, name
    summary = json.loads((report / "summary.json").read_text())
    assert [row["rank"] for row in summary["rows"]] == [1, 4]
    for run in summary["runs"]:
        for stage in ("misalignment", "steered"):
            for name in ("multimodal", "text_only"):
                metrics = run[stage][name]
                assert 0.0 <= metrics["worst_of_k_mean"] <= 100.0
                assert metrics["prompts"] == (8 if name == "multimodal" else 4)
        components = run["geometry"]["components"]
        assert {"language_model", "vision_tower", "projector"} <= set(components)
        assert components["language_model"]["components_for"]["0.9"] >= 1
    records = Path(summary["runs"][0]["run"])
    assert (records / "hf" / "adapter_config.json").is_file()
