"""``quantize``: the audited model reloaded at lower precision (Zhang et al. 2024, arXiv 2410.16454: 4-bit
quantization of unlearned LLMs brought forgotten knowledge back; 8-bit was mostly benign).

Variants: LLM.int8 (``int8``), 4-bit NF4 (``nf4``), both through bitsandbytes (which runs on CPU too; the
vision tower and projector stay in full precision, as in QLoRA), and bfloat16 (``bf16``; slow on CPU). Each
reloads the exported weights the given way and asks the usual cases.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mirage.probes.base import AuditTarget, Probe, ProbeVariant

# label -> (mirage-eval overrides, plot parameters)
PRECISIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "int8": (("+model.quantization.bits=8",), {"bits": 8}),
    "nf4": (("+model.quantization.bits=4", "+model.quantization.quant_type=nf4"), {"bits": 4}),
    "bf16": (("model.dtype=bfloat16",), {"bits": 16}),
}


class QuantizeProbe(Probe):
    name = "quantize"

    def __init__(self, precisions: Sequence[str] = ("int8", "nf4"), compute_dtype: str | None = None) -> None:
        unknown = sorted(set(precisions) - set(PRECISIONS))
        if unknown or not precisions:
            raise ValueError(
                f"probe quantize: precisions must be among {sorted(PRECISIONS)}, got {list(precisions)}"
            )
        self.precisions = list(dict.fromkeys(precisions))
        self.compute_dtype = compute_dtype

    def settings(self) -> dict[str, Any]:
        return {"precisions": self.precisions, "compute_dtype": self.compute_dtype}

    def variants(self, target: AuditTarget) -> list[ProbeVariant]:
        out = []
        for name in self.precisions:
            overrides, params = PRECISIONS[name]
            if self.compute_dtype and name == "nf4":  # the 4-bit layers' matmul dtype (fp32 by default)
                overrides = (*overrides, f"+model.quantization.compute_dtype={self.compute_dtype}")
            out.append(ProbeVariant(f"quantize/{name}", overrides, dict(params)))
        return out
