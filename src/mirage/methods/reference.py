"""The model before unlearning, three ways, chosen in config (``method/reference=...``).

- ``precompute``: one pass over the needed splits before training; per-sample answer NLLs
  (or RMU's layer-k states) are cached on disk under a key that hashes the model, the
  processor, the collator settings, the data files and the method's settings. A changed
  key recomputes; it never reuses.
- ``adapters_off``: under LoRA, the same model with its adapters disabled (no second copy).
- ``frozen_copy``: a frozen deep copy made before training, truncated after the last layer
  the method reads when it only needs hidden states.

All three answer the same two questions, so a method's loss does not depend on the choice:
``sequence_nll(method, batch, split, label_key)`` and ``layer_states(method, batch, split, layer)``.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from mirage.methods.losses import sequence_nll
from mirage.models.families import decoder_layers, family_of, unwrap_peft
from mirage.models.hooks import layer_hidden_states
from mirage.utils.hashing import file_hash, stable_hash

if TYPE_CHECKING:
    from mirage.methods.base import MethodModule

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReferenceNeed:
    """One quantity a method reads from the reference model on one split."""

    split: str
    kind: str  # "nll" or "states"
    label_key: str = "labels"  # nll: which tokens (answer "labels" or "prompt_labels")
    layer: int | None = None  # states: which decoder layer


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Evaluate deterministically (no dropout), then restore every module's own mode."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        for module, training in modes.items():
            module.training = training


def model_nll(
    model: nn.Module, inputs: dict[str, Any], labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed NLL of the labelled tokens, their count), per sequence."""
    return sequence_nll(model(**inputs).logits, labels)


