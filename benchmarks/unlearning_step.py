"""Time per step and peak memory of unlearning steps, side by side, printed as ratios.

Compares, on the same model and the same fixed batch:
  1. NPO's three reference strategies (precompute, adapters_off, frozen_copy) under LoRA;
  2. RMU with truncated passes (stop after layer k) vs full passes, frozen-copy reference;
  3. the Lightning module driven by a Trainer vs a plain PyTorch loop over the same loss.

Each configuration runs in its own process (so peak RSS is its own), rounds are interleaved,
and medians are reported. Run on the tiny model and on a ~50M-parameter, 10-layer model:

    .venv/bin/python benchmarks/unlearning_step.py --sizes tiny,50m --steps 4 --rounds 2
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RMU_LAYER = {"tiny": 1, "50m": 2}  # about 7/32 of the depth, as LLaVA-1.5-7B's k = 7
CONFIGS = [
    ("npo", "precompute", "lora", True, "manual"),
    ("npo", "adapters_off", "lora", True, "manual"),
    ("npo", "frozen_copy", "lora", True, "manual"),
    ("rmu", "frozen_copy", "full", True, "manual"),
    ("rmu", "frozen_copy", "full", False, "manual"),
    ("npo", "precompute", "lora", True, "lightning"),
]


def child(spec: dict) -> dict:
    """One configuration in this process: build, warm up, time ``steps`` steps; ms/step and peak RSS."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import lightning.pytorch as L
    import torch

    from mirage.data.datamodule import VLMDataModule
    from mirage.data.readers import read_conversations
    from mirage.data.synthetic import ensure_synthetic
    from mirage.methods.npo import NPO
    from mirage.methods.reference import AdaptersOff, FrozenCopy, Precompute
    from mirage.methods.rmu import RMU
    from mirage.models.finetune import FinetuneSpec, apply_finetune
    from mirage.models.loading import load_vlm
    from mirage.models.tiny import PRESETS, TinyVLMSpec, build_tiny_vlm

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    cache = Path(spec["cache"])
    path = build_tiny_vlm(TinyVLMSpec(**PRESETS[spec["size"]]), cache / "tiny_models")
    data = ensure_synthetic(cache / "datasets", seed=0)
    model, processor = load_vlm(path)
    torch.manual_seed(0)
    finetune = FinetuneSpec(mode="lora", lora={"r": 8}) if spec["finetune"] == "lora" else FinetuneSpec()
    model = apply_finetune(model, finetune)
    reference = {
        "precompute": lambda: Precompute(cache / "reference"),
        "adapters_off": AdaptersOff,
        "frozen_copy": FrozenCopy,
    }[spec["reference"]]()
    optimizer = functools.partial(torch.optim.AdamW, lr=1e-5)
    if spec["method"] == "npo":
        method = NPO(model, optimizer=optimizer, processor=processor, reference=reference, beta=0.9)
    else:
        method = RMU(
            model,
            optimizer=optimizer,
            processor=processor,
            reference=reference,
            layer=RMU_LAYER[spec["size"]],
            truncate_passes=spec["truncate"],
        )
    batch_size = spec["batch_size"]
    dm = VLMDataModule(
        {
            "forget": lambda: read_conversations(data / "forget.json")[:batch_size],
            "retain": lambda: read_conversations(data / "retain.json")[:batch_size],
        },
        processor,
        train_splits=("forget", "retain"),
        batch_size=batch_size,
        shuffle=False,
    )
    steps, warmup = spec["steps"], 2
    if spec["driver"] == "lightning":
        times: list[float] = []

        class Clock(L.Callback):
            def on_train_batch_start(self, *args):
                times.append(time.perf_counter())

        trainer = L.Trainer(
            max_steps=warmup + steps,
            max_epochs=-1,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=[Clock()],
        )
        trainer.fit(method, datamodule=dm)
        times.append(time.perf_counter())
        per_step = (times[-1] - times[warmup]) / steps
    else:
        # The plain loop: what a hand-written script does with the same loss and the same batch.
        trainer = L.Trainer(
            max_steps=1,
            accelerator="cpu",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        # The trainer only lends the precompute pass its datamodule, device and rank.
        method.trainer = trainer
        trainer._data_connector.attach_data(method, datamodule=dm)
        dm.setup("fit")
        method.setup("fit")
        batch = {s: dm.collate_train(dm.split(s).samples) for s in ("forget", "retain")}
        opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-5)
        for i in range(warmup + steps):
            if i == warmup:
                start = time.perf_counter()
            loss = method.compute_loss(batch)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        per_step = (time.perf_counter() - start) / steps
    params = sum(p.numel() for p in model.parameters())
    return {
        "ms_per_step": per_step * 1000,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "params": params,
    }


def run(sizes: list[str], steps: int, rounds: int, batch_size: int) -> None:
    cache = Path(os.environ.get("BENCH_CACHE", Path(tempfile.gettempdir()) / "mirage-bench-cache"))
    for size in sizes:
        results: dict[tuple, list[dict]] = {c: [] for c in CONFIGS}
        for _ in range(rounds):
            for config in CONFIGS:  # interleaved: drift on a noisy machine hits every config alike
                method, reference, finetune, truncate, driver = config
                spec = {
                    "size": size,
                    "method": method,
                    "reference": reference,
                    "finetune": finetune,
                    "truncate": truncate,
                    "driver": driver,
                    "steps": steps,
                    "batch_size": batch_size,
                    "cache": str(cache),
                }
                out = subprocess.run(
                    [sys.executable, __file__, "--child", json.dumps(spec)],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if out.returncode != 0:
                    raise RuntimeError(f"{config} failed:\n{out.stderr[-3000:]}")
                results[config].append(json.loads(out.stdout.strip().splitlines()[-1]))
        med = {
            c: {k: statistics.median(r[k] for r in rs) for k in ("ms_per_step", "peak_rss_mb", "params")}
            for c, rs in results.items()
        }
        params = med[CONFIGS[0]]["params"]
        print(
            f"\n== {size} model: {params / 1e6:.1f}M parameters, batch {batch_size}+{batch_size}, "
            f"median of {rounds} rounds x {steps} steps =="
        )
        base = med[CONFIGS[0]]

        def row(label: str, config: tuple, against: dict, med: dict = med) -> None:
            m = med[config]
            print(
                f"{label:<44} time x{m['ms_per_step'] / against['ms_per_step']:5.2f}   "
                f"peak RSS x{m['peak_rss_mb'] / against['peak_rss_mb']:5.2f}"
            )

        print("NPO reference strategies (LoRA), relative to frozen_copy:")
        frozen = med[CONFIGS[2]]
        row("  precompute / frozen_copy", CONFIGS[0], frozen)
        row("  adapters_off / frozen_copy", CONFIGS[1], frozen)
        print("RMU passes (full fine-tuning, frozen_copy):")
        row("  truncated after layer k / full passes", CONFIGS[3], med[CONFIGS[4]])
        print("Driver overhead (NPO precompute, LoRA):")
        row("  Lightning Trainer / plain PyTorch loop", CONFIGS[5], base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="tiny,50m")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    run(args.sizes.split(","), args.steps, args.rounds, args.batch_size)


if __name__ == "__main__":
    main()
