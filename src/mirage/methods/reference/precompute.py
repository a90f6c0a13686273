"""The ``precompute`` reference: one pass before training, then cache reads only.

Every cached row is keyed by the content it scores: a hash of the row's unpadded input ids, its label
row (for NLLs) and its image's pixels (the collator's ``image_keys``). So the cache serves any view of
any split (a forget answer, its alternate refusal, a retain answer), a row is found again whatever
batch it lands in, and changed content is computed afresh: it can never be served another row's value.
The folder holding the rows is keyed by what the values also depend on: the model (name, config,
weight files), the processor, the collator settings and the storage dtype.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from mirage.data.collate import batch_view
from mirage.methods.reference.live import AdaptersOff, ReferenceNeed, ReferenceStrategy, Untrained
from mirage.models.families import unwrap_peft
from mirage.utils.hashing import stable_hash
from mirage.utils.locks import claimed

if TYPE_CHECKING:
    from mirage.methods.base import MethodModule

log = logging.getLogger(__name__)


def row_keys(batch: dict[str, Any], label_key: str | None) -> list[str]:
    """One content key per row of a collated batch (or view): its unpadded input ids, its ``label_key``
    row (``None`` for hidden states, which do not depend on labels) and its image's pixel hash."""
    if "image_keys" not in batch:
        raise KeyError("the batch has no 'image_keys': reference rows are keyed by batches of VLMCollator")
    ids, mask = batch["input_ids"], batch["attention_mask"].bool()
    labels = batch[label_key] if label_key is not None else None
    keys = []
    for row in range(ids.shape[0]):
        digest = hashlib.sha256(
            json.dumps(["nll" if labels is not None else "states", batch["image_keys"][row]]).encode()
        )
        for tensor in (ids, labels):
            if tensor is not None:
                values = tensor[row][mask[row]].to(torch.int64).cpu().contiguous()
                digest.update(f"|{values.numel()}|".encode())
                digest.update(values.numpy().tobytes())
        keys.append(digest.hexdigest()[:32])
    return keys


