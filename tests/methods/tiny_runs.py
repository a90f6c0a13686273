"""Short runs of unlearning methods on the tiny LLaVA and the synthetic world, shared by the method tests."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import lightning.pytorch as L
import torch

from mirage.data.datamodule import VLMDataModule
from mirage.data.readers import read_conversations
from mirage.methods.reference import AdaptersOff, FrozenCopy, Precompute
from mirage.models.finetune import FinetuneSpec, apply_finetune
from mirage.models.loading import load_vlm


def datamodule(processor, synthetic_dir: Path, n_forget=16, n_retain=8, batch_size=4, forget_path=None):
    """Forget and retain splits of the synthetic world, in file order (``forget_path``: another forget)."""
    forget_path = forget_path or synthetic_dir / "forget.json"
    return VLMDataModule(
        {
            "forget": lambda: read_conversations(forget_path, synthetic_dir)[:n_forget],
            "retain": lambda: read_conversations(synthetic_dir / "retain.json")[:n_retain],
        },
        processor,
        train_splits=("forget", "retain"),
        batch_size=batch_size,
        eval_batch_size=8,
        shuffle=False,
    )


class Recorder(L.Callback):
    """The loss and the retain sample ids of every step."""

    def __init__(self):
        self.losses, self.retain_ids = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].item())
        self.retain_ids.append(list(batch["retain"]["sample_ids"]))


def fit(method, dm, steps=None, epochs=1) -> Recorder:
    recorder = Recorder()
    trainer = L.Trainer(
        max_steps=steps or -1,
        max_epochs=-1 if steps else epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[recorder],
        num_sanity_val_steps=0,
    )
    trainer.fit(method, datamodule=dm)
    return recorder


def tiny_model(path, lora, seed=0):
    model, processor = load_vlm(path)
    torch.manual_seed(seed)  # identical LoRA initialisation across strategies
    spec = FinetuneSpec(mode="lora", lora={"r": 4}) if lora else FinetuneSpec()
    return apply_finetune(model, spec), processor


def sgd(lr):
    return functools.partial(torch.optim.SGD, lr=lr)  # deterministic and stateless: trajectories comparable


def trajectories_per_strategy(make_method: Callable, lora, tiny_llava_dir, synthetic_dir, tmp_path) -> dict:
    """Four SGD steps of the same method from the same start, once per reference strategy."""
    strategies = {"precompute": lambda: Precompute(tmp_path / "ref"), "frozen_copy": FrozenCopy}
    if lora:
        strategies["adapters_off"] = AdaptersOff
    trajectories = {}
    for name, make in strategies.items():
        model, processor = tiny_model(tiny_llava_dir, lora)
        method = make_method(model, processor, make())
        trajectories[name] = fit(method, datamodule(processor, synthetic_dir), steps=4).losses
    return trajectories
