"""A sixth model family is one YAML file in the user's own config folder: LLaVA-NeXT, which no file under
src/ knows. Its tiny builder is the function below, named by the YAML's ``_target_``."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image
from tests.cli import REPO_ROOT, cli_command, run_cli

from mirage.models.families import COMPONENTS, add_config_dir, family_of, remove_config_dir, unwrap_peft
from mirage.models.finetune import FinetuneSpec, apply_finetune
from mirage.models.loading import load_vlm
from mirage.models.tiny import (
    LLAVA_CHAT_TEMPLATE,
    TinyVLMSpec,
    build_tiny_vlm,
    set_generation_ids,
    train_tokenizer,
    vision_dims,
)

FAMILY = "llava_next"
# The whole of what adding the family takes. LLaVA-NeXT keeps LLaVA's paths, plus the learned
# row-separator embedding `model.image_newline` (counted with the projector: it lays out the image tokens).
FAMILY_YAML = """\
# LLaVA-NeXT (LLaVA-1.6): CLIP tower, MLP projector, Llama language model; images tiled ("anyres").
_target_: mirage.models.families.FamilySpec # the component map below
name: llava_next # the file's name
model_types: [llava_next] # config.model_type of its checkpoints
vision_tower: [model.vision_tower] # vision encoder
projector: [model.multi_modal_projector, model.image_newline] # connector and the row-separator embedding
language_model: [model.language_model, lm_head] # text backbone and head
decoder_layers: model.language_model.layers # what RMU and steering hook
tiny_builders: # model_type -> tiny offline builder
  llava_next: # TinyVLMSpec.family
    _target_: tests.models.test_new_family.build_tiny_llava_next # builder(spec, out_dir)
    _partial_: true # the function, called later
"""


def build_tiny_llava_next(spec: TinyVLMSpec, out_dir: Path) -> None:
    """A LLaVA-NeXT of ``spec``'s sizes with one tiling grid (the image's own size): base image + 1 tile."""
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextProcessor,
    )
    from transformers.models.llava_next import LlavaNextImageProcessorPil

    tokenizer = train_tokenizer(spec)
    grid = [[spec.image_size, spec.image_size]]
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(**vision_dims(spec)),
        text_config=LlamaConfig(
            hidden_size=spec.hidden,
            intermediate_size=spec.intermediate,
            num_hidden_layers=spec.layers,
            num_attention_heads=spec.heads,
            num_key_value_heads=spec.kv_heads,
            vocab_size=len(tokenizer),
            max_position_embeddings=spec.max_positions,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=grid,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(spec.seed)
    model = LlavaNextForConditionalGeneration(config)
    set_generation_ids(model, tokenizer)
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
        image_grid_pinpoints=grid,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


@pytest.fixture(scope="module")
def family_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's config folder holding one file: family/llava_next.yaml."""
    root = tmp_path_factory.mktemp("user_configs")
    (root / "family").mkdir()
    (root / "family" / f"{FAMILY}.yaml").write_text(FAMILY_YAML)
    return root


@pytest.fixture
def registered(family_dir: Path):
    add_config_dir(family_dir)
    yield family_dir
    remove_config_dir(family_dir)


def test_no_file_under_src_mentions_the_new_family() -> None:
    hits = [
        str(path)
        for path in (REPO_ROOT / "src").rglob("*")
        if path.is_file()
        and path.suffix in (".py", ".yaml", ".txt", ".json")
        and ("llava_next" in path.read_text().lower() or "llavanext" in path.read_text().lower())
    ]
    assert hits == []
    assert not (REPO_ROOT / "configs" / "family" / f"{FAMILY}.yaml").exists()


def test_the_family_file_is_all_it_takes(registered: Path, tmp_path: Path) -> None:
    path = build_tiny_vlm(TinyVLMSpec(family=FAMILY), tmp_path)
    model, processor = load_vlm(path)
    spec = family_of(model)
    assert (spec.name, type(model).__name__) == (FAMILY, "LlavaNextForConditionalGeneration")
    # Every parameter belongs to exactly one component, image_newline to the projector.
    counts: Counter = Counter()
    for name, param in model.named_parameters():
        counts[spec.component_of(name)] += param.numel()
    assert set(counts) == set(COMPONENTS) and all(counts.values())
    assert spec.component_of("model.image_newline") == "projector"

    # LoRA stays in the language model: q_proj / v_proj of its 4 decoder layers, none of CLIP's.
    peft_model = apply_finetune(
        model, FinetuneSpec(mode="lora", lora={"r": 2, "target_modules": "q_proj|v_proj"})
    )
    hosts = [n.removesuffix(".lora_A") for n, _ in peft_model.named_modules() if n.endswith(".lora_A")]
    assert len(hosts) == 2 * TinyVLMSpec().layers
    assert {spec.component_of(h.removeprefix("base_model.model.")) for h in hosts} == {"language_model"}

    image = Image.new("RGB", (40, 30), (200, 20, 20))
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "what is it?"}]}],
        tokenize=False,
        add_generation_prompt=True,
    )
    batch = processor(text=[prompt], images=[[image]], return_tensors="pt")
    with torch.no_grad():
        logits = unwrap_peft(peft_model)(**batch).logits
    assert logits.shape[-1] == len(processor.tokenizer) and torch.isfinite(logits).all()


def test_without_its_folder_the_family_is_unknown(family_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(KeyError, match=rf"no tiny builder for family '{FAMILY}'"):
        build_tiny_vlm(TinyVLMSpec(family=FAMILY), tmp_path)


@pytest.mark.slow
def test_mirage_train_finds_the_family_on_the_hydra_search_path(
    family_dir: Path, tmp_path: Path, cache_dir
) -> None:
    run_dir = tmp_path / "run"
    command = cli_command(
        "mirage.train",
        [
            "model=tiny",
            f"model.spec.family={FAMILY}",
            "finetune=lora",
            "method=rmu",  # hooks decoder layer k through the family map; k from model_method/tiny_rmu.yaml
            "trainer.max_steps=2",
            "trainer.max_epochs=-1",
            "logger=none",
            "callbacks=none",
            "trainer.enable_progress_bar=false",
            "data.max_samples.forget=4",
            "data.max_samples.retain=4",
            "data.max_samples.val=2",
            f"hydra.searchpath=[file://{family_dir}]",
            f"hydra.run.dir={run_dir}",
        ],
        cache_dir,
    )
    run_cli(command, timeout=300)
    (checkpoint,) = (run_dir / "checkpoints").glob("*.ckpt")
    assert torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"] == 2
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["train/loss"] > 0 and metrics["trainable_params"] > 0
    export = run_dir / "hf"
    assert json.loads((export / "mirage_export.json").read_text())["rmu_layer"] == 1
    assert (export / "rmu_control_vector.safetensors").is_file()

    add_config_dir(family_dir)  # the exported adapter reloads in this process too, with the same map
    try:
        model, _ = load_vlm(export)
        spec = family_of(model)
        lora = [n.removeprefix("base_model.model.") for n, _ in model.named_parameters() if ".lora_" in n]
    finally:
        remove_config_dir(family_dir)
    assert spec.name == FAMILY and type(unwrap_peft(model)).__name__ == "LlavaNextForConditionalGeneration"
    assert lora and {spec.component_of(n) for n in lora} == {"language_model"}
