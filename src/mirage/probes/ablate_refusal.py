"""``ablate_refusal``: remove the refusal direction from the audited model (Arditi et al. 2024, arXiv
2406.11717: refusal is mediated by one direction of the residual stream; ablating it makes aligned chat
models answer harmful requests).

The direction is the difference of means of the last prompt token's residual activations between harmful and
harmless prompts (``mirage.analysis.refusal``), at a given layer or at the candidate layer whose ablation
lowers the refusal rate on held-out harmful prompts most. The prompts come from a reader of the audited
data (by default the synthetic world's train split; the audit asks the test split), split by subset and
shuffled with the audit's seed: the first ``held_out_prompts`` of each kind choose the layer, the next
``fit_prompts`` give the direction. Two variants:

- ``ablate_refusal/hook``: the direction ablated at every layer and position during generation
  (``steering=ablate_refusal``, a forward hook);
- ``ablate_refusal/weights``: the model with every residual-stream writer orthogonalised against it
  (``mirage.analysis.orthogonalize``), saved with ``save_pretrained`` (a LoRA export is merged first) and
  evaluated as ``model=checkpoint``.

The direction, the layer choice (``selection.json``) and the export are written under
``<target.work_dir>/ablate_refusal/<key>/``, keyed by the probe's settings, the audited weights, the seed and
the prompts themselves, and reused when there.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from mirage.data.records import Sample
from mirage.evaluation.judges.base import Judge, image_fingerprint
from mirage.probes.base import AuditTarget, Probe, ProbeVariant, override_value
from mirage.utils.hashing import build_once, stable_hash

log = logging.getLogger(__name__)
MODES = ("hook", "weights")
DIRECTION_FILE, SELECTION_FILE, EXPORT_DIR = "direction.safetensors", "selection.json", "export"


class AblateRefusalProbe(Probe):
    name = "ablate_refusal"

    def __init__(
        self,
        prompts: Callable[[], list[Sample]],
        harmful_subsets: Sequence[str] = ("unsafes", "safe_unsafes"),
        harmless_subsets: Sequence[str] = ("safe_safes",),
        fit_prompts: int = 128,
        held_out_prompts: int = 32,
        layer: int | None = None,
        candidates: Sequence[int] | None = None,
        max_new_tokens: int = 32,
        batch_size: int = 16,
        judge: Judge | None = None,
        modes: Sequence[str] = MODES,
        dtype: str = "float32",
        device: str = "auto",
    ) -> None:
        if not callable(prompts):
            raise TypeError("probe ablate_refusal: prompts must be a reader (a partial, `_partial_: true`)")
        self.modes = list(dict.fromkeys(modes))
        if not self.modes or set(self.modes) - set(MODES):
            raise ValueError(f"probe ablate_refusal: modes must be among {list(MODES)}, got {list(modes)}")
        if set(harmful_subsets) & set(harmless_subsets) or not harmful_subsets or not harmless_subsets:
            raise ValueError(
                "probe ablate_refusal: harmful_subsets and harmless_subsets must be non-empty and disjoint, "
                f"got {list(harmful_subsets)} and {list(harmless_subsets)}"
            )
        for key, value in {"fit_prompts": fit_prompts, "max_new_tokens": max_new_tokens}.items():
            if int(value) <= 0:
                raise ValueError(f"probe ablate_refusal: {key} must be positive, got {value}")
        if int(batch_size) <= 0 or int(held_out_prompts) < 0:
            raise ValueError("probe ablate_refusal: batch_size must be positive and held_out_prompts >= 0")
        if layer is None and int(held_out_prompts) == 0 and len(candidates or (0, 1)) > 1:
            raise ValueError(
                "probe ablate_refusal: choosing the layer (layer: null) needs held_out_prompts > 0"
            )
        self.prompts = prompts
        self.harmful_subsets, self.harmless_subsets = list(harmful_subsets), list(harmless_subsets)
        self.fit_prompts, self.held_out_prompts = int(fit_prompts), int(held_out_prompts)
        self.layer = None if layer is None else int(layer)
        self.candidates = None if candidates is None else [int(c) for c in candidates]
        self.max_new_tokens, self.batch_size = int(max_new_tokens), int(batch_size)
        self.judge = judge
        self.dtype, self.device = str(dtype), str(device)

    def settings(self) -> dict[str, Any]:
        settings = {k: v for k, v in vars(self).items() if k not in ("prompts", "judge")}
        settings["judge"] = self.judge.key if self.judge is not None else "keyword-default"
        return settings

    def _source(self) -> str:
        """The file the prompts come from, for messages (a reader partial's ``path``)."""
        args, keywords = getattr(self.prompts, "args", ()), getattr(self.prompts, "keywords", {})
        return str(keywords.get("path", args[0] if args else "the prompt reader"))

    def split(self, seed: int) -> dict[str, list[Sample]]:
        """``fit_harmful``, ``fit_harmless``, ``held_out_harmful``, ``held_out_harmless``: the reader's
        prompts by subset, each kind shuffled with ``seed``; prompts are held out only to choose the layer."""
        samples = self.prompts()
        out: dict[str, list[Sample]] = {}
        choose = self.layer is None and len(self.candidates or (0, 1)) > 1
        for kind, subsets in (("harmful", self.harmful_subsets), ("harmless", self.harmless_subsets)):
            pool = [s for s in samples if s.meta.get("subset") in subsets]
            random.Random(f"{seed}-{kind}").shuffle(pool)
            held = self.held_out_prompts if choose else 0
            out[f"held_out_{kind}"], out[f"fit_{kind}"] = pool[:held], pool[held : held + self.fit_prompts]
            if not pool:
                raise ValueError(
                    f"probe ablate_refusal: {self._source()} has no {kind} prompts: no meta['subset']"
                    f" is in {subsets} (the reader must tag subsets, as read_vlguard does)"
                )
            if not out[f"fit_{kind}"]:
                raise ValueError(
                    f"probe ablate_refusal: {self._source()} has {len(pool)} {kind} prompts (subsets "
                    f"{subsets}); {held} are held out to choose the layer, none are left for the direction"
                )
        return out

    def cache_dir(self, target: AuditTarget, splits: dict[str, list[Sample]]) -> Path:
        prompts = {
            name: [(s.id, s.question, s.meta.get("subset"), image_fingerprint(s.image)) for s in samples]
            for name, samples in splits.items()
        }
        key = stable_hash(
            {
                "settings": self.settings(),
                "model_dir": str(target.model_dir),
                "weights": _weights_fingerprint(target.model_dir),
                "prompts": prompts,
            }
        )
        return target.work_dir / self.name / key[:16]

    def variants(self, target: AuditTarget) -> list[ProbeVariant]:
        splits = self.split(target.seed)
        folder = build_once(
            self.cache_dir(target, splits), SELECTION_FILE, lambda tmp: self.build(target, splits, tmp)
        )
        selection = json.loads((folder / SELECTION_FILE).read_text())
        params = {"layer": selection["layer"]}
        out = []
        if "hook" in self.modes:
            overrides = (
                "steering=ablate_refusal",
                f"steering.direction_path={override_value(str(folder / DIRECTION_FILE))}",
            )
            out.append(ProbeVariant(f"{self.name}/hook", overrides, {**params, "ablation": "hook"}))
        if "weights" in self.modes:
            overrides = ("model=checkpoint", f"model.name_or_path={override_value(str(folder / EXPORT_DIR))}")
            out.append(ProbeVariant(f"{self.name}/weights", overrides, {**params, "ablation": "weights"}))
        return out

    def build(self, target: AuditTarget, splits: dict[str, list[Sample]], out: Path) -> None:
        """Compute the direction (and the export) of ``target`` into the folder ``out``."""
        import torch

        from mirage.analysis.orthogonalize import export_orthogonalized
        from mirage.analysis.refusal import find_refusal_direction
        from mirage.evaluation.generation import GenerationConfig
        from mirage.models.loading import load_vlm

        start = time.perf_counter()
        model, processor = load_vlm(target.model_dir, dtype=self.dtype)
        device = ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device
        model.to(device)
        found = find_refusal_direction(
            model,
            processor,
            splits["fit_harmful"],
            splits["fit_harmless"],
            layer=self.layer,
            candidates=self.candidates,
            held_out_harmful=splits["held_out_harmful"],
            held_out_harmless=splits["held_out_harmless"],
            judge=self.judge,
            generation=GenerationConfig(max_new_tokens=self.max_new_tokens, batch_size=self.batch_size),
            batch_size=self.batch_size,
        )
        found.save(out / DIRECTION_FILE)
        seconds_direction = time.perf_counter() - start
        if "weights" in self.modes:
            export_orthogonalized(model, processor, found.direction.to(device), out / EXPORT_DIR)
        selection = {
            "model_dir": str(target.model_dir),
            "layer": found.layer,
            "direction_norm": float(found.direction.norm()),
            "baseline_refusal": found.baseline_refusal,
            "candidates": found.candidates,
            "prompts": {name: len(samples) for name, samples in splits.items()},
            "source": self._source(),
            "seconds": {"direction": seconds_direction, "total": time.perf_counter() - start},
            "settings": self.settings(),
        }
        (out / SELECTION_FILE).write_text(json.dumps(selection, indent=2, default=str))
        log.info("ablate_refusal %s: layer %d (%s)", target.name, found.layer, out)


def _weights_fingerprint(model_dir: Path) -> list[tuple[str, int, int]]:
    """Names, sizes and times of the weight files (a LoRA export's base model is named in its config)."""
    files = sorted(p for p in Path(model_dir).iterdir() if p.suffix in (".safetensors", ".bin", ".json"))
    return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
