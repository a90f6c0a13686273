"""The synthetic world's sizes and seed: everything its files depend on (its hash names the cache folder)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SyntheticSpec:
    """Sizes and seed of the synthetic world (its hash names the cache folder)."""

    seed: int = 0
    n_train: int = 96  # safety-training images (VLGuard train: 2,000)
    n_test: int = 48  # test images (VLGuard test: 1,000)
    n_base: int = 256  # base-model (general instruction) samples
    image_size: int = 32
    # How often base.json refuses a request with harmful *wording* (hurt, make, steal): the text-only
    # alignment of the LLM under LLaVA, blind to harm shown in the image (the paper's base model refuses
    # about a third of VLGuard's unsafe questions). It also teaches the refusal wording before safety SFT.
    base_refusal_rate: float = 0.25
    # retain.json = the safe images' safe questions, topped up with general_safe.json to this multiple of
    # their number (the paper: 977 VLGuard records topped up to 2,000 with LLaVA-665K).
    retain_topup: float = 2.0
    # Which objects (vocabulary.WORLDS): "objects8", 4 harmful objects of 8, harm plain to see; "kinds6", 64
    # kinds, harm only partly told by the shape (evidence 6 of 8), so the image alone does not give it away.
    world: str = "objects8"
    version: int = 9  # bump when the generator's output changes (9: worlds, facts by shape, named objects)
