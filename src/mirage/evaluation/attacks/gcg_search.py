"""Greedy coordinate gradient (GCG) search for one suffix over a corpus of prompts (Zou et al. 2023,
arXiv 2307.15043).

The loss of a suffix is the mean over the prompts of each target answer's mean next-token NLL, given the
prompt (question + suffix, with its image) in the chat template. Each step:

1. the gradient of the loss with respect to the one-hot matrix X [length, vocab] of the suffix. The suffix's
   input embeddings are e = X E, where E [vocab, dim] is the embedding layer's output for every token (its
   scale included, e.g. Gemma's), so dL/dX = (dL/de) E^T: the model runs on its own input_ids and pixel_values
   (every family places its image features from the ids), and only dL/de is caught, at the embedding layer;
2. the ``topk`` tokens of most negative gradient per position (special, out-of-vocabulary and unprintable
   tokens excluded), and ``search_width`` candidates, each the current suffix with one position replaced by
   one of that position's top-k tokens (uniform), the positions spread evenly, drawn with a seeded
   ``torch.Generator``;
3. candidates that do not re-encode to their own ids in every prompt are dropped
   (:meth:`SuffixFrames.valid`); the rest are scored exactly, ``batch_size`` sequences per forward pass;
4. the best candidate becomes the current suffix (as Zou et al., even when it is worse); the best suffix seen
   is kept.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from mirage.data.collate import IGNORE_INDEX, LABEL_KEYS, META_KEYS, VLMCollator
from mirage.evaluation.attacks.gcg_frames import Frame, SuffixFrames


def model_inputs(model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
    """The batch's model inputs on the model's device, images in the model's dtype."""
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    inputs = {}
    for key, value in batch.items():
        if key in META_KEYS or key in LABEL_KEYS or not isinstance(value, torch.Tensor):
            continue
        inputs[key] = value.to(device, dtype) if value.is_floating_point() else value.to(device)
    return inputs


def row_losses(model: torch.nn.Module, inputs: dict[str, Any], labels: torch.Tensor) -> torch.Tensor:
    """[rows]: each row's mean next-token NLL over its labelled (answer) tokens."""
    logits = model(**inputs, use_cache=False).logits[:, :-1]
    labels = labels[:, 1:].to(logits.device)
    mask = labels != IGNORE_INDEX
    rows = mask.nonzero()[:, 0]
    # Only the answer positions go to float32: the full logits of a 7B batch would not fit.
    logp = torch.log_softmax(logits[mask].float(), dim=-1).gather(-1, labels[mask].unsqueeze(-1)).squeeze(-1)
    total = torch.zeros(len(labels), device=logits.device).index_add(0, rows, -logp)
    return total / mask.sum(dim=1)


