"""Loading errors and safety defaults, and a short training run of every tiny family through `train()`."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from transformers import LlamaConfig, LlamaForCausalLM

from mirage.models.loading import load_vlm

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_unknown_model_family_is_named(tmp_path):
    LlamaForCausalLM(
        LlamaConfig(
            hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=64
        )
    ).save_pretrained(tmp_path / "llama")
    with pytest.raises(KeyError, match=r"model_type 'llama' has no mirage family; known: .*llava"):
        load_vlm(tmp_path / "llama")


def test_missing_model_path_fails_clearly(tmp_path):
    with pytest.raises(OSError, match="nowhere"):
        load_vlm(tmp_path / "nowhere")


def test_remote_code_is_off_in_every_model_config():
    for path in sorted((CONFIGS / "model").glob("*.yaml")):
        cfg = yaml.safe_load(path.read_text())
        if "trust_remote_code" in cfg:
            assert cfg["trust_remote_code"] is False, path
        else:  # inherits from another model config
            assert "defaults" in cfg, path


@pytest.mark.parametrize("family", ["llava", "qwen2_vl", "qwen2_5_vl", "gemma3", "idefics3"])
@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_every_tiny_family_trains_through_the_task(family, finetune, tmp_path, cache_dir):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from mirage.train import train
    from mirage.utils.hydra import register_resolvers

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(
            "train.yaml",
            overrides=[
                "experiment=sft_tiny",
                f"model=tiny_{family}",
                f"finetune={finetune}",
                "trainer.max_steps=2",
                "logger=none",
                "callbacks=none",
                "trainer.enable_progress_bar=false",
                "+trainer.enable_model_summary=false",
                f"paths.output_dir={tmp_path}",
                f"paths.cache_dir={cache_dir}",
                "data.max_samples.retain=8",
                "data.max_samples.val=4",
            ],
        )
    metrics, objects = train(cfg)
    assert objects["trainer"].global_step == 2
    assert metrics["train/loss"] > 0 and metrics["trainable_params"] > 0
    export = tmp_path / "hf"
    assert (export / "adapter_config.json").exists() == (finetune == "lora")
    assert (export / "mirage_export.json").is_file() and (tmp_path / "metrics.json").is_file()
