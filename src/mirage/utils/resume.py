"""Resuming a training run exactly, history included.

Lightning restores weights, optimizer, schedule, loop counters and (through ``StatefulDataLoader``) the data
position, but not the global RNGs. Those still matter after a resume: a shuffled split draws its next pass's
seed from the torch RNG, and dropout draws from it on every step. :class:`ExactResume` saves the torch (CPU
and CUDA), numpy and python states in each checkpoint and puts them back at the moment a never-stopped run
would draw from them; it also keeps the loggers' files current, so the history before a checkpoint survives
a kill, and records the W&B run id that a resumed run continues (:class:`ResumePoint`).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch

log = logging.getLogger(__name__)


def collect_random_state() -> dict[str, Any]:
    """The global torch / CUDA / numpy / python RNG states, as tensors and plain values (``weights_only``
    loads them)."""
    kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
    version, python_state, python_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": int(version), "state": list(python_state), "gauss": python_gauss},
    }


def restore_random_state(state: dict[str, Any]) -> None:
    """Set the global RNGs to a :func:`collect_random_state` result."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss"]))


@dataclass(frozen=True)
class ResumePoint:
    """Where a checkpoint resumes a run: its optimizer step (the resumed run logs that step and later ones
    again; unknown for a DeepSpeed checkpoint folder) and the W&B run it continues."""

    step: int | None
    wandb_run_id: str | None = None

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> ResumePoint:
        saved = checkpoint.get("callbacks", {}).get(ExactResume.__qualname__) or {}
        return cls(step=int(checkpoint["global_step"]), wandb_run_id=saved.get("wandb_run_id"))


class ExactResume(L.Callback):
    """Makes ``ckpt_path=...`` continue a run as if it had never stopped (with resumable training loaders).

    Every checkpoint also holds the global RNG states (each rank's), whether the epoch was finished, and
    the W&B run id (:class:`ResumePoint`). A checkpoint is written at the end of a training batch (or epoch),
    when the RNGs hold what a never-stopped run draws next:

    - mid-epoch, Lightning restores each loader's position and rebuilds its iterator before
      ``on_train_start`` (drawing a base seed the never-stopped run does not draw), so the states go back at
      ``on_train_start``, just before the first resumed batch;
    - at the end of an epoch, the never-stopped run starts the next epoch with fresh passes over every split
      (drawing their seeds from these states), so the saved loader positions are dropped (a finished pass
      would otherwise give an empty epoch, and the shorter split of a pair would not restart) and the states
      go back at once, before Lightning builds those fresh passes.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None
        self._fit_trainer: L.Trainer | None = None

    def state_dict(self) -> dict[str, Any]:
        from lightning.pytorch.loggers import WandbLogger

        trainer = self._fit_trainer
        states = [collect_random_state()]
        if trainer is not None and trainer.world_size > 1 and torch.distributed.is_initialized():
            # Every rank saves a checkpoint together (rank 0 writes it); their RNGs differ once they draw
            # different amounts (dropout over batches padded to different lengths), so each rank's is kept.
            states = [None] * trainer.world_size
            torch.distributed.all_gather_object(states, collect_random_state())
        epoch_finished = bool(
            trainer is not None and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        )
        loggers = trainer.loggers if trainer is not None else []
        wandb_ids = [str(logger.version) for logger in loggers if isinstance(logger, WandbLogger)]
        return {
            "random_states": states,  # one per rank
            "epoch_finished": epoch_finished,
            "wandb_run_id": wandb_ids[0] if wandb_ids else None,
        }

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._fit_trainer = trainer

    def _own_random_state(self, state_dict: dict[str, Any]) -> dict[str, Any]:
        states = state_dict["random_states"]
        rank = self._fit_trainer.global_rank if self._fit_trainer is not None else 0
        world_size = self._fit_trainer.world_size if self._fit_trainer is not None else 1
        if len(states) != world_size:
            log.warning(
                "the checkpoint holds the random states of %d processes, this run has %d: "
                "the resumed run may draw other random numbers than an unbroken run",
                len(states),
                world_size,
            )
        return states[min(rank, len(states) - 1)]

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        saved = checkpoint.get("callbacks", {}).get(self.state_key)
        if saved is None:
            log.warning(
                "the checkpoint holds no random states (an older mirage wrote it): "
                "the resumed run may draw other random numbers than an unbroken run"
            )
            return
        if saved["epoch_finished"]:
            fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
            fit_loop.get("state_dict", {}).pop("combined_loader", None)  # the next epoch starts fresh passes

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = self._own_random_state(state_dict)
        if state_dict["epoch_finished"]:
            restore_random_state(state)
            log.info("restored the random states saved at the end of an epoch")
        else:
            self._pending = state

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        # A step's metrics reach the loggers after its checkpoint is written: put them on disk now, so that
        # the history up to a checkpoint (CSV, TensorBoard) is all there if the run is killed later.
        for logger in trainer.loggers:
            logger.save()

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        load_pending_loader_states(trainer)
        if self._pending is not None:
            restore_random_state(self._pending)
            self._pending = None
            log.info("restored the random states saved mid-epoch")


def load_pending_loader_states(trainer: L.Trainer) -> None:
    """Give the training loaders the positions saved in the checkpoint if Lightning has not.

    Lightning builds the training loaders early when ``configure_optimizers`` asks for
    ``trainer.estimated_stepping_batches`` with ``max_epochs`` set, before it has read the checkpoint's loops,
    and then never loads their saved states (Lightning-AI/pytorch-lightning#20550, open in 2.6). This does
    what its own resume path does, once the states are known: load them, then rebuild the iterators.
    """
    fit_loop = trainer.fit_loop
    pending = getattr(fit_loop, "_combined_loader_states_to_load", None)
    if not pending:
        return
    if not (hasattr(fit_loop, "_load_combined_loader_states") and getattr(fit_loop, "_data_fetcher", None)):
        raise RuntimeError(
            f"lightning {L.__version__}: cannot restore the training loaders' positions (FitLoop internals "
            "changed); mirage.utils.resume.load_pending_loader_states needs updating"
        )
    fit_loop._load_combined_loader_states()
    iter(fit_loop._data_fetcher)  # fresh iterators, continuing the loaded positions
    log.info("restored the training loaders' positions (Lightning-AI/pytorch-lightning#20550)")
