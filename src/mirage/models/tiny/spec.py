"""What determines a tiny VLM (its spec and hash), and the pieces every family's tiny builder shares.

A builder (``configs/family/<name>.yaml``, ``tiny_builders``) is a function ``builder(spec, out_dir)`` that
writes a checkpoint with ``save_pretrained``: random weights seeded by ``spec.seed``, a tokenizer trained
here (:func:`train_tokenizer`) with the family's special tokens, the family's PIL image processor and a
chat template that accepts ``content`` as a string or as ``{"type": "image"}`` / ``{"type": "text"}`` parts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from mirage.utils.hashing import stable_hash

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

    family: str = "llava"  # a model type with a tiny builder in some configs/family/<name>.yaml
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
        # The built-in corpus is part of the key: editing it must not reuse a stale tokenizer. (The LLaVA
        # template is in every family's key since the key exists; dropping it would rename every cache.)
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


def head_dim(spec: TinyVLMSpec) -> int:
    """Width of one attention head of the language model."""
    if spec.hidden % spec.heads:
        raise ValueError(f"hidden={spec.hidden} is not a multiple of heads={spec.heads}")
    return spec.hidden // spec.heads
