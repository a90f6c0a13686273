"""The Hugging Face export gathers full weights when parameters are sharded (FSDP), on 2 gloo processes.

Lightning runs FSDP on GPUs only, so this drives torch's FSDP directly, as Lightning's FSDPStrategy does
(the method wrapped whole, LLaMA and CLIP blocks as units, ``use_orig_params=True``), and then the same
code a training run uses at its end: ``GatherForExport`` (collective, every rank) and the method's
``save_pretrained`` on rank 0. Each rank holds only a shard, so a plain ``save_pretrained`` could not write
the model; the export must reload to exactly the starting weights. DeepSpeed ZeRO-3 (the other branch of
``mirage.utils.export.full_state_dict``) needs deepspeed and GPUs and is not tested here.

This file is also the worker (``torchrun ... test_export_sharded.py --model DIR --out DIR``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.slow


def worker() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    import functools

    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy
    from transformers.models.clip.modeling_clip import CLIPEncoderLayer
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    from mirage.methods.sft import SFT
    from mirage.models.loading import load_vlm
    from mirage.utils.export import GatherForExport

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    model, processor = load_vlm(args.model)
    method = SFT(
        model, optimizer=functools.partial(torch.optim.SGD, lr=0.1), processor=processor, split="retain"
    )
    numel = {n: p.numel() for n, p in model.named_parameters()}
    wrapped = FSDP(
        method,
        auto_wrap_policy=ModuleWrapPolicy({LlamaDecoderLayer, CLIPEncoderLayer}),
        use_orig_params=True,
        device_id=torch.device("cpu"),
    )
    local = sum(p.numel() for p in method.model.parameters())  # this rank's shard
    GatherForExport().on_train_end(SimpleNamespace(strategy=SimpleNamespace(model=wrapped)), method)
    record = {"local": local, "full": sum(numel.values()), "gathered": len(method.export_state_dict)}
    if rank == 0:
        method.save_pretrained(args.out / "hf")
    (args.out / f"rank{rank}.json").write_text(json.dumps(record))
    dist.barrier()
    dist.destroy_process_group()


def test_fsdp_export_writes_the_full_weights(tmp_path, tiny_llava_dir):
    import torch

    from mirage.models.loading import load_vlm

    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [str(Path(__file__).resolve()), "--model", str(tiny_llava_dir), "--out", str(tmp_path)]
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=300, env={**env, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for record in ranks:
        assert record["local"] < 0.6 * record["full"]  # really sharded: each rank holds about half
    assert ranks[0]["gathered"] > 0 and ranks[1]["gathered"] == 0  # rank 0 alone keeps the full copy

    exported, _ = load_vlm(tmp_path / "hf")
    original, _ = load_vlm(tiny_llava_dir)
    want = original.state_dict()
    got = exported.state_dict()
    assert set(got) == set(want)
    for name, tensor in want.items():
        assert torch.equal(got[name], tensor), name


if __name__ == "__main__":
    worker()
