"""Full weights for the Hugging Face export when the strategy shards parameters (FSDP, DeepSpeed ZeRO-3).

Under sharding each rank holds a slice of every weight, so ``model.save_pretrained`` on rank 0 alone would
write that slice. ``GatherForExport`` gathers the full state dict at the end of training, while the
model is still wrapped and the process group alive (every rank takes part; rank 0 keeps the result on
the CPU), and leaves it on the method as ``export_state_dict`` for ``MethodModule.save_pretrained``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import lightning.pytorch as L
import torch
from torch import nn

log = logging.getLogger(__name__)
_WRAPPERS = re.compile(r"(_fsdp_wrapped_module|_checkpoint_wrapped_module)\.")


def is_fsdp(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FullyShardedDataParallel

    return any(isinstance(m, FullyShardedDataParallel) for m in module.modules())


def is_zero3(module: nn.Module) -> bool:
    """DeepSpeed ZeRO-3 marks the parameters it partitions with ``ds_id``."""
    return any(hasattr(p, "ds_id") for p in module.parameters())


def _clean(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Keys below ``prefix`` (the method's HF model), without wrapper levels, on the CPU."""
    out = {}
    for key, value in state.items():
        key = _WRAPPERS.sub("", key)
        key = key.removeprefix("module.")  # a DeepSpeed engine holds the LightningModule as `module`
        if key.startswith(prefix):
            out[key[len(prefix) :]] = value.detach().cpu()
    return out


def full_state_dict(root: nn.Module, prefix: str = "model.") -> dict[str, torch.Tensor] | None:
    """The full (unsharded) state dict of ``root``'s sub-module at ``prefix``, on rank 0; an empty dict on
    the other ranks; None when nothing is sharded (the model's own ``state_dict`` is then complete).
    Collective under sharding: every rank must call it."""
    from mirage.utils import distributed as dist

    if is_fsdp(root):
        from torch.distributed.fsdp import FullStateDictConfig, StateDictType
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        # Offload to the CPU as the full tensors arrive (GPU memory holds one shard); on CPU-only ranks there
        # is nothing to offload (and torch 2.13 crashes trying).
        config = FullStateDictConfig(offload_to_cpu=torch.cuda.is_available(), rank0_only=True)
        with FSDP.state_dict_type(root, StateDictType.FULL_STATE_DICT, config):
            state = root.state_dict()
        return _clean(state, prefix) if dist.is_main() else {}
    if is_zero3(root):
        import deepspeed

        state = {}
        for name, param in root.named_parameters():  # one weight at a time: no full copy per GPU
            with deepspeed.zero.GatheredParameters([param], modifier_rank=None):
                if dist.is_main():
                    state[name] = param.detach().cpu().clone()
        if not dist.is_main():
            return {}
        state.update({n: b for n, b in root.named_buffers()})
        return _clean(state, prefix)
    return None


class GatherForExport(L.Callback):
    """At the end of training, gather full weights for the export when parameters are sharded."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        root: Any = trainer.strategy.model if trainer.strategy.model is not None else pl_module
        state = full_state_dict(root)
        if state is not None:
            log.info("gathered %d full tensors for the Hugging Face export", len(state))
        pl_module.export_state_dict = state
