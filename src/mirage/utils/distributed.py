"""torch.distributed helpers that also work in a plain single process (every call is then a no-op).

Evaluation uses them to shard generation across ranks, gather the answers, and let rank 0 alone write
files; ``init_from_env`` joins the process group that ``torchrun`` describes in the environment.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)
T = TypeVar("T")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def init_from_env() -> bool:
    """Join the process group described by ``torchrun``'s variables (WORLD_SIZE > 1), once.
    Returns whether this process is now one of several ranks."""
    if is_distributed():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():  # one GPU per rank, as torchrun intends
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    log.info("joined the process group: rank %d of %d (%s)", rank(), world_size(), backend)
    return True


def shard(items: Sequence[T]) -> list[T]:
    """This rank's items, dealt round-robin (rank r gets r, r + W, r + 2W, ...)."""
    return list(items[rank() :: world_size()])


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank ([obj] in a single process)."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj if rank() == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]
