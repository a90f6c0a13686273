"""DDP on CPU: 2 processes over gloo train exactly like 1 process with the same global batch.

What is compared, and why the comparison is exact (up to float rounding):

- Data. Global batch 8 = 1 process x 8 = 2 processes x 4, ``data.shuffle=false``. Under DDP mirage's
  datamodule gives each loader a ``DistributedSampler`` that honours ``shuffle`` (Lightning's own would
  always shuffle), dealing the split round-robin: at step s rank 0 gets samples 8s, 8s+2, 8s+4, 8s+6 and
  rank 1 gets 8s+1, 8s+3, ..., together samples 8s..8s+7, which is exactly what the single process
  reads at step s. The test checks the sample ids of every split at every step.
- Loss. Every term of SFT, NPO (``reduction: sequence``) and RMU is a mean over tokens (CE, the RMU MSEs) or
  over sequences (NPO). A token mean over 8 samples equals the mean of two 4-sample token means only when
  every sample has the same number of counted tokens, so every sample here gets the same question and its
  answer is cut to the same number of tokens (``max_length``): no padding, equal answer and total token
  counts (checked in every batch). Then L(8 samples) = (L(rank 0's 4) + L(rank 1's 4)) / 2 exactly.
- Gradients. DDP all-reduces and *averages* gradients, so each rank steps with
  (grad L_0 + grad L_1) / 2 = grad L(8 samples): the same step as the single process. With plain SGD (no
  momentum, no schedule, no clipping) the weights after 4 steps must agree to float rounding (1e-5), both
  ranks must hold the same weights, and the per-step mean of the two ranks' local losses must equal the
  single process's loss. The weights move by far more than the tolerance, so a summed instead of averaged
  gradient would fail; a negative control removes the all-reduce (a DDP communication hook that keeps each
  rank's local gradient) and the same checks then fail.

NPO's default ``reduction: token_mean`` is deliberately not used: it takes one log-ratio from the whole
batch, so under DDP each rank computes it from its own 4 samples and the objective depends on the
per-device batch size (a property of that reduction, not a DDP bug).

Each run is a subprocess: this file is also the worker script (``python test_ddp_cpu.py --method ...``),
which Lightning's ``ddp`` launcher re-executes once per extra rank.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

GLOBAL_BATCH = 8
STEPS = 4
SAMPLES_PER_SPLIT = 32  # 4 steps of 8: every step sees new samples
ANSWER_TOKENS = 6  # every answer is cut to this many tokens
QUESTION = "what is in the image?"
LR = {"sft": 0.5, "npo": 0.05, "rmu": 0.5}  # SGD; NPO's summed-NLL log-ratios have larger gradients
LOSS_TOL = 1e-5  # relative, per step
WEIGHT_TOL = 1e-5  # absolute, per weight
METHODS = ("sft", "npo", "rmu")
WORKER_TIMEOUT = 240


# --- the worker: one training run (one rank when Lightning re-executes it) ----------------------------


def equal_length_samples(processor, path: Path, n: int):
    """The first ``n`` samples of a conversation file with answers of at least ANSWER_TOKENS tokens, all
    asked QUESTION, and the ``max_length`` that gives every one of them identical token counts."""
    from mirage.data.collate import VLMCollator
    from mirage.data.readers import read_conversations

    collate = VLMCollator(processor)
    chosen, prompt_lengths = [], set()
    for sample in read_conversations(path):
        sample = dataclasses.replace(sample, question=QUESTION)
        batch = collate([sample])
        answer = int((batch["labels"] != -100).sum())
        prompt_lengths.add(int(batch["attention_mask"].sum()) - answer)
        if answer >= ANSWER_TOKENS:
            chosen.append(sample)
        if len(chosen) == n:
            break
    assert len(chosen) == n and len(prompt_lengths) == 1, (len(chosen), prompt_lengths)
    return chosen, prompt_lengths.pop() + ANSWER_TOKENS


def build_method(name: str, model, processor, cache_dir: Path):
    import torch

    from mirage.methods.npo import NPO
    from mirage.methods.reference import FrozenCopy, Precompute
    from mirage.methods.rmu import RMU
    from mirage.methods.sft import SFT

    # Plain SGD is stateless: each step is a function of the (averaged) gradient alone.
    optimizer = functools.partial(torch.optim.SGD, lr=LR[name])
    if name == "sft":
        return SFT(model, optimizer=optimizer, processor=processor, split="retain")
    if name == "npo":  # Precompute: rank 0 fills the cache, the other rank waits at the strategy's barrier
        return NPO(
            model,
            optimizer=optimizer,
            processor=processor,
            reference=Precompute(cache_dir / "reference"),
            beta=0.5,
            alpha_retain_npo=0.3,
            reduction="sequence",
        )
    if name == "rmu":  # default trainable set: down_proj of layers 0..1 and the projector
        return RMU(
            model,
            optimizer=optimizer,
            processor=processor,
            reference=FrozenCopy(),
            layer=1,
            steering_coeff=2.0,
            alpha=5.0,
        )
    raise ValueError(name)


def _local_gradient_hook(state, bucket):
    """DDP communication hook without the all-reduce: each rank keeps its own gradient (negative control)."""
    import torch

    future = torch.futures.Future()
    future.set_result(bucket.buffer())
    return future


def _recorder_class():
    import lightning.pytorch as L
    from safetensors.torch import save_file

    class Recorder(L.Callback):
        """Per rank: local loss, sample ids and token counts of every step; final trainable weights."""

        def __init__(self, out: Path, break_allreduce: bool) -> None:
            self.out, self.break_allreduce = out, break_allreduce
            self.steps: list[dict] = []

        def on_train_start(self, trainer, pl_module):
            if self.break_allreduce:
                trainer.strategy.model.register_comm_hook(None, _local_gradient_hook)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.steps.append(
                {
                    "loss": outputs["loss"].item(),
                    "ids": {split: list(b["sample_ids"]) for split, b in batch.items()},
                    "answer_tokens": sorted(
                        {int(n) for b in batch.values() for n in (b["labels"] != -100).sum(1)}
                    ),
                    "padded": any(bool((b["attention_mask"] == 0).any()) for b in batch.values()),
                }
            )

        def on_train_end(self, trainer, pl_module):
            rank = trainer.global_rank
            weights = {n: p.detach().cpu().contiguous() for n, p in pl_module.model.named_parameters()}
            trainable = {n for n, p in pl_module.model.named_parameters() if p.requires_grad}
            save_file(
                {n: w for n, w in weights.items() if n in trainable}, self.out / f"rank{rank}.safetensors"
            )
            record = {
                "world_size": trainer.world_size,
                # What the DDP wrapper really runs with (None without DDP).
                "find_unused_parameters": getattr(trainer.strategy.model, "find_unused_parameters", None),
                "steps": self.steps,
            }
            (self.out / f"rank{rank}.json").write_text(json.dumps(record))

    return Recorder


def worker(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--method", choices=METHODS, required=True)
    parser.add_argument("--devices", type=int, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--break-allreduce", action="store_true")
    args = parser.parse_args(argv)

    import lightning.pytorch as L
    import torch

    from mirage.data.datamodule import VLMDataModule
    from mirage.models.finetune import FinetuneSpec, apply_finetune
    from mirage.models.loading import load_vlm

    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    args.out.mkdir(parents=True, exist_ok=True)
    model, processor = load_vlm(args.model)
    model = apply_finetune(model, FinetuneSpec())
    forget, max_length = equal_length_samples(processor, args.data / "forget.json", SAMPLES_PER_SPLIT)
    retain, max_length_retain = equal_length_samples(processor, args.data / "retain.json", SAMPLES_PER_SPLIT)
    assert max_length == max_length_retain
    method = build_method(args.method, model, processor, args.out)
    datamodule = VLMDataModule(
        {"forget": lambda: forget, "retain": lambda: retain},
        processor,
        train_splits=method.train_splits,
        batch_size=GLOBAL_BATCH // args.devices,
        eval_batch_size=GLOBAL_BATCH,
        max_length=max_length,
        shuffle=False,  # honoured under DDP too (see the docstring)
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=args.devices,
        strategy="ddp" if args.devices > 1 else "auto",
        precision="32-true",
        max_steps=STEPS,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[_recorder_class()(args.out, args.break_allreduce)],
    )
    trainer.fit(method, datamodule=datamodule)


# --- the tests ----------------------------------------------------------------------------------------

# The parent's environment minus any rank variables (a rank set there would make Lightning skip launching).
ENV = {
    **{
        k: v
        for k, v in os.environ.items()
        if k not in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "GLOBAL_RANK")
    },
    "OMP_NUM_THREADS": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "WANDB_MODE": "offline",
    "TOKENIZERS_PARALLELISM": "false",
}


def _run(
    method: str, devices: int, out: Path, model: Path, data: Path, break_allreduce: bool = False
) -> dict:
    from safetensors.torch import load_file

    cmd = [sys.executable, str(Path(__file__).resolve()), "--method", method, "--devices", str(devices)]
    cmd += ["--model", str(model), "--data", str(data), "--out", str(out)]
    cmd += ["--break-allreduce"] if break_allreduce else []
    start = time.time()
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=WORKER_TIMEOUT, env=ENV)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    ranks = []
    for rank in range(devices):
        record = json.loads((out / f"rank{rank}.json").read_text())
        assert record["world_size"] == devices
        record["weights"] = load_file(out / f"rank{rank}.safetensors")
        ranks.append(record)
    return {"ranks": ranks, "seconds": time.time() - start}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_llava_dir, synthetic_dir):
    """``runs(method, devices, break_allreduce=False)``: one worker run, made once per module."""
    done: dict[tuple, dict] = {}

    def get(method: str, devices: int, break_allreduce: bool = False) -> dict:
        key = (method, devices, break_allreduce)
        if key not in done:
            out = tmp_path_factory.mktemp(f"{method}_{devices}{'_broken' if break_allreduce else ''}")
            done[key] = _run(method, devices, out, tiny_llava_dir, synthetic_dir, break_allreduce)
        return done[key]

    return get


@pytest.fixture(scope="module")
def initial_weights(tiny_llava_dir):
    from mirage.models.loading import load_vlm

    model, _ = load_vlm(tiny_llava_dir)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _check_same_global_batches(single: dict, ddp: dict) -> None:
    (one,), ranks = single["ranks"], ddp["ranks"]
    assert len(one["steps"]) == STEPS and all(len(r["steps"]) == STEPS for r in ranks)
    for step in range(STEPS):
        reference = one["steps"][step]
        for split, ids in reference["ids"].items():
            assert len(ids) == GLOBAL_BATCH and len(set(ids)) == GLOBAL_BATCH
            together = sorted(i for r in ranks for i in r["steps"][step]["ids"][split])
            assert together == sorted(ids), f"step {step}, split {split}: the ranks saw other samples"
        for record in [reference, *(r["steps"][step] for r in ranks)]:
            assert record["answer_tokens"] == [ANSWER_TOKENS] and not record["padded"]


def _gaps(single: dict, ddp: dict, initial: dict) -> dict:
    """How far the DDP run is from the single-process run, and its ranks from each other."""
    (one,), ranks = single["ranks"], ddp["ranks"]
    losses = [step["loss"] for step in one["steps"]]
    ddp_losses = [sum(r["steps"][s]["loss"] for r in ranks) / len(ranks) for s in range(STEPS)]
    w_single = one["weights"]
    assert all(set(r["weights"]) == set(w_single) for r in ranks)

    def distance(a: dict, b: dict) -> float:
        return max((a[n] - b[n]).abs().max().item() for n in w_single)

    return {
        "loss_gap": max(abs(a - b) / abs(a) for a, b in zip(losses, ddp_losses, strict=True)),
        "weight_gap": max(distance(w_single, r["weights"]) for r in ranks),
        "rank_gap": max(distance(ranks[0]["weights"], r["weights"]) for r in ranks),
        "moved": distance(w_single, initial),
        "losses": losses,
        "ddp_losses": ddp_losses,
        "seconds": single["seconds"] + ddp["seconds"],
    }


@pytest.mark.parametrize("method", METHODS)
def test_two_ddp_processes_match_one_process_with_the_same_global_batch(method, runs, initial_weights):
    single, ddp = runs(method, 1), runs(method, 2)
    _check_same_global_batches(single, ddp)
    gaps = _gaps(single, ddp, initial_weights)
    report = f"{method}: {gaps}"
    assert len({round(x, 4) for x in gaps["losses"]}) == STEPS, report  # the loss changes: the model trains
    assert gaps["moved"] > 1000 * WEIGHT_TOL, report  # so a summed (not averaged) gradient could not pass
    assert gaps["loss_gap"] < LOSS_TOL, report
    assert gaps["weight_gap"] < WEIGHT_TOL, report
    assert gaps["rank_gap"] == 0.0, report  # both replicas applied the same averaged gradient
    # Plain `ddp` (find_unused_parameters=False) ran 4 steps: for RMU this means every trainable parameter
    # (down_proj of layers <= k, the projector) got a gradient; an unused one fails the second step.
    assert ddp["ranks"][0]["find_unused_parameters"] is False


def test_the_comparison_fails_when_gradients_are_not_averaged(runs, initial_weights):
    """Negative control: SFT again, but each rank keeps its local gradient (no all-reduce)."""
    single, broken = runs("sft", 1), runs("sft", 2, break_allreduce=True)
    _check_same_global_batches(single, broken)  # the data is still right: only the gradient sync is missing
    gaps = _gaps(single, broken, initial_weights)
    assert gaps["rank_gap"] > 1000 * WEIGHT_TOL, gaps  # the replicas drift apart
    assert gaps["weight_gap"] > 1000 * WEIGHT_TOL, gaps
    assert gaps["loss_gap"] > 100 * LOSS_TOL, gaps


if __name__ == "__main__":
    worker()
