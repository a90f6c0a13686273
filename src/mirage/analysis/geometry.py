"""Where fine-tuning changed a model: PCA of (fine-tuned - base) activations, per site and per component.

Both models see the same prompts; each site's pooled activations are subtracted row by row. A
component's curve (``vision_tower``, ``projector``, ``language_model``) stacks the difference rows
of all its chosen layers, so it counts the directions the change spans across those layers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mirage.analysis.activations import collect_activations
from mirage.analysis.pca import PCAResult, pca
from mirage.data.records import Sample


def component_of_site(site: str) -> str:
    return site.partition(".")[0]


def activation_differences(
    tuned: dict[str, torch.Tensor], base: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """site -> ``tuned - base`` (the same inputs, so rows correspond)."""
    diffs = {}
    for site, rows in tuned.items():
        if rows.shape != base[site].shape:
            raise ValueError(f"site {site}: tuned {tuple(rows.shape)} vs base {tuple(base[site].shape)}")
        diffs[site] = rows - base[site]
    return diffs


def geometry(
    diffs: dict[str, torch.Tensor], center: bool = False
) -> tuple[dict[str, PCAResult], dict[str, PCAResult]]:
    """(per-site results, per-component results)."""
    per_site = {site: pca(d, center=center) for site, d in diffs.items() if d.numel()}
    stacked: dict[str, list[torch.Tensor]] = {}
    for site, d in diffs.items():
        if d.numel():
            stacked.setdefault(component_of_site(site), []).append(d)
    per_component = {c: pca(torch.cat(rows), center=center) for c, rows in stacked.items()}
    return per_site, per_component


def model_activations(
    model: torch.nn.Module,
    processor: Any,
    samples: Sequence[Sample],
    sites: Sequence[str],
    pooling: str = "mean",
    batch_size: int = 16,
) -> dict[str, torch.Tensor]:
    """Prompt activations (as at generation time) at every site."""
    return collect_activations(model, processor, samples, sites, pooling=pooling, batch_size=batch_size)
