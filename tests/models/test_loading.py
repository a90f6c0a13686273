"""Loading errors and safety defaults, and a short training run of every tiny family through `train()`."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM

from mirage.models.loading import WeightsError, load_vlm

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

    from mirage.workflows.configs import register_resolvers
    from mirage.workflows.training import train

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(
            "train.yaml",
            overrides=[
                "experiment=sft_tiny",
                "model=tiny",
                f"model.spec.family={family}",
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


# ------------------------------------------------------------------ bad weight files get a clear error


@pytest.fixture()
def llava_copy(tiny_llava_dir, tmp_path) -> Path:
    """A private copy of the tiny LLaVA checkpoint that a test may damage."""
    return Path(shutil.copytree(tiny_llava_dir, tmp_path / "llava"))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[: len(data) // 2], r"truncated \(or padded\)"),
        (lambda data: data[:-1], r"truncated \(or padded\)"),
        (lambda data: data + b"\0", r"truncated \(or padded\)"),
        (lambda data: b"", r"empty weight file \(0 bytes\)"),
        (lambda data: b"<html>404 Not Found</html>" * 40, r"not a safetensors file"),
    ],
    ids=["half", "last-byte-cut", "byte-appended", "zero-bytes", "garbage"],
)
def test_a_damaged_weight_file_is_named(llava_copy, damage, message):
    weights = llava_copy / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(WeightsError, match=rf"^{re.escape(str(weights))}: {message}"):
        load_vlm(llava_copy)


def test_a_checkpoint_missing_a_tensor_is_an_error_not_a_random_init(llava_copy):
    weights = llava_copy / "model.safetensors"
    tensors = load_file(weights)
    dropped = next(name for name in tensors if "layers.1.mlp.down_proj" in name)
    del tensors[dropped]
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(WeightsError) as err:
        load_vlm(llava_copy)
    message = str(err.value)
    assert message.startswith(f"{weights}: missing 1 of the tensors LlavaForConditionalGeneration needs")
    assert "layers.1.mlp.down_proj.weight" in message  # the model's name for it (the file's differs)


def test_a_sharded_checkpoint_is_checked_shard_by_shard(tiny_llava_dir, tmp_path):
    model, _ = load_vlm(tiny_llava_dir)
    sharded = tmp_path / "sharded"
    model.save_pretrained(sharded, max_shard_size="300KB")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "processor_config.json"):
        shutil.copy(tiny_llava_dir / name, sharded / name)
    shutil.copy(tiny_llava_dir / "chat_template.jinja", sharded / "chat_template.jinja")
    shards = sorted(sharded.glob("model-*.safetensors"))
    assert len(shards) >= 2 and (sharded / "model.safetensors.index.json").is_file()
    reloaded, _ = load_vlm(sharded)  # the complete checkpoint loads
    torch.testing.assert_close(reloaded.state_dict(), model.state_dict(), rtol=0, atol=0)
    shards[-1].write_bytes(shards[-1].read_bytes()[:-8])
    with pytest.raises(WeightsError, match=rf"^{re.escape(str(shards[-1]))}: truncated"):
        load_vlm(sharded)
    shards[-1].unlink()
    index = sharded / "model.safetensors.index.json"
    with pytest.raises(WeightsError, match=rf"^{re.escape(str(index))}: names the shard '{shards[-1].name}'"):
        load_vlm(sharded)


@pytest.fixture()
def lora_export(tiny_llava_dir, tmp_path) -> Path:
    """A LoRA export of the tiny LLaVA (adapter on the language model, projector trained in full)."""
    from mirage.models.finetune import FinetuneSpec, apply_finetune

    model, processor = load_vlm(tiny_llava_dir)
    peft_model = apply_finetune(model, FinetuneSpec(mode="lora", lora={"r": 4, "projector": "full"}))
    out = tmp_path / "lora"
    peft_model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def test_a_lora_export_with_a_bad_adapter_file_is_named(lora_export):
    from peft import PeftModel

    loaded, _ = load_vlm(lora_export)  # the complete export loads
    assert isinstance(loaded, PeftModel)
    adapter = lora_export / "adapter_model.safetensors"
    tensors = load_file(adapter)
    dropped = next(name for name in tensors if "lora_B" in name)
    save_file({k: v for k, v in tensors.items() if k != dropped}, adapter, metadata={"format": "pt"})
    with pytest.raises(WeightsError, match=rf"^{re.escape(str(adapter))}: missing 1 of the adapter tensors"):
        load_vlm(lora_export)
    adapter.write_bytes(adapter.read_bytes()[:-100])
    with pytest.raises(WeightsError, match=rf"^{re.escape(str(adapter))}: truncated"):
        load_vlm(lora_export)
    adapter.unlink()
    with pytest.raises(WeightsError, match=rf"^{re.escape(str(adapter))}: not found"):
        load_vlm(lora_export)
