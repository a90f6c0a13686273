"""SFT on the tiny LLaVA: it learns, its exports reload to the same logits, checkpoints know their kind."""

from __future__ import annotations

import functools

import pytest
import torch

from mirage.data.collate import VLMCollator
from mirage.data.readers import read_conversations
from mirage.methods.base import CheckpointMismatchError, check_checkpoint_signature, read_checkpoint
from mirage.methods.sft import SFT
from mirage.models.finetune import FinetuneSpec, apply_finetune, count_parameters
from mirage.models.loading import load_vlm


@pytest.fixture()
def retain_batch(synthetic_dir, processor):
    samples = read_conversations(synthetic_dir / "retain.json")[:4]
    return {"retain": VLMCollator(processor)(samples)}


def _sft(model, processor, lr=1e-2):
    return SFT(model, optimizer=functools.partial(torch.optim.AdamW, lr=lr), processor=processor)


def _train_steps(method, batch, steps):
    optimizer = method.configure_optimizers()
    losses = []
    for _ in range(steps):
        loss = method.compute_loss(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_sft_overfits_a_fixed_batch(tiny_llava, retain_batch):
    model, processor = tiny_llava
    # lr 3e-3 converges smoothly on every kernel set (final/initial 0.007 with default, AVX2 and AVX-512
    # kernels alike); 1e-2 oscillated, and its 80th loss ranged 0.13-0.18 of the first between kernels.
    method = _sft(apply_finetune(model, FinetuneSpec()), processor, lr=3e-3)
    losses = _train_steps(method, retain_batch, 150)
    assert losses[0] > 5.0  # a random model over a 512-token vocabulary: about ln(512) = 6.2
    assert losses[-1] < 0.05 * losses[0]
    terms = method.compute_loss(retain_batch)
    assert set(terms) == {"loss", "retain_loss"} and torch.equal(terms["loss"], terms["retain_loss"])


def _logits(model, batch):
    model.eval()
    with torch.no_grad():
        return model(**SFT.model_inputs(batch["retain"])).logits


@pytest.mark.parametrize("mode", ["full", "lora", "qlora", "qlora8"])
def test_export_reloads_to_the_same_logits(mode, tiny_llava_dir, retain_batch, tmp_path):
    from peft import PeftModel

    quantization = {"qlora": {"bits": 4}, "qlora8": {"bits": 8}}.get(mode)
    model, processor = load_vlm(tiny_llava_dir, quantization=quantization)
    spec = (
        FinetuneSpec(mode="full")
        if mode == "full"
        else FinetuneSpec(mode="lora", lora={"r": 4, "projector": "full"}, quantization=quantization)
    )
    method = _sft(apply_finetune(model, spec), processor)
    _train_steps(method, retain_batch, 3)
    trained = _logits(method.model, retain_batch)
    out = method.save_pretrained(tmp_path / "hf")
    if mode == "full":
        reloaded, _ = load_vlm(out)
        assert not (out / "adapter_config.json").exists()
    else:
        base, _ = load_vlm(tiny_llava_dir, quantization=quantization)
        untrained = _logits(base, retain_batch)
        assert not torch.allclose(untrained, trained)  # training changed the outputs
        reloaded = PeftModel.from_pretrained(base, out)
        # Full-precision LoRA with adapters off is the base model bit for bit. A quantised base is not:
        # bitsandbytes picks its CPU 4-bit kernel by instruction set (on AVX-512 a later call of the same
        # layer rounds like bf16, ~4e-3), so the bound is a tenth of what 4-bit quantisation itself moves.
        tolerance = 0.0
        if quantization is not None:
            full_precision, _ = load_vlm(tiny_llava_dir)
            tolerance = 0.1 * (_logits(full_precision, retain_batch) - untrained).abs().max().item()
        with reloaded.disable_adapter():  # the cheap reference model of later methods
            off = _logits(reloaded, retain_batch)
        torch.testing.assert_close(off, untrained, rtol=0, atol=tolerance)
        # The bound still tells a model with adapters on from one with adapters off.
        assert (trained - untrained).abs().max() > 10 * max(tolerance, 1e-6)
    bound = max(1e-5, tolerance) if quantization is not None else 1e-5
    torch.testing.assert_close(_logits(reloaded, retain_batch), trained, rtol=0, atol=bound)


def test_trainable_counts_for_modes_on_llava(tiny_llava_dir):
    model, _ = load_vlm(tiny_llava_dir)
    sizes = {
        c: sum(p.numel() for n, p in model.named_parameters() if n.startswith(prefix))
        for c, prefix in (
            ("vision", "model.vision_tower"),
            ("projector", "model.multi_modal_projector"),
            ("lm", "model.language_model"),
            ("head", "lm_head"),
        )
    }
    counts = count_parameters(apply_finetune(model, FinetuneSpec()))
    assert counts["trainable"] == sizes["projector"] + sizes["lm"] + sizes["head"]
    assert counts["trainable/vision_tower"] == 0
    model, _ = load_vlm(tiny_llava_dir)
    only_down = apply_finetune(model, FinetuneSpec(trainable_regex=r"layers\.[23]\.mlp\.down_proj"))
    # Llama down_proj: intermediate (128) -> hidden (64), no bias; two layers selected.
    assert count_parameters(only_down)["trainable"] == 2 * 128 * 64
    model, _ = load_vlm(tiny_llava_dir)
    lora = apply_finetune(
        model, FinetuneSpec(mode="lora", lora={"r": 2, "target_modules": "down_proj", "projector": "full"})
    )
    counts = count_parameters(lora)
    # r * (in + out) per adapted down_proj, 4 layers; plus a full trainable copy of the projector.
    assert counts["trainable/language_model"] == 4 * 2 * (128 + 64)
    assert counts["trainable/projector"] == sizes["projector"]
    assert counts["trainable/vision_tower"] == 0


def test_checkpoint_signature_refuses_the_wrong_kind(tiny_llava, tmp_path):
    model, processor = tiny_llava
    method = _sft(apply_finetune(model, FinetuneSpec()), processor)
    expected = method.checkpoint_signature()
    good = {"mirage": dict(expected)}
    check_checkpoint_signature(good, expected, source="x.ckpt")
    with pytest.raises(CheckpointMismatchError, match=r"x\.ckpt: not a mirage training checkpoint"):
        check_checkpoint_signature({"state_dict": {}}, expected, source="x.ckpt")
    with pytest.raises(CheckpointMismatchError, match=r"written by method 'NPO', but this run uses 'SFT'"):
        check_checkpoint_signature({"mirage": {**expected, "method": "NPO"}}, expected, source="x.ckpt")
    lora_like = {
        **expected,
        "trainable": ["model.language_model.layers.0.self_attn.q_proj.lora_A.default.weight"],
    }
    with pytest.raises(CheckpointMismatchError, match="trainable parameters differ"):
        check_checkpoint_signature({"mirage": lora_like}, expected, source="x.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(CheckpointMismatchError, match=r"junk\.ckpt: cannot be read"):
        read_checkpoint(junk)


def test_mixed_sft_loss_is_the_weighted_mean_of_its_splits(tiny_llava, synthetic_dir, processor):
    model, _ = tiny_llava
    collate = VLMCollator(processor)
    batch = {
        "base": collate(read_conversations(synthetic_dir / "base.json")[:3]),
        "retain": collate(read_conversations(synthetic_dir / "retain.json")[:4]),
    }
    method = SFT(
        apply_finetune(model, FinetuneSpec()),
        optimizer=functools.partial(torch.optim.AdamW, lr=1e-3),
        split=["base", "retain"],
        split_weights={"retain": 3.0},
    )
    assert method.train_splits == ("base", "retain")
    terms = method.compute_loss(batch)
    base, retain = method.answer_loss(batch["base"]), method.answer_loss(batch["retain"])
    assert torch.allclose(terms["base_loss"], base) and torch.allclose(terms["retain_loss"], retain)
    assert torch.allclose(terms["loss"], (1.0 * base + 3.0 * retain) / 4.0)
    with pytest.raises(ValueError, match="forget"):
        SFT(model, optimizer=torch.optim.AdamW, split=["base"], split_weights={"forget": 1.0})