class Precompute(ReferenceStrategy):
    """One pass before training, cached on disk per content row; training then reads the cache only."""

    name = "precompute"

    def __init__(self, cache_dir: str | Path, dtype: str = "float32") -> None:
        self.cache_root = Path(cache_dir)
        self.states_dtype = getattr(torch, dtype)
        self._nll: dict[str, torch.Tensor] = {}
        self.cache_dir: Path | None = None
        # Rows the last pass computed and found cached (logged, and read by tests).
        self.computed, self.reused = 0, 0

    def attach(self, method: MethodModule, needs: list[ReferenceNeed]) -> None:
        super().attach(method, needs)
        # Live fallback used only to fill the cache: the model as it is before training.
        self._live = AdaptersOff() if hasattr(method.model, "disable_adapter") else Untrained()

    def cache_key(self, method: MethodModule) -> dict[str, Any]:
        """What a cached value depends on besides the content of its row."""
        collator = method.trainer.datamodule.collate_train
        model = unwrap_peft(method.model)
        return {
            "model": getattr(model.config, "_name_or_path", None),
            "model_config": model.config.to_dict(),
            "weights": _weights_fingerprint(getattr(model.config, "_name_or_path", None)),
            "processor": _processor_fingerprint(method.processor),
            "collator": {"max_length": collator.max_length, "system_prompt": collator.system_prompt},
            "dtype": str(self.states_dtype),
            "rows": "content-v2",  # rows keyed by content (row_keys); v1 keyed them by sample and split
        }

    def prepare(self, method: MethodModule) -> None:
        key = self.cache_key(method)
        self.cache_dir = self.cache_root / stable_hash(key)[:16]
        trainer = method.trainer
        if trainer.is_global_zero:
            # Two runs on one cache: the second waits, then finds every row it needs and scores none.
            with claimed(self.cache_dir, "reference cache"):
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                tmp = self.cache_dir / f".key.json.{os.getpid()}.tmp"
                tmp.write_text(json.dumps(key, indent=1, default=str))
                os.replace(tmp, self.cache_dir / "key.json")
                self._fill(method)
        trainer.strategy.barrier("mirage-reference-cache")
        self._nll = self._load_nll()

    def _load_nll(self) -> dict[str, torch.Tensor]:
        # Each pass adds its new rows as a shard of its own: concurrent runs never overwrite each other's.
        table: dict[str, torch.Tensor] = {}
        for shard in sorted(self._nll_dir().glob("*.safetensors")):
            table.update(load_file(shard))
        return table

    def _nll_dir(self) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / "nll"

    def _states_dir(self, layer: int | None) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / f"states.layer{layer}"

    def _fill(self, method: MethodModule) -> None:
        from rich.progress import track

        datamodule = method.trainer.datamodule
        device = method.trainer.strategy.root_device
        original_device = next(method.model.parameters()).device
        cached, new = self._load_nll(), {}
        self.computed, self.reused = 0, 0
        method.model.to(device)
        try:
            # One pass per split fills every need (view, tokens, layer) declared on it.
            for split in dict.fromkeys(n.split for n in self.needs):
                needs = [n for n in self.needs if n.split == split]
                loader = torch.utils.data.DataLoader(
                    datamodule.split(split),
                    batch_size=datamodule.eval_batch_size,
                    shuffle=False,
                    collate_fn=datamodule.collate_train,
                )
                for batch in track(loader, description=f"reference pass on {split}", transient=True):
                    for need in needs:
                        view = batch_view(batch, need.view)
                        if need.kind == "nll":
                            self._fill_nll(method, view, need, device, cached, new)
                        else:
                            self._fill_states(method, view, need, device)
        finally:
            method.model.to(original_device)
        if new:
            digest = stable_hash(sorted(new))[:16]
            _save_atomic(new, self._nll_dir() / f"{digest}.safetensors")
        log.info(
            "reference cache %s: %d rows computed, %d found cached",
            self.cache_dir,
            self.computed,
            self.reused,
        )

    def _fill_nll(self, method, view: dict, need: ReferenceNeed, device, cached: dict, new: dict) -> None:
        keys = row_keys(view, need.label_key)
        todo = [k for k in keys if k not in cached and k not in new]
        self.reused += len(keys) - len(todo)
        if not todo:
            return
        nll, count = self._live.sequence_nll(method, _to(view, device), need.label_key)
        for i, key in enumerate(keys):
            if key in todo:
                new[key] = torch.stack([nll[i], count[i].to(nll.dtype)]).float().cpu()
        self.computed += len(todo)

    def _fill_states(self, method, view: dict, need: ReferenceNeed, device) -> None:
        folder = self._states_dir(need.layer)
        keys = row_keys(view, None)
        todo = [k for k in keys if not (folder / f"{k}.safetensors").is_file()]
        self.reused += len(keys) - len(todo)
        if not todo:
            return
        states = self._live.layer_states(method, _to(view, device), need.layer)
        for i, key in enumerate(keys):
            if key in todo:
                n = int(view["attention_mask"][i].sum())  # right padding: the first n positions
                row = {"states": states[i, :n].to(self.states_dtype).contiguous().cpu()}
                _save_atomic(row, folder / f"{key}.safetensors")
        self.computed += len(todo)

    def sequence_nll(
        self, method: MethodModule, batch: dict, label_key: str = "labels"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys = row_keys(batch, label_key)
        missing = [i for i, key in enumerate(keys) if key not in self._nll]
        if missing:
            raise _miss(self.cache_dir, batch, missing, f"{label_key!r} NLLs")
        rows = torch.stack([self._nll[key] for key in keys])
        device = batch["input_ids"].device
        return rows[:, 0].to(device), rows[:, 1].to(device)

    def layer_states(self, method: MethodModule, batch: dict, layer: int) -> torch.Tensor:
        folder = self._states_dir(layer)
        keys = row_keys(batch, None)
        missing = [i for i, key in enumerate(keys) if not (folder / f"{key}.safetensors").is_file()]
        if missing:
            raise _miss(self.cache_dir, batch, missing, f"layer-{layer} states")
        mask = batch["attention_mask"]
        out = None
        for i, key in enumerate(keys):
            states = load_file(folder / f"{key}.safetensors")["states"]
            if out is None:
                out = torch.zeros(mask.shape[0], mask.shape[1], states.shape[-1], dtype=torch.float32)
            out[i, : states.shape[0]] = states.float()
        assert out is not None
        return out.to(mask.device)


def _miss(cache_dir: Path | None, batch: dict, rows: list[int], what: str) -> KeyError:
    ids = [batch["sample_ids"][i] for i in rows]
    sources = sorted({str(batch["sample_meta"][i].get("source", "?")) for i in rows})
    return KeyError(
        f"reference cache {cache_dir} has no {what} for sample(s) {ids} of {sources}: the precompute pass "
        "scores only the splits and views the method declares (ReferenceNeed), before training"
    )


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write to a temporary name, then rename: a killed run never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, tmp)
    os.replace(tmp, path)


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
