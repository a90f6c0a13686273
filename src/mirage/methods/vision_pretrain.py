"""Vision pre-training: teach a fresh vision tower to see, with classification heads on its patch features.

LLaVA starts from a CLIP that already sees; a tiny model built from random weights does not, and
its language model cannot learn to read images through a blind tower in minutes. This method
trains only the vision tower (plus throw-away linear heads) to predict labels stored in each
sample's metadata, e.g. the synthetic world's object and quadrant (``meta['truth']``). The
exported model is the VLM with the trained tower; the heads are not part of it.

The heads read the flattened patch features of the layer LLaVA feeds to its projector, so every
patch token must carry what it shows (mean pooling would let one summary token do all the work).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from mirage.methods.base import MethodModule
from mirage.models.families import family_of, get_submodule


class VisionPretrain(MethodModule):
    def __init__(
        self,
        *args: Any,
        targets: dict[str, list[str]],
        split: str = "base",
        label_field: str = "truth",
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if not targets:
            raise ValueError("vision_pretrain needs at least one target: {meta key: [class names]}")
        self.split = split
        self.train_splits = (split,)
        self.label_field = label_field
        self.targets = {name: list(classes) for name, classes in targets.items()}
        self._tower_path = family_of(self.model).vision_tower[0]
        config = self.model.config
        self.feature_layer = getattr(config, "vision_feature_layer", -1)
        self.drop_cls = getattr(config, "vision_feature_select_strategy", "default") == "default"
        vision = config.vision_config
        with torch.no_grad():  # the feature size, from one blank image
            blank = torch.zeros(1, 3, vision.image_size, vision.image_size)
            width = self._features(blank).shape[-1]
        self.heads = nn.ModuleDict({name: nn.Linear(width, len(cls)) for name, cls in self.targets.items()})

    @property
    def tower(self) -> nn.Module:
        # Looked up, not stored: a second attribute would register the tower twice in the state dict.
        return get_submodule(self.model, self._tower_path)

    def _features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if not isinstance(self.feature_layer, int):
            raise TypeError("vision_pretrain supports one vision_feature_layer, not a list")
        out = self.tower(pixel_values.to(self.tower.dtype), output_hidden_states=True)
        states = out.hidden_states[self.feature_layer]
        if self.drop_cls:
            states = states[:, 1:]
        return states.flatten(1)

    def labels(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Class indices of every target, read from ``meta[label_field]``; unknown labels are errors."""
        out = {}
        for name, classes in self.targets.items():
            indices = []
            for sample_id, meta in zip(batch["sample_ids"], batch["sample_meta"], strict=True):
                value = (meta.get(self.label_field) or {}).get(name)
                if value not in classes:
                    raise ValueError(
                        f"{meta.get('source', '?')}: record {meta.get('index')} (id {sample_id!r}) field "
                        f"{self.label_field}.{name} = {value!r} is not one of {classes}"
                    )
                indices.append(classes.index(value))
            out[name] = torch.tensor(indices, device=self.device)
        return out

    def compute_loss(self, batch: dict[str, dict[str, Any]]) -> dict[str, torch.Tensor]:
        part = batch[self.split]
        features = self._features(part["pixel_values"])
        terms: dict[str, torch.Tensor] = {}
        total = features.new_zeros(())
        for name, target in self.labels(part).items():
            logits = self.heads[name](features)
            loss = F.cross_entropy(logits, target)
            total = total + loss
            terms[f"{name}_loss"] = loss.detach()
            terms[f"{name}_acc"] = (logits.argmax(-1) == target).float().mean()
        return {"loss": total, **terms}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        features = self._features(batch["pixel_values"])
        for name, target in self.labels(batch).items():
            acc = (self.heads[name](features).argmax(-1) == target).float().mean()
            self.log(f"val/{name}_acc", acc, batch_size=len(target), sync_dist=True)
        return acc
