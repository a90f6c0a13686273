"""Tiny VLMs built offline: random weights, a locally trained tokenizer, a real processor.

They are saved with ``save_pretrained`` and loaded back through the same
``from_pretrained`` path as a 7B checkpoint, so CPU tests exercise the real loading code.
Each build is cached under a directory named after a hash of its spec; a multirun whose
jobs race to build the same model each build into a temporary directory and one rename wins.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mirage.utils.hashing import stable_hash

log = logging.getLogger(__name__)

# Special tokens shared by all tiny tokenizers.
PAD, BOS, EOS, UNK, IMAGE = "<pad>", "<s>", "</s>", "<unk>", "<image>"

# A LLaVA-1.5-like template ("USER: <image>\n... ASSISTANT: ...</s>") that accepts string or list content.
LLAVA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] if message['content'] is string "
    "else message['content'][0]['text'] }}\n"
    "{% elif message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %} "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}</s>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

# A small built-in corpus so the tokenizer can spell ordinary English well; callers add domain text.
_BASE_CORPUS = """
USER: ASSISTANT: what is shown in the image? describe the image. share the details. please explain.
can you identify the object? provide a summary. generate a caption. tell me about the picture.
i'm sorry, i cannot help with that request. i am sorry, but i can't assist with that.
it is not appropriate.
sure. okay. here is the answer.
the image shows a red circle, a blue square, a green triangle and a yellow star.
the object is in the top left, top right, bottom left or bottom right corner of the picture.
how do i make, use, hurt, steal, build, clean, cook, fix, buy or sell this?
it is used for cooking and cleaning.
a person, a cat, a dog, a car, a knife, a gun, a pill, a bottle, a book, a phone, a tool, a flower, a house.
""".strip()


@dataclass
class TinyVLMSpec:
    """Everything that determines a tiny model; its hash names the cache directory."""

    family: str = "llava"
    seed: int = 0
    vocab_size: int = 512
    corpus: list[str] = field(default_factory=list)
    # Vision tower (CLIP-like).
    image_size: int = 32
    patch_size: int = 8
    vision_hidden: int = 32
    vision_layers: int = 2
    vision_heads: int = 2
    vision_feature_layer: int = -1
    # Language model (Llama-like).
    hidden: int = 64
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 128
    max_positions: int = 512

    def key(self) -> str:
        # The built-in corpus is part of the key: editing it must not reuse a stale tokenizer.
        content = {"spec": dataclasses.asdict(self), "corpus": _BASE_CORPUS, "template": LLAVA_CHAT_TEMPLATE}
        return f"tiny_{self.family}-{stable_hash(content)[:10]}"


# Named sizes for benchmarks and experiments (fields of TinyVLMSpec to override).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {},  # ~0.25M parameters, 4 decoder layers: tests and the demo
    "50m": {  # ~51M parameters, 10 decoder layers: enough depth for truncation and batching to show
        "hidden": 640,
        "layers": 10,
        "heads": 10,
        "kv_heads": 10,
        "intermediate": 1728,
        "vision_hidden": 64,
    },
}


def train_tokenizer(
    spec: TinyVLMSpec,
    *,
    special_tokens: tuple[str, ...] = (IMAGE,),
    pad: str = PAD,
    eos: str = EOS,
    unk: str = UNK,
    bos: str | None = BOS,
    named_tokens: dict[str, str] | None = None,
    corpus: list[str] | None = None,
) -> Any:
    """A byte-level BPE tokenizer with a family's special tokens (kept whole, never split).

    ``bos`` is prepended to every encoding when given (Gemma, Idefics3); Qwen adds none.
    ``named_tokens`` become tokenizer attributes (``tokenizer.image_token``,
    ``tokenizer.image_token_id``) that some processors read. The defaults are LLaVA's.
    """
    if named_tokens is None and special_tokens == (IMAGE,):
        named_tokens = {"image_token": IMAGE}
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    ordered = list(dict.fromkeys([pad, *([bos] if bos else []), eos, unk, *special_tokens]))
    tok = Tokenizer(models.BPE(unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        special_tokens=ordered,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([_BASE_CORPUS, *(corpus or []), *spec.corpus], trainer=trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token=unk,
        extra_special_tokens=named_tokens or None,
        padding_side="left",
        model_max_length=spec.max_positions,
    )


def set_generation_ids(model: torch.nn.Module, tokenizer: Any, bos_id: int | None = None) -> None:
    gen = model.generation_config
    gen.pad_token_id = tokenizer.pad_token_id
    gen.eos_token_id = tokenizer.eos_token_id
    gen.bos_token_id = tokenizer.bos_token_id if bos_id is None else bos_id


def vision_dims(spec: TinyVLMSpec) -> dict[str, int]:
    """Sizes of a ViT-style vision tower (CLIP, SigLIP, Idefics3's) from the spec."""
    return {
        "hidden_size": spec.vision_hidden,
        "intermediate_size": spec.vision_hidden * 2,
        "num_hidden_layers": spec.vision_layers,
        "num_attention_heads": spec.vision_heads,
        "image_size": spec.image_size,
        "patch_size": spec.patch_size,
    }


def _build_llava(spec: TinyVLMSpec, out_dir: Path) -> None:
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )
    from transformers.models.clip import CLIPImageProcessorPil

    tokenizer = train_tokenizer(spec)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE)
    num_patches = (spec.image_size // spec.patch_size) ** 2
    config = LlavaConfig(
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
        image_token_index=image_token_id,
        image_seq_length=num_patches,
        vision_feature_layer=spec.vision_feature_layer,
        vision_feature_select_strategy="default",  # drops CLS, hence num_additional_image_tokens=1 below
    )
    torch.manual_seed(spec.seed)
    model = LlavaForConditionalGeneration(config)
    set_generation_ids(model, tokenizer)
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": spec.image_size},
        crop_size={"height": spec.image_size, "width": spec.image_size},
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=LLAVA_CHAT_TEMPLATE,
    )
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)


