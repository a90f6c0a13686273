"""The refusal direction (Arditi et al. 2024, arXiv 2406.11717) and its ablation during generation.

``r = mean(h_l(harmful)) - mean(h_l(harmless))``: decoder layer ``l``'s output (the residual stream) at the
last prompt token, averaged over harmful and over harmless prompts. Ablating ``r_hat = r / |r|`` removes
each position's component along it, ``h <- h - (h . r_hat) r_hat``, everywhere in the residual stream: at
the input of the first decoder layer (token and image embeddings) and at the output of every decoder layer,
for every position, generation included (:func:`attach_ablation`). The same edit folded into the weights is
:mod:`mirage.analysis.orthogonalize`.

The layer is given, or chosen among candidate layers (by default up to five, evenly spread over the first
80% of the decoder, as Arditi et al. exclude the last 20%): each candidate's direction, computed on the fit
prompts, is ablated while the model answers held-out harmful prompts, and the candidate with the lowest
refusal rate wins (the largest drop); ties go to the smallest mean KL divergence of the next-token
distribution on held-out harmless prompts (ablation should leave harmless prompts alone). Arditi et al.
score refusal by the logits of a model's refusal tokens; answers and a refusal judge need no such list.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mirage.analysis.orthogonalize import hidden_size, sublayer_outputs
from mirage.analysis.steering import load_direction, save_direction, steer_hidden
from mirage.data.records import Sample
from mirage.evaluation.generation import GenerationConfig, batches, generate_batch
from mirage.evaluation.judges.base import Judge, JudgeInput
from mirage.models.families import decoder_layers

log = logging.getLogger(__name__)
MAX_DEPTH = 0.8  # candidate layers lie in the first 80% of the decoder (Arditi et al.)


def difference_of_means(harmful: torch.Tensor, harmless: torch.Tensor) -> torch.Tensor:
    """``mean(harmful) - mean(harmless)`` of ``[N, H]`` and ``[M, H]`` activations (float64 sums), float32."""
    if harmful.dim() != 2 or harmless.dim() != 2 or harmful.shape[1] != harmless.shape[1]:
        raise ValueError(
            f"expected [N, H] and [M, H], got {tuple(harmful.shape)} and {tuple(harmless.shape)}"
        )
    if not len(harmful) or not len(harmless):
        raise ValueError("the refusal direction needs at least one harmful and one harmless prompt")
    direction = harmful.double().mean(0) - harmless.double().mean(0)
    if not torch.isfinite(direction).all() or direction.norm() == 0:
        raise ValueError("harmful and harmless activations have the same mean (or a non-finite one)")
    return direction.float()


def last_token_activations(
    model: nn.Module, processor: Any, samples: Sequence[Sample], layers: Sequence[int], batch_size: int = 16
) -> dict[int, torch.Tensor]:
    """layer -> ``[N, H]``: decoder layer outputs at each prompt's last token (the prompt as generation
    sees it, generation prompt included)."""
    from mirage.analysis.activations import collect_activations

    sites = {layer: f"language_model.{layer}" for layer in layers}
    acts = collect_activations(
        model, processor, list(samples), list(sites.values()), pooling="last", batch_size=batch_size
    )
    return {layer: acts[site] for layer, site in sites.items()}


class HookGroup:
    """Several hook handles removed together."""

    def __init__(self, handles: list[torch.utils.hooks.RemovableHandle]) -> None:
        self.handles = handles

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


def attach_ablation(model: nn.Module, direction: torch.Tensor) -> HookGroup:
    """Hooks that remove ``direction``'s component from the residual stream at every layer and position,
    until ``.remove()``: from the first decoder layer's input (token and image embeddings) and from
    everything each decoder layer adds to the stream (its attention and MLP outputs; the norms after them
    in Gemma 2/3), so the stream is ablated between the sub-layers too, as Arditi et al. do."""
    if direction.dim() != 1 or not torch.isfinite(direction).all() or direction.norm() == 0:
        raise ValueError(
            f"the ablated direction must be a finite non-zero vector, got shape {direction.shape}"
        )
    unit = direction.float() / direction.float().norm()
    layers = decoder_layers(model)
    hidden = hidden_size(model)
    if unit.shape[0] != hidden:
        raise ValueError(
            f"direction has {unit.shape[0]} dimensions; the language model's hidden size is {hidden}"
        )

    def ablate(hidden_states: torch.Tensor) -> torch.Tensor:
        return steer_hidden(hidden_states, unit, 1.0, "project")

    def on_input(_module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if "hidden_states" in kwargs:
            return args, {**kwargs, "hidden_states": ablate(kwargs["hidden_states"])}
        return (ablate(args[0]), *args[1:]), kwargs

    def on_output(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        if isinstance(output, tuple):  # attention returns (output, weights)
            return (ablate(output[0]), *output[1:])
        return ablate(output)

    handles = [layers[0].register_forward_pre_hook(on_input, with_kwargs=True)]
    for layer in layers:
        handles += [module.register_forward_hook(on_output) for module in sublayer_outputs(layer)]
    return HookGroup(handles)


@contextmanager
def ablation(model: nn.Module, direction: torch.Tensor | None) -> Iterator[None]:
    """Ablate ``direction`` inside the block (nothing when it is None)."""
    group = attach_ablation(model, direction) if direction is not None else HookGroup([])
    try:
        yield
    finally:
        group.remove()


def refusal_flags(
    model: nn.Module, processor: Any, samples: Sequence[Sample], judge: Judge, generation: GenerationConfig
) -> tuple[list[bool], list[str]]:
    """Whether each sample's greedy answer is a refusal (``judge`` decides ``"refusal"``), and the answers."""
    answers: list[str] = []
    for chunk in batches(list(samples), generation.batch_size):
        answers += generate_batch(model, processor, chunk, generation)
    items = [JudgeInput(s.question, a, s.image, dict(s.meta)) for s, a in zip(samples, answers, strict=True)]
    verdicts: list[dict[str, Any]] = []
    for start in range(0, len(items), judge.batch_size):
        verdicts += judge.judge_batch(items[start : start + judge.batch_size])
    return [v.get("decision") == "refusal" for v in verdicts], answers


