"""The refusal direction (Arditi et al. 2024): difference of means, ablation by hooks, the orthogonalised
export, and the ablate_refusal probe, on a tiny LLaVA whose refusal is planted along a known direction."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from mirage.analysis.orthogonalize import export_orthogonalized, residual_writers
from mirage.analysis.refusal import (
    RefusalAblation,
    ablation,
    attach_ablation,
    candidate_layers,
    difference_of_means,
    find_refusal_direction,
    refusal_flags,
)
from mirage.data.collate import LABEL_KEYS, META_KEYS, VLMCollator
from mirage.data.readers import read_vlguard
from mirage.evaluation.generation import GenerationConfig
from mirage.evaluation.judges.keyword import KeywordRefusalJudge
from mirage.models.families import decoder_layers

GENERATION = GenerationConfig(max_new_tokens=8, batch_size=64)
# The planted model refuses prompts that contain one of these words (the synthetic world's harmful intents).
HARMFUL_WORDS = ("Ġhurt", "Ġmake", "Ġsteal")


def _inputs(processor, samples) -> dict:
    batch = VLMCollator(processor, train=False)(list(samples))
    return {k: v for k, v in batch.items() if k not in META_KEYS and k not in LABEL_KEYS}


def _subset(samples, *subsets):
    return [s for s in samples if s.meta["subset"] in subsets]


def _rate(flags: list[bool]) -> float:
    return sum(flags) / len(flags)


@torch.no_grad()
def plant_refusal(model, processor, seed: int = 1) -> torch.Tensor:
    """Make the tiny LLaVA refuse ("i cannot ...") exactly when a harmful word is in the prompt, through one
    residual direction ``d`` (returned). Built by hand, every step a weight edit:

    - ``d`` is cleared from every token and image embedding; the harmful words' embeddings get ``+3 d`` and
      the BOS token's ``-0.5 d``; every token gets a constant ``b`` (orthogonal to ``d``);
    - in layer 0, attention heads 0-1 become one uniform-attention head that reads the ``d`` component of
      every position and writes its average along ``d``: the last prompt token then carries ``+d`` for a
      harmful prompt and ``-d`` for a harmless one;
    - the output head reads it: " i" gets ``2.5 d - b``, " cannot" ``2 d - b`` plus the direction of the
      " i" embedding, so a prompt with ``+d`` is answered "i cannot i cannot ...", and one without ``d``
      (harmless, or ablated) never says " i" (the ``-b`` keeps it below the random logits).
    """
    tokenizer = processor.tokenizer
    ids = tokenizer.convert_tokens_to_ids
    harmful = [ids(token) for token in HARMFUL_WORDS]
    assert tokenizer.unk_token_id not in harmful, "the tiny tokenizer no longer has the harmful words"
    token_i, token_cannot = ids("Ġi"), ids("Ġcannot")
    basis, _ = torch.linalg.qr(torch.randn(64, 3, generator=torch.Generator().manual_seed(seed)))
    d, b, u_i = basis.T
    embeddings = model.get_input_embeddings().weight
    embeddings -= (embeddings @ d)[:, None] * d
    embeddings += b
    embeddings[harmful] += 3.0 * d
    embeddings[tokenizer.bos_token_id] -= 0.5 * d
    embeddings[token_i] += 4.0 * u_i
    out = model.model.multi_modal_projector.linear_2  # image tokens carry no d
    out.weight -= d[:, None] * (d @ out.weight)[None, :]
    out.bias -= d * (d @ out.bias)
    attention = decoder_layers(model)[0].self_attn  # 4 heads of 16 dims, 2 key-value groups
    attention.q_proj.weight[0:32] = 0  # heads 0-1: all scores 0, so uniform attention
    attention.v_proj.weight[0:16] = 0
    attention.v_proj.weight[0] = d  # value: the d component
    attention.o_proj.weight[:, 0:32] = 0
    attention.o_proj.weight[:, 0] = 20.0 * d  # written back along d
    head = model.lm_head.weight
    head[token_i] += 2.5 * d - b
    head[token_cannot] += 2.0 * d + 3.0 * u_i - b
    return d


@pytest.fixture(scope="module")
def planted(tiny_llava_dir, synthetic_dir):
    from mirage.models.loading import load_vlm

    model, processor = load_vlm(tiny_llava_dir)
    d = plant_refusal(model, processor)
    return model, processor, d


def test_difference_of_means_is_the_formula():
    harmful = torch.tensor([[1.0, 2.0, 0.0], [3.0, 4.0, 0.0]])
    harmless = torch.tensor([[0.0, 1.0, 1.0]])
    assert torch.equal(difference_of_means(harmful, harmless), torch.tensor([2.0, 2.0, -1.0]))
    with pytest.raises(ValueError, match="same mean"):
        difference_of_means(harmless, harmless)
    with pytest.raises(ValueError, match=r"\[N, H\]"):
        difference_of_means(harmful, torch.zeros(2, 4))
    assert candidate_layers(32) == [0, 6, 12, 19, 25]  # 5 of the first 26 (80% of 32)
    assert candidate_layers(4) == [0, 1, 2, 3] and candidate_layers(4, max_candidates=2) == [0, 3]


def test_hooks_remove_the_direction_from_the_residual_stream(tiny_llava, synthetic_dir):
    model, processor = tiny_llava
    inputs = _inputs(processor, read_vlguard(synthetic_dir / "test.json")[:4])
    direction = torch.randn(64, generator=torch.Generator().manual_seed(3))
    unit = direction / direction.norm()
    with torch.no_grad():
        plain = model(**inputs).logits
        group = attach_ablation(model, direction)
        streams: list[torch.Tensor] = []  # hooks registered after the ablation see the ablated stream
        taps = [
            layer.register_forward_hook(lambda m, i, o: streams.append(o)) for layer in decoder_layers(model)
        ]
        ablated = model(**inputs).logits
        for tap in taps:
            tap.remove()
        group.remove()
        again = model(**inputs).logits
    mask = inputs["attention_mask"].bool()
    for stream in streams:
        assert (stream[mask] @ unit).abs().max() < 1e-5 * stream[mask].norm(dim=-1).max()
    assert (plain - ablated).abs().max() > 1e-2  # the direction mattered
    assert torch.equal(plain, again)  # and the hooks are gone


@pytest.mark.parametrize("family", ["llava", "idefics3", "qwen2_vl", "qwen2_5_vl"])
def test_orthogonalised_export_equals_the_hooked_model(family, cache_dir, synthetic_dir, tmp_path):
    from transformers import AutoModelForImageTextToText

    from mirage.models.loading import load_vlm
    from mirage.models.tiny import TinyVLMSpec, build_tiny_vlm

    model, processor = load_vlm(build_tiny_vlm(TinyVLMSpec(family=family), cache_dir / "tiny_models"))
    inputs = _inputs(processor, read_vlguard(synthetic_dir / "test.json")[:4])
    direction = torch.randn(64, generator=torch.Generator().manual_seed(4))
    with torch.no_grad(), ablation(model, direction):
        hooked = model(**inputs).logits
    out = export_orthogonalized(copy.deepcopy(model), processor, direction, tmp_path / "export")
    stock = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32)
    with torch.no_grad():
        exported = stock(**inputs).logits
        plain = model(**inputs).logits
    assert (exported - hooked).abs().max() < 1e-5 * hooked.abs().max()
    assert (exported - plain).abs().max() > 1e-2  # the edit changed the model


def test_gemma3_export_never_writes_the_direction(cache_dir, synthetic_dir, tmp_path):
    """Gemma 3 normalises after each sub-layer: its export writes nothing along r (exactly), but only
    approximates the hooked model; its tied output head is untied and kept."""
    from transformers import AutoModelForImageTextToText

    from mirage.models.loading import load_vlm
    from mirage.models.tiny import TinyVLMSpec, build_tiny_vlm

    model, processor = load_vlm(build_tiny_vlm(TinyVLMSpec(family="gemma3"), cache_dir / "tiny_models"))
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()  # tied
    inputs = _inputs(processor, read_vlguard(synthetic_dir / "test.json")[:4])
    direction = torch.randn(64, generator=torch.Generator().manual_seed(5))
    unit = direction / direction.norm()
    head = model.lm_head.weight.detach().clone()
    stock = AutoModelForImageTextToText.from_pretrained(
        export_orthogonalized(copy.deepcopy(model), processor, direction, tmp_path / "export"),
        dtype=torch.float32,
    )
    assert torch.equal(stock.lm_head.weight, head)
    streams: list[torch.Tensor] = []
    for layer in decoder_layers(stock):
        layer.register_forward_hook(lambda m, i, o: streams.append(o))
    with torch.no_grad():
        stock(**inputs)
    mask = inputs["attention_mask"].bool()
    assert len(streams) == len(decoder_layers(stock))
    for stream in streams:
        assert (stream[mask] @ unit).abs().max() < 1e-5 * stream[mask].norm(dim=-1).max()


def test_a_lora_export_is_merged_before_orthogonalising(tiny_llava_dir, synthetic_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    from mirage.models.loading import load_vlm

    model, processor = load_vlm(tiny_llava_dir)
    torch.manual_seed(0)
    lora = LoraConfig(r=4, target_modules=["o_proj", "down_proj"], init_lora_weights=False)
    get_peft_model(model, lora).save_pretrained(tmp_path / "adapter")
    adapted, processor = load_vlm(tmp_path / "adapter")
    assert hasattr(adapted, "merge_and_unload")
    inputs = _inputs(processor, read_vlguard(synthetic_dir / "test.json")[:4])
    direction = torch.randn(64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad(), ablation(adapted, direction):
        hooked = adapted(**inputs).logits
    out = export_orthogonalized(adapted, processor, direction, tmp_path / "export")
    assert not (out / "adapter_config.json").exists()
    with torch.no_grad():
        exported = AutoModelForImageTextToText.from_pretrained(out, dtype=torch.float32)(**inputs).logits
    assert (exported - hooked).abs().max() < 1e-5 * hooked.abs().max()


def test_ablating_the_planted_refusal_direction_restores_compliance(planted, synthetic_dir, tmp_path):
    from transformers import AutoModelForImageTextToText

    model, processor, d = planted
    train, test = read_vlguard(synthetic_dir / "train.json"), read_vlguard(synthetic_dir / "test.json")
    harmful, harmless = _subset(train, "safe_unsafes"), _subset(train, "safe_safes")
    judge = KeywordRefusalJudge()  # VLGuard's phrases: "i cannot" is one
    found = find_refusal_direction(
        model,
        processor,
        harmful[16:],
        harmless[16:],
        held_out_harmful=harmful[:16],
        held_out_harmless=harmless[:16],
        judge=judge,
        generation=GENERATION,
    )
    assert [row["layer"] for row in found.candidates] == [0, 1, 2, 3]
    assert found.baseline_refusal == 1.0
    assert found.candidates[[r["layer"] for r in found.candidates].index(found.layer)]["refusal"] == 0.0
    assert float(found.unit @ d) > 0.95  # the computed direction is the planted one

    asked, benign = _subset(test, "safe_unsafes"), _subset(test, "safe_safes")
    refusal = _rate(refusal_flags(model, processor, asked, judge, GENERATION)[0])
    assert refusal >= 0.9 and _rate(refusal_flags(model, processor, benign, judge, GENERATION)[0]) <= 0.1
    with ablation(model, found.direction):
        hooked = _rate(refusal_flags(model, processor, asked, judge, GENERATION)[0])
    random_direction = torch.randn(64, generator=torch.Generator().manual_seed(7))
    with ablation(model, random_direction):  # a control: ablating any other direction leaves refusal alone
        control = _rate(refusal_flags(model, processor, asked, judge, GENERATION)[0])
    exported = export_orthogonalized(copy.deepcopy(model), processor, found.direction, tmp_path / "export")
    stock = AutoModelForImageTextToText.from_pretrained(exported, dtype=torch.float32)
    weights = _rate(refusal_flags(stock, processor, asked, judge, GENERATION)[0])
    assert hooked <= 0.1 and weights <= 0.1  # a drop of at least 80 points
    assert control >= 0.9


def test_the_probe_caches_its_direction_and_export(planted, synthetic_dir, tmp_path):
    from functools import partial

    from mirage.probes.ablate_refusal import AblateRefusalProbe
    from mirage.probes.base import AuditTarget
    from mirage.workflows.configs import compose

    model, processor, d = planted
    model.save_pretrained(tmp_path / "planted")
    processor.save_pretrained(tmp_path / "planted")
    probe = AblateRefusalProbe(
        partial(read_vlguard, synthetic_dir / "train.json"),
        harmful_subsets=["safe_unsafes"],
        fit_prompts=32,
        held_out_prompts=16,
        candidates=[1, 2],
        max_new_tokens=8,
        batch_size=64,
    )
    target = AuditTarget("planted", tmp_path / "planted", tmp_path / "work", seed=3)
    hook, weights = probe.variants(target)
    folder = next((tmp_path / "work" / "ablate_refusal").iterdir())
    selection = json.loads((folder / "selection.json").read_text())
    assert selection["layer"] in (1, 2) and selection["baseline_refusal"] == 1.0
    assert selection["prompts"] == {
        "held_out_harmful": 16,
        "fit_harmful": 32,
        "held_out_harmless": 16,
        "fit_harmless": 32,
    }
    assert hook.label == "ablate_refusal/hook" and weights.label == "ablate_refusal/weights"
    assert weights.overrides == ("model=checkpoint", f"model.name_or_path={folder / 'export'}")
    stamp = (folder / "direction.safetensors").stat().st_mtime_ns
    assert probe.variants(target) == [hook, weights]  # reused, not recomputed
    assert (folder / "direction.safetensors").stat().st_mtime_ns == stamp
    assert len(list((tmp_path / "work" / "ablate_refusal").iterdir())) == 1

    # The hook variant is an evaluation override: the steering it composes ablates the saved direction.
    cfg = compose("eval", [*hook.overrides, "paths.output_dir=.", "paths.work_dir=."])
    from hydra.utils import instantiate

    steering = instantiate(cfg.steering)
    assert isinstance(steering, RefusalAblation)
    asked = _subset(read_vlguard(synthetic_dir / "test.json"), "safe_unsafes")
    judge = KeywordRefusalJudge()
    with steering.applied(model, processor):
        assert _rate(refusal_flags(model, processor, asked, judge, GENERATION)[0]) <= 0.1
    assert _rate(refusal_flags(model, processor, asked, judge, GENERATION)[0]) >= 0.9
    assert float(torch.nn.functional.cosine_similarity(steering.direction, d, dim=0)) > 0.95


def test_probe_settings_are_checked(synthetic_dir):
    from functools import partial

    from mirage.probes.ablate_refusal import AblateRefusalProbe

    reader = partial(read_vlguard, synthetic_dir / "train.json")
    with pytest.raises(ValueError, match="modes"):
        AblateRefusalProbe(reader, modes=["both"])
    with pytest.raises(ValueError, match="disjoint"):
        AblateRefusalProbe(reader, harmless_subsets=["unsafes"])
    with pytest.raises(ValueError, match="no harmful prompts"):
        AblateRefusalProbe(partial(read_vlguard, synthetic_dir / "train.json", subsets=["safe_safes"])).split(
            0
        )
    probe = AblateRefusalProbe(reader, harmful_subsets=["safe_unsafes"], held_out_prompts=48)
    with pytest.raises(ValueError, match=r"train\.json has 48 harmful prompts"):
        probe.split(0)


def test_residual_writers_of_the_tiny_llava(tiny_llava):
    names = [w.name for w in residual_writers(tiny_llava[0])]
    assert names[:3] == [
        "input_embeddings",
        "model.multi_modal_projector.linear_2.weight",
        "model.multi_modal_projector.linear_2.bias",
    ]
    assert names[3:] == [
        f"layer.{i}.{p}.weight" for i in range(4) for p in ("self_attn.o_proj", "mlp.down_proj")
    ]


def test_the_probe_config_composes_into_the_audit_and_instantiates(cache_dir, synthetic_dir, tmp_path):
    from hydra.utils import instantiate
    from tests.compose import compose_config

    from mirage.probes.ablate_refusal import AblateRefusalProbe

    overrides = ["+probe@probes.ablate_refusal=ablate_refusal", f"paths.cache_dir={cache_dir}"]
    cfg = compose_config(overrides, tmp_path, "audit.yaml")
    probe = instantiate(cfg.probes.ablate_refusal)
    assert isinstance(probe, AblateRefusalProbe) and isinstance(probe.judge, KeywordRefusalJudge)
    splits = probe.split(0)  # the synthetic train split: 96 harmful and 48 harmless prompts
    assert {name: len(s) for name, s in splits.items()} == {
        "held_out_harmful": 32,
        "fit_harmful": 64,
        "held_out_harmless": 32,
        "fit_harmless": 16,
    }
    assert Path(probe._source()).parent == synthetic_dir