def _repeat(batch: dict[str, Any], times: int) -> dict[str, Any]:
    """``times`` copies of a batch, one after the other along dim 0 (Qwen2-VL's patch rows too)."""
    return {k: torch.cat([v] * times) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _with_suffixes(frame: Frame, suffixes: torch.Tensor) -> tuple[dict[str, Any], torch.Tensor]:
    """The frame's rows once per suffix ([k, length] ids), each with that suffix: inputs and labels."""
    count, rows = len(suffixes), len(frame.positions)
    batch = _repeat(frame.batch, count)
    ids = batch["input_ids"].clone()
    row_index = torch.arange(count * rows).unsqueeze(1).expand(-1, suffixes.shape[1])
    ids[row_index, frame.positions.repeat(count, 1)] = suffixes.repeat_interleave(rows, dim=0).to(ids)
    batch["input_ids"] = ids
    return batch, batch["labels"]


@torch.no_grad()
def suffix_losses(
    model: torch.nn.Module, frames: SuffixFrames, suffixes: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """[n]: the loss of each suffix ([n, length] ids) on the whole corpus."""
    total = torch.zeros(len(suffixes), dtype=torch.float64)
    for frame in frames.frames:
        rows = len(frame.positions)
        per_pass = max(1, batch_size // rows)  # suffixes per forward pass, each with the chunk's prompts
        for start in range(0, len(suffixes), per_pass):
            group = suffixes[start : start + per_pass]
            batch, labels = _with_suffixes(frame, group)
            losses = row_losses(model, model_inputs(model, batch), labels).view(len(group), rows)
            total[start : start + len(group)] += losses.sum(dim=1).double().cpu()
    return total / len(frames.samples)


def embedding_table(model: torch.nn.Module) -> torch.Tensor:
    """[vocab, dim] float32: the input embedding layer's output for every token (any scale included)."""
    embedding = model.get_input_embeddings()
    with torch.no_grad():
        ids = torch.arange(embedding.num_embeddings, device=embedding.weight.device)
        return embedding(ids).float()


def token_gradient(
    model: torch.nn.Module, frames: SuffixFrames, suffix: torch.Tensor, table: torch.Tensor | None = None
) -> torch.Tensor:
    """[length, vocab]: the gradient of the corpus loss with respect to the suffix's one-hot matrix
    (``table``: :func:`embedding_table`, computed here when not given)."""
    embedding = model.get_input_embeddings()
    caught: list[torch.Tensor] = []

    def catch(module: torch.nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        leaf = output.detach().requires_grad_(True)  # a leaf: its .grad is dL/de at every position
        caught.append(leaf)
        return leaf

    grad_e = None
    handle = embedding.register_forward_hook(catch)
    try:
        for frame in frames.frames:
            caught.clear()
            batch, labels = _with_suffixes(frame, suffix.unsqueeze(0))
            inputs = model_inputs(model, batch)
            loss = row_losses(model, inputs, labels).sum() / len(frames.samples)
            leaf = [c for c in caught if c.shape[:2] == inputs["input_ids"].shape]
            if len(leaf) != 1:
                raise RuntimeError(f"gcg: the input embeddings ran {len(leaf)} times on the prompt, not once")
            loss.backward()
            grad = leaf[0].grad
            rows = torch.arange(len(frame.positions), device=grad.device).unsqueeze(1)
            part = grad[rows, frame.positions.to(grad.device)].float().sum(dim=0)
            grad_e = part if grad_e is None else grad_e + part
    finally:
        handle.remove()
    table = embedding_table(model) if table is None else table
    with torch.no_grad():
        return (grad_e.to(table.device) @ table.T).cpu()


def sample_candidates(
    suffix: torch.Tensor,
    grad: torch.Tensor,
    allowed: torch.Tensor,
    topk: int,
    width: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """[width, length]: the suffix with one position each replaced by one of its ``topk`` best tokens."""
    usable = torch.zeros(grad.shape[1], dtype=torch.bool)  # embedding rows past the tokenizer: never
    usable[: len(allowed)] = allowed[: grad.shape[1]]
    scores = (-grad).masked_fill(~usable, -math.inf)
    top = scores.topk(min(topk, int(usable.sum())), dim=1).indices  # [length, k]
    # Every position gets width / length candidates (one more for the first width % length of a random
    # order): Zou et al.'s reference code spreads them evenly too, and no position is skipped for long.
    positions = torch.randperm(len(suffix), generator=generator)[torch.arange(width) % len(suffix)]
    choices = torch.randint(top.shape[1], (width,), generator=generator)
    candidates = suffix.repeat(width, 1)
    candidates[torch.arange(width), positions] = top[positions, choices]
    return candidates


def search(
    model: torch.nn.Module,
    frames: SuffixFrames,
    *,
    steps: int,
    topk: int,
    search_width: int,
    batch_size: int,
    seed: int,
) -> dict[str, Any]:
    """GCG from ``frames.init_ids``: the best suffix seen (ids and text), its loss, the loss per step."""
    generator = torch.Generator().manual_seed(seed)
    current = frames.init_ids.clone()
    start_loss = float(suffix_losses(model, frames, current.unsqueeze(0), batch_size)[0])
    best, best_loss, best_step, losses, kept = current, start_loss, 0, [start_loss], []
    started, table = time.perf_counter(), embedding_table(model)
    for step in range(1, steps + 1):
        grad = token_gradient(model, frames, current, table)
        candidates = sample_candidates(current, grad, frames.allowed, topk, search_width, generator)
        candidates = frames.valid(candidates)
        kept.append(len(candidates))
        if not len(candidates):  # nothing valid this step: the suffix stays
            losses.append(losses[-1])
            continue
        scores = suffix_losses(model, frames, candidates, batch_size)
        index = int(scores.argmin())
        current, loss = candidates[index], float(scores[index])
        if not math.isfinite(loss):
            raise FloatingPointError(f"gcg: the target loss is {loss} at step {step}")
        losses.append(loss)
        if loss < best_loss:
            best, best_loss, best_step = current, loss, step
    seconds = time.perf_counter() - started
    return {
        "ids": best.tolist(),
        "suffix": frames.text(best),
        "loss_start": start_loss,
        "loss_best": best_loss,
        "best_step": best_step,
        "losses": losses,
        "candidates_valid": kept,  # candidates scored per step (after the re-encoding filter)
        "seconds_search": seconds,
        "seconds_per_step": seconds / steps if steps else 0.0,
    }


@torch.no_grad()
def text_loss(
    model: torch.nn.Module, processor: Any, frames: SuffixFrames, suffix: str, batch_size: int
) -> float:
    """The corpus loss of ``suffix`` as text: each question + suffix collated afresh, as the evaluation
    reads it (no ids carried over from the search)."""
    collate, samples = VLMCollator(processor), [frames.with_suffix(s, suffix) for s in frames.samples]
    total = 0.0
    for start in range(0, len(samples), batch_size):
        batch = collate(samples[start : start + batch_size])
        total += float(row_losses(model, model_inputs(model, batch), batch["labels"]).sum())
    return total / len(samples)