@torch.no_grad()
def next_token_kl(
    model: nn.Module, processor: Any, samples: Sequence[Sample], direction: torch.Tensor, batch_size: int = 16
) -> float:
    """Mean KL(plain || ablated) of the next-token distribution at the end of each prompt."""
    from mirage.data.collate import LABEL_KEYS, META_KEYS, VLMCollator

    collate = VLMCollator(processor, train=False)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for chunk in batches(list(samples), batch_size):
        batch = collate(list(chunk))
        inputs = {
            k: v.to(device) if isinstance(v, torch.Tensor) else v
            for k, v in batch.items()
            if k not in META_KEYS and k not in LABEL_KEYS
        }
        plain = model(**inputs, use_cache=False).logits[:, -1].double().log_softmax(-1)
        with ablation(model, direction):
            ablated = model(**inputs, use_cache=False).logits[:, -1].double().log_softmax(-1)
        total += float((plain.exp() * (plain - ablated)).sum(-1).sum())
        count += len(chunk)
    return total / max(count, 1)


def candidate_layers(n_layers: int, max_candidates: int = 5, max_depth: float = MAX_DEPTH) -> list[int]:
    """Up to ``max_candidates`` layers evenly spread over ``[0, max_depth * n_layers)``."""
    allowed = [layer for layer in range(n_layers) if layer < max_depth * n_layers] or [0]
    if max_candidates >= len(allowed):
        return allowed
    step = (len(allowed) - 1) / max(max_candidates - 1, 1)
    return sorted({allowed[round(i * step)] for i in range(max_candidates)})


