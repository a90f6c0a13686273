"""The quantize probe: its variants reload the model at 8 and 4 bits, and a 4-bit reload moves every weight
by no more than NF4's rounding (and the 8-bit absmax of double quantisation) allows."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from mirage.models.loading import load_vlm
from mirage.probes.base import AuditTarget
from mirage.probes.quantize import QuantizeProbe

# The 16 NF4 levels (QLoRA, Dettmers et al. 2023): a weight is rounded to the nearest level times its
# block's absolute maximum, so it moves by at most half the widest gap between neighbouring levels.
NF4_LEVELS = [-1.0, -0.6962, -0.5251, -0.3949, -0.2844, -0.1848, -0.0911, 0.0,
              0.0796, 0.1609, 0.2461, 0.3379, 0.4407, 0.5626, 0.7230, 1.0]  # fmt: skip
HALF_WIDEST_GAP = max(b - a for a, b in itertools.pairwise(NF4_LEVELS)) / 2
# Double quantisation stores each block's absmax in 8 bits too: it may be off by up to ~1/64 of itself.
ABSMAX_ERROR = 1 / 64


def test_variants_are_eval_overrides():
    target = AuditTarget("m", Path("/m/hf"), Path("/w"))
    labels = {v.label: v for v in QuantizeProbe(["int8", "nf4", "bf16"]).variants(target)}
    assert labels["quantize/nf4"].overrides == (
        "+model.quantization.bits=4",
        "+model.quantization.quant_type=nf4",
    )
    assert labels["quantize/int8"].params == {"bits": 8}
    assert labels["quantize/bf16"].overrides == ("model.dtype=bfloat16",)
    on_gpu = {v.label: v for v in QuantizeProbe(["int8", "nf4"], compute_dtype="bfloat16").variants(target)}
    assert on_gpu["quantize/nf4"].overrides[-1] == "+model.quantization.compute_dtype=bfloat16"
    assert on_gpu["quantize/int8"].overrides == ("+model.quantization.bits=8",)
    with pytest.raises(ValueError, match="precisions must be among"):
        QuantizeProbe(["int3"])


def test_a_4bit_reload_moves_weights_within_the_nf4_rounding(tiny_llava_dir):
    import bitsandbytes as bnb
    import bitsandbytes.functional as F

    full, _ = load_vlm(tiny_llava_dir)
    quantized, _ = load_vlm(tiny_llava_dir, quantization={"bits": 4, "quant_type": "nf4"})
    originals = dict(full.named_parameters())
    checked = 0
    for name, module in quantized.named_modules():
        if not isinstance(module, bnb.nn.Linear4bit):
            continue
        weight = module.weight
        restored = F.dequantize_4bit(weight.data, weight.quant_state).float()
        original = originals[f"{name}.weight"].detach()
        assert restored.shape == original.shape
        blocksize = weight.quant_state.blocksize
        blocks = original.flatten()
        moved = (restored.flatten() - blocks).abs()
        pad = (-len(blocks)) % blocksize
        absmax = torch.nn.functional.pad(blocks.abs(), (0, pad)).view(-1, blocksize).amax(1)
        bound = ((HALF_WIDEST_GAP + ABSMAX_ERROR) * absmax).repeat_interleave(blocksize)[: len(blocks)]
        assert (moved <= bound).all(), f"{name}: moved {float((moved - bound).max()):.2e} past NF4's rounding"
        assert moved.max() > 0  # quantization did change the weights
        checked += 1
    assert checked >= 4 * 7  # every projection of the 4 decoder layers (the vision side stays full precision)
