"""The LightningModule every method extends.

A method declares the splits it trains on (``train_splits``) and implements
``compute_loss(batch) -> {"loss": total, "<term>": value, ...}``. The base class does
the rest: optimizer and schedule from config, logging of every loss term under
``train/``, a validation loss, compact checkpoints (trainable weights only) that refuse
to load into the wrong kind of run, and the Hugging Face export at the end.

Numerical honesty: a non-finite loss term stops the run at once with an error naming the step and
the term (on every rank under DDP), and an export refuses weights that are not finite.
Hyperparameters are checked when a method is built (``require``), naming the config key.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from torch import nn

from mirage.data.collate import LABEL_KEYS, META_KEYS
from mirage.methods.losses import answer_cross_entropy

log = logging.getLogger(__name__)

CHECKPOINT_KEY = "mirage"
_WRAPPERS = re.compile(r"(_fsdp_wrapped_module|_checkpoint_wrapped_module)\.")
CHECKPOINT_FORMAT = 1


class CheckpointMismatchError(RuntimeError):
    """A Lightning checkpoint that does not belong to this method or model set-up."""


class NonFiniteError(FloatingPointError):
    """A loss term or a weight became NaN or infinite: the run stops before anything is exported."""


def require(condition: bool, key: str, value: Any, expectation: str) -> None:
    """Fail when a hyperparameter is out of range, naming its config key (``method.<key>``)."""
    if not condition:
        raise ValueError(f"method.{key} must be {expectation}, got {value!r}")


def require_weights(**weights: float) -> None:
    """Loss weights must be finite and >= 0 (a negative weight silently flips a term's objective)."""
    for key, value in weights.items():
        require(math.isfinite(value) and value >= 0, key, value, "a finite number >= 0")


class MethodModule(L.LightningModule):
    """Holds the (possibly peft-wrapped) HF model; subclasses define the loss."""

    #: The data splits this method's training step receives, as ``batch[split]``.
    train_splits: tuple[str, ...] = ("retain",)
    #: True for methods that unlearn a forget split (they take part in unlearning sweeps and audits).
    unlearning: bool = False

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        processor: Any = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        # The config's name for the method (``method.name``): run names and tags follow it.
        self.method_name = name or type(self).__name__.lower()
        # from_pretrained returns eval mode; Lightning keeps per-module modes, so switch to train mode here.
        self.model = model.train()
        self.processor = processor
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        # Checkpoints hold only trainable weights; the frozen rest comes from the pretrained model.
        self.strict_loading = False

    def restrict_trainable(self, regex: str | None) -> None:
        """Train only the already-trainable parameters whose name matches ``regex`` (``re.search``)."""
        if not regex:
            return
        pattern = re.compile(regex)
        kept = 0
        for name, param in self.model.named_parameters():
            if param.requires_grad and not pattern.search(name):
                param.requires_grad_(False)
            kept += int(param.requires_grad)
        if not kept:
            raise ValueError(f"trainable regex {regex!r} matches no trainable parameter of the model")
        log.info("trainable parameters restricted by %r: %d tensors", regex, kept)

    def attach_reference(self, reference: Any, needs: list[Any]) -> None:
        """Give the method a reference model (``mirage.methods.reference``); call at the end of __init__."""
        self.reference = reference
        if reference is not None:
            reference.attach(self, needs)

    def setup(self, stage: str) -> None:
        # Runs before Lightning restores a checkpoint, so a precomputed reference sees the pretrained model.
        reference = getattr(self, "reference", None)
        if stage == "fit" and reference is not None:
            reference.prepare(self)

    # --- the part a method writes -----------------------------------------------------------
    def compute_loss(self, batch: dict[str, dict[str, Any]]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # --- shared machinery ----------------------------------------------------------------------
    @staticmethod
    def model_inputs(batch: dict[str, Any]) -> dict[str, Any]:
        """The keys of a collated batch that the HF model's forward accepts."""
        return {k: v for k, v in batch.items() if k not in META_KEYS and k not in LABEL_KEYS}

    def forward(self, batch: dict[str, Any], **kwargs: Any):
        return self.model(**self.model_inputs(batch), **kwargs)

    def answer_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """Cross-entropy on the answer tokens of one split's batch."""
        return answer_cross_entropy(self(batch).logits, batch["labels"])

    def step_terms(self, batch: dict[str, dict[str, Any]]) -> dict[str, torch.Tensor]:
        """The terms of one training step: ``compute_loss``, unless the method forms its step's loss
        another way (an unlearning method with ``sam``); ``loss`` is what Lightning back-propagates."""
        return self.compute_loss(batch)

    def training_step(self, batch: dict[str, dict[str, Any]], batch_idx: int) -> torch.Tensor:
        terms = self.step_terms(batch)
        if "loss" not in terms:
            raise KeyError(f"{type(self).__name__}.compute_loss must return a 'loss' entry")
        self.check_finite(terms)
        batch_size = len(next(iter(batch.values()))["input_ids"])
        for name, value in terms.items():
            self.log(
                f"train/{name}",
                value.detach(),
                prog_bar=name == "loss",
                batch_size=batch_size,
                on_step=True,
                on_epoch=False,
            )
        if self._trainer is not None and self.trainer.optimizers:
            self.log(
                "train/lr",
                self.trainer.optimizers[0].param_groups[0]["lr"],
                on_step=True,
                on_epoch=False,
                batch_size=batch_size,
            )
        return terms["loss"]

    def check_finite(self, terms: dict[str, torch.Tensor]) -> None:
        """Stop the run when any loss term is NaN or infinite (before backward, so no weight is touched).
        Under DDP every rank learns of it, so none is left waiting in a collective."""
        bad = [name for name, value in terms.items() if not torch.isfinite(value.detach()).all()]
        if self._trainer is not None and self.trainer.world_size > 1:
            if not self.trainer.strategy.reduce_boolean_decision(bool(bad), all=False):
                return
            bad = bad or ["(on another rank)"]
        if bad:
            values = {name: float(terms[name].detach().float().mean()) for name in bad if name in terms}
            raise NonFiniteError(
                f"step {self.global_step}: loss term(s) {bad} not finite {values}; stopping before any "
                "export (lower method.optimizer.lr, check method weights and data)"
            )

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.answer_loss(batch)
        self.log("val/loss", loss, prog_bar=True, batch_size=len(batch["input_ids"]), sync_dist=True)
        return loss

    def trainable_parameters(self) -> Iterable[tuple[str, nn.Parameter]]:
        """Trainable parameters by their plain names (FSDP / activation-checkpoint wrappers removed, so that
        they match the keys of a full state dict and the same run's names without sharding)."""
        return ((_WRAPPERS.sub("", n), p) for n, p in self.named_parameters() if p.requires_grad)

    def parameter_groups(self) -> list[dict[str, Any]]:
        """Optimizer parameter groups; methods override to set per-group learning rates."""
        return [{"params": [p for _, p in self.trainable_parameters()]}]

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameter_groups())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer, total_steps=self.trainer.estimated_stepping_batches)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --- checkpoints --------------------------------------------------------------------------
    def checkpoint_signature(self) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "method": type(self).__name__,
            "model_type": getattr(getattr(self.model, "config", None), "model_type", None),
            "trainable": sorted(n for n, _ in self.trainable_parameters()),
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        trainable = {n for n, _ in self.trainable_parameters()}
        # Trainable weights, plus the method's own buffers (e.g. RMU's control vector); not the frozen model.
        checkpoint["state_dict"] = {
            k: v for k, v in checkpoint["state_dict"].items() if k in trainable or not k.startswith("model.")
        }
        checkpoint[CHECKPOINT_KEY] = self.checkpoint_signature()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_checkpoint_signature(checkpoint, self.checkpoint_signature(), source="checkpoint")

    # --- export ---------------------------------------------------------------------------------
    def save_pretrained(self, out_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write an HF directory: full weights, or the LoRA adapter (for ``PeftModel.from_pretrained``).

        Under FSDP / DeepSpeed ZeRO-3 the local parameters are shards: ``mirage.utils.export.GatherForExport``
        then leaves the gathered full state dict in ``export_state_dict``, and that is what gets written."""
        out_dir = Path(out_dir)
        state_dict = getattr(self, "export_state_dict", None)
        weights = state_dict.items() if state_dict is not None else self.trainable_parameters()
        broken = [name for name, tensor in weights if not torch.isfinite(tensor.detach()).all()]
        if broken:
            raise NonFiniteError(
                f"not exporting to {out_dir}: {len(broken)} weight tensors hold NaN or inf, e.g. {broken[:3]}"
            )
        out_dir.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out_dir, safe_serialization=True, state_dict=state_dict)
        if self.processor is not None:
            self.processor.save_pretrained(out_dir)
        meta = {**self.checkpoint_signature(), **(extra or {})}
        meta.pop("trainable")
        meta["adapter"] = (out_dir / "adapter_config.json").exists()
        (out_dir / "mirage_export.json").write_text(json.dumps(meta, indent=2, default=str))
        log.info("saved %s to %s", "LoRA adapter" if meta["adapter"] else "model", out_dir)
        return out_dir


def check_checkpoint_signature(checkpoint: dict[str, Any], expected: dict[str, Any], source: str) -> None:
    """Refuse a checkpoint written by another method, model family or trainable-parameter set."""
    found = checkpoint.get(CHECKPOINT_KEY)
    if found is None:
        raise CheckpointMismatchError(
            f"{source}: not a mirage training checkpoint (no '{CHECKPOINT_KEY}' entry)"
        )
    for key in ("method", "model_type"):
        if found.get(key) != expected.get(key):
            raise CheckpointMismatchError(
                f"{source}: written by {key} {found.get(key)!r}, but this run uses {expected.get(key)!r}"
            )
    if found.get("trainable") != expected.get("trainable"):
        theirs, ours = set(found.get("trainable", [])), set(expected["trainable"])
        raise CheckpointMismatchError(
            f"{source}: its trainable parameters differ from this run's (fine-tuning mode or LoRA settings "
            f"changed?): {len(theirs - ours)} only in the checkpoint, {len(ours - theirs)} only in this run, "
            f"e.g. {sorted(theirs ^ ours)[:3]}"
        )


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a Lightning checkpoint safely (``weights_only=True``) for inspection."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointMismatchError(f"{path}: cannot be read as a Lightning checkpoint: {err}") from err