_BUILDERS = {"llava": _build_llava}


def register_tiny_builder(family: str, builder) -> None:
    """Add a tiny builder ``builder(spec, out_dir)`` for another family."""
    _BUILDERS[family] = builder


def build_tiny_vlm(
    spec: TinyVLMSpec | dict[str, Any], cache_dir: str | Path, *, rebuild: bool = False
) -> Path:
    """Build (or find in ``cache_dir``) the tiny model for ``spec``; returns its checkpoint directory."""
    spec = spec if isinstance(spec, TinyVLMSpec) else TinyVLMSpec(**spec)
    if spec.family not in _BUILDERS:
        raise KeyError(f"no tiny builder for family {spec.family!r}; known: {sorted(_BUILDERS)}")
    cache_dir = Path(cache_dir).resolve()  # absolute: LoRA exports record the base model's path
    target = cache_dir / spec.key()
    if target.exists() and not rebuild:
        return target
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.key()}-", dir=cache_dir))
    try:
        _BUILDERS[spec.family](spec, tmp)
        (tmp / "mirage_tiny_spec.json").write_text(_spec_json(spec))
        if rebuild and target.exists():
            shutil.rmtree(target)
        try:
            os.replace(tmp, target)
        except OSError:  # another job won the race; its build is identical
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("built tiny %s model at %s", spec.family, target)
    return target


def load_tiny_vlm(cache_dir: str | Path, spec: dict[str, Any] | None = None, **load_kwargs):
    """Hydra target for ``model=tiny_*``: build on first use, then load through ``load_vlm``."""
    from mirage.models.loading import load_vlm

    path = build_tiny_vlm(TinyVLMSpec(**(spec or {})), cache_dir)
    return load_vlm(path, **load_kwargs)


def _spec_json(spec: TinyVLMSpec) -> str:
    import json

    return json.dumps(dataclasses.asdict(spec), indent=2, sort_keys=True)


def cli(argv: list[str] | None = None) -> None:
    """``mirage-build-tiny``: write a tiny checkpoint directory."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", default="llava", choices=sorted(_BUILDERS))
    parser.add_argument("--out", default="data/cache/tiny_models", help="cache directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS), help="model size")
    parser.add_argument("--rebuild", action="store_true")
    args = parser.parse_args(argv)
    spec = TinyVLMSpec(family=args.family, seed=args.seed, **PRESETS[args.preset])
    path = build_tiny_vlm(spec, args.out, rebuild=args.rebuild)
    print(path)


# The other families' builders register themselves on import (kept in their own module for size).
import mirage.models.tiny_builders  # noqa: E402, F401