class ReferenceStrategy:
    """Base: computes reference values live from ``self.reference_model(method)``."""

    name = "base"

    def attach(self, method: MethodModule, needs: list[ReferenceNeed]) -> None:
        """Called from the method's constructor, while the model is still the pretrained one."""
        self.needs = needs

    def prepare(self, method: MethodModule) -> None:
        """Called from the method's ``setup('fit')``, before any checkpoint is restored."""

    @contextmanager
    def reference_model(self, method: MethodModule) -> Iterator[nn.Module]:
        raise NotImplementedError
        yield

    def sequence_nll(
        self, method: MethodModule, batch: dict, split: str, label_key: str = "labels"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reference (summed NLL, token count) per sequence of ``batch`` (drawn from ``split``)."""
        with self.reference_model(method) as model:
            return model_nll(model, method.model_inputs(batch), batch[label_key])

    def layer_states(self, method: MethodModule, batch: dict, split: str, layer: int) -> torch.Tensor:
        """Reference hidden states ``[B, T, H]`` after decoder layer ``layer``."""
        with self.reference_model(method) as model:
            truncate = getattr(method, "truncate_passes", True)
            return layer_hidden_states(model, method.model_inputs(batch), layer, truncate=truncate)


class AdaptersOff(ReferenceStrategy):
    """The LoRA model with adapters disabled: the base model, for free."""

    name = "adapters_off"

    def attach(self, method: MethodModule, needs: list[ReferenceNeed]) -> None:
        super().attach(method, needs)
        if not hasattr(method.model, "disable_adapter"):
            raise ValueError("method.reference=adapters_off needs a LoRA model (finetune=lora or qlora)")

    @contextmanager
    def reference_model(self, method: MethodModule) -> Iterator[nn.Module]:
        with method.model.disable_adapter(), eval_mode(method.model) as model:
            yield model


class FrozenCopy(ReferenceStrategy):
    """A deep copy, frozen before training; cut after the deepest layer read when only states are needed."""

    name = "frozen_copy"

    def attach(self, method: MethodModule, needs: list[ReferenceNeed]) -> None:
        super().attach(method, needs)
        frozen = copy.deepcopy(method.model)
        for param in frozen.parameters():
            if param.requires_grad:
                param.requires_grad_(False)
        if needs and all(n.kind == "states" for n in needs) and getattr(method, "truncate_passes", True):
            keep = max(n.layer for n in needs if n.layer is not None) + 1
            _truncate_layers(frozen, keep)
        # Kept outside the LightningModule's children: it is not trained, not checkpointed, and moved by hand.
        self._frozen = [frozen.eval()]

    @contextmanager
    def reference_model(self, method: MethodModule) -> Iterator[nn.Module]:
        frozen = self._frozen[0]
        device = next(method.model.parameters()).device
        if next(frozen.parameters()).device != device:
            frozen.to(device)
        with eval_mode(frozen) as model:
            yield model


def _truncate_layers(model: nn.Module, keep: int) -> None:
    layers = decoder_layers(model)
    if keep < len(layers):
        parent_path, _, attr = family_of(model).decoder_layers.rpartition(".")
        parent = unwrap_peft(model).get_submodule(parent_path)
        setattr(parent, attr, nn.ModuleList(list(layers)[:keep]))


class Precompute(ReferenceStrategy):
    """One pass before training, cached on disk per sample; training then reads the cache only."""

    name = "precompute"

    def __init__(self, cache_dir: str | Path, dtype: str = "float32") -> None:
        self.cache_root = Path(cache_dir)
        self.states_dtype = getattr(torch, dtype)
        self._nll: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
        self.cache_dir: Path | None = None

    def attach(self, method: MethodModule, needs: list[ReferenceNeed]) -> None:
        super().attach(method, needs)
        # Live fallback used only to fill the cache: the model as it is before training.
        self._live = AdaptersOff() if hasattr(method.model, "disable_adapter") else _Untrained()

    def cache_key(self, method: MethodModule) -> dict[str, Any]:
        datamodule = method.trainer.datamodule
        model = unwrap_peft(method.model)
        key: dict[str, Any] = {
            "model": getattr(model.config, "_name_or_path", None),
            "model_config": model.config.to_dict(),
            "weights": _weights_fingerprint(getattr(model.config, "_name_or_path", None)),
            "processor": _processor_fingerprint(method.processor),
            "collator": {
                "max_length": datamodule.collate_train.max_length,
                "system_prompt": datamodule.collate_train.system_prompt,
            },
            "needs": [vars(n) for n in self.needs],
            "dtype": str(self.states_dtype),
            "data": {},
        }
        for split in sorted({n.split for n in self.needs}):
            sources = sorted(
                {s.meta.get("source") for s in datamodule.split(split).samples if s.meta.get("source")}
            )
            key["data"][split] = {src: file_hash(src) for src in sources if Path(src).is_file()}
        return key

    def prepare(self, method: MethodModule) -> None:
        key = self.cache_key(method)
        self.cache_dir = self.cache_root / stable_hash(key)[:16]
        trainer = method.trainer
        if trainer.is_global_zero:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            (self.cache_dir / "key.json").write_text(json.dumps(key, indent=1, default=str))
            for need in self.needs:
                self._fill(method, need)
        trainer.strategy.barrier("mirage-reference-cache")
        for need in self.needs:
            if need.kind == "nll":
                self._nll[(need.split, need.label_key)] = load_file(self._nll_path(need))

    def _nll_path(self, need: ReferenceNeed) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / f"{need.split}.{need.label_key}.nll.safetensors"

    def _states_dir(self, need: ReferenceNeed) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / f"{need.split}.layer{need.layer}.states"

    def _fill(self, method: MethodModule, need: ReferenceNeed) -> None:
        from rich.progress import track

        datamodule = method.trainer.datamodule
        loader = torch.utils.data.DataLoader(
            datamodule.split(need.split),
            batch_size=datamodule.eval_batch_size,
            shuffle=False,
            collate_fn=datamodule.collate_train,
        )
        device = method.trainer.strategy.root_device
        original_device = next(method.model.parameters()).device
        method.model.to(device)
        try:
            if need.kind == "nll":
                path = self._nll_path(need)
                cached = load_file(path) if path.is_file() else {}
                todo = [b for b in loader if any(k not in cached for k in b["sample_keys"])]
                for batch in track(todo, description=f"reference NLL on {need.split}", disable=not todo):
                    nll, count = self._live.sequence_nll(
                        method, _to(batch, device), need.split, need.label_key
                    )
                    for i, sample in enumerate(batch["sample_keys"]):
                        cached[sample] = torch.stack([nll[i], count[i].to(nll.dtype)]).float().cpu()
                if todo:  # a complete cache is left untouched
                    save_file(cached, path)
            else:
                folder = self._states_dir(need)
                folder.mkdir(exist_ok=True)
                todo = [
                    b
                    for b in loader
                    if any(not (folder / f"{k}.safetensors").is_file() for k in b["sample_keys"])
                ]
                for batch in track(
                    todo, description=f"reference layer-{need.layer} states on {need.split}", disable=not todo
                ):
                    states = self._live.layer_states(method, _to(batch, device), need.split, need.layer)
                    for i, sample in enumerate(batch["sample_keys"]):
                        n = int(batch["attention_mask"][i].sum())  # right padding: the first n positions
                        save_file(
                            {"states": states[i, :n].to(self.states_dtype).contiguous().cpu()},
                            folder / f"{sample}.safetensors",
                        )
        finally:
            method.model.to(original_device)

    def sequence_nll(
        self, method: MethodModule, batch: dict, split: str, label_key: str = "labels"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        table = self._nll[(split, label_key)]
        try:
            rows = torch.stack([table[k] for k in batch["sample_keys"]])
        except KeyError as err:
            raise KeyError(
                f"sample {err} is not in the reference cache {self.cache_dir}; delete it to rebuild"
            ) from None
        device = batch["input_ids"].device
        return rows[:, 0].to(device), rows[:, 1].to(device)

    def layer_states(self, method: MethodModule, batch: dict, split: str, layer: int) -> torch.Tensor:
        folder = self._states_dir(ReferenceNeed(split, "states", layer=layer))
        mask = batch["attention_mask"]
        out = None
        for i, sample in enumerate(batch["sample_keys"]):
            states = load_file(folder / f"{sample}.safetensors")["states"]
            if out is None:
                out = torch.zeros(mask.shape[0], mask.shape[1], states.shape[-1], dtype=torch.float32)
            out[i, : states.shape[0]] = states.float()
        assert out is not None
        return out.to(mask.device)


class _Untrained(ReferenceStrategy):
    """The method's own model, read before training starts (used by Precompute to fill its cache)."""

    @contextmanager
    def reference_model(self, method: MethodModule) -> Iterator[nn.Module]:
        with eval_mode(method.model) as model:
            yield model


def _to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _weights_fingerprint(name_or_path: str | None) -> Any:
    """Sizes and modification times of local weight files (a hub name stands for itself)."""
    if not name_or_path or not Path(name_or_path).is_dir():
        return name_or_path
    files = sorted(Path(name_or_path).glob("*.safetensors")) + sorted(Path(name_or_path).glob("*.bin"))
    return [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files]


def _processor_fingerprint(processor: Any) -> Any:
    if processor is None:
        return None
    tokenizer = getattr(processor, "tokenizer", processor)
    return {
        "class": type(processor).__name__,
        "chat_template": getattr(processor, "chat_template", None),
        "vocab": stable_hash(sorted(tokenizer.get_vocab().items())),
        "image_processor": getattr(getattr(processor, "image_processor", None), "to_dict", lambda: None)(),
    }