@dataclass
class RefusalDirection:
    """The chosen direction (raw difference of means) and how it was chosen."""

    layer: int
    direction: torch.Tensor
    candidates: list[dict[str, Any]] = field(default_factory=list)  # per candidate: layer, refusal, kl, norm
    baseline_refusal: float | None = None  # held-out harmful prompts' refusal rate, nothing ablated

    @property
    def unit(self) -> torch.Tensor:
        return self.direction / self.direction.norm()

    def save(self, path: str | Path) -> Path:
        return save_direction(self.direction, path, layer=self.layer, kind="refusal_difference_of_means")


def find_refusal_direction(
    model: nn.Module,
    processor: Any,
    harmful: Sequence[Sample],
    harmless: Sequence[Sample],
    *,
    layer: int | None = None,
    candidates: Sequence[int] | None = None,
    held_out_harmful: Sequence[Sample] = (),
    held_out_harmless: Sequence[Sample] = (),
    judge: Judge | None = None,
    generation: GenerationConfig | None = None,
    batch_size: int = 16,
) -> RefusalDirection:
    """The refusal direction at ``layer``, or at the candidate layer whose ablation lowers the held-out
    harmful prompts' refusal rate most (see the module docstring)."""
    n_layers = len(decoder_layers(model))
    layers = [layer] if layer is not None else list(candidates or candidate_layers(n_layers))
    for index in layers:
        if not 0 <= index < n_layers:
            raise IndexError(
                f"refusal direction layer {index}: the language model has {n_layers} decoder layers"
            )
    acts_harmful = last_token_activations(model, processor, harmful, layers, batch_size)
    acts_harmless = last_token_activations(model, processor, harmless, layers, batch_size)
    directions = {index: difference_of_means(acts_harmful[index], acts_harmless[index]) for index in layers}
    if len(layers) == 1:
        return RefusalDirection(layers[0], directions[layers[0]])
    if not held_out_harmful:
        raise ValueError("choosing the refusal direction's layer needs held-out harmful prompts")
    if judge is None:
        from mirage.evaluation.judges.keyword import KeywordRefusalJudge

        judge = KeywordRefusalJudge()
    generation = generation or GenerationConfig(max_new_tokens=32, batch_size=batch_size)
    baseline = refusal_flags(model, processor, held_out_harmful, judge, generation)[0]
    if not any(baseline):
        log.warning(
            "the model refuses none of the %d held-out harmful prompts: no refusal to remove; the "
            "layer is chosen by the KL divergence on harmless prompts alone",
            len(baseline),
        )
    rows = []
    for index in layers:
        with ablation(model, directions[index]):
            flags = refusal_flags(model, processor, held_out_harmful, judge, generation)[0]
        kl = (
            next_token_kl(model, processor, held_out_harmless, directions[index], batch_size)
            if held_out_harmless
            else 0.0
        )
        rows.append(
            {
                "layer": index,
                "refusal": sum(flags) / len(flags),
                "kl": kl,
                "norm": float(directions[index].norm()),
            }
        )
        log.info(
            "refusal direction at layer %d: refusal %.3f ablated, KL %.4f", index, rows[-1]["refusal"], kl
        )
    best = min(rows, key=lambda row: (row["refusal"], row["kl"], row["layer"]))
    return RefusalDirection(best["layer"], directions[best["layer"]], rows, sum(baseline) / len(baseline))


class RefusalAblation:
    """Config-built steering (``configs/steering/ablate_refusal.yaml``): ablate a saved refusal direction from
    the residual stream at every layer and position for the rest of the run."""

    def __init__(self, direction_path: str | Path) -> None:
        self.direction_path = Path(direction_path)
        self.direction: torch.Tensor | None = None

    def attach(self, model: nn.Module, processor: Any) -> HookGroup:
        if self.direction is None:
            self.direction = load_direction(self.direction_path)
        log.info("ablating the refusal direction %s at every layer", self.direction_path)
        return attach_ablation(model, self.direction)

    @contextmanager
    def applied(self, model: nn.Module, processor: Any) -> Iterator[None]:
        group = self.attach(model, processor)
        try:
            yield
        finally:
            group.remove()
