"""PCA of activation differences (fine-tuned minus base, same inputs): how many directions hold the change.

By default the differences are *not* centred: a shift that every input shares is part of what
fine-tuning did, and centring would erase it. ``center=True`` gives classical PCA of the spread.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from mirage.utils.io import write_json

THRESHOLDS = (0.5, 0.9)


@dataclass
class PCAResult:
    """Explained-variance curve of one site's differences."""

    n_samples: int
    dim: int
    total_variance: float  # mean squared norm of the (centred, if asked) differences
    ratio: list[float] = field(default_factory=list)  # explained-variance ratio per component
    cumulative: list[float] = field(default_factory=list)
    components_for: dict[str, int] = field(default_factory=dict)  # "0.5" -> k, "0.9" -> k

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def components_needed(cumulative: list[float], threshold: float) -> int:
    """The smallest k whose first k components explain at least ``threshold`` (0 when nothing changed)."""
    for k, value in enumerate(cumulative, start=1):
        if value >= threshold - 1e-9:
            return k
    return len(cumulative)


def pca(
    diffs: torch.Tensor, center: bool = False, thresholds: tuple[float, ...] = THRESHOLDS, tol: float = 1e-10
) -> PCAResult:
    """PCA of ``[N, H]`` differences through an SVD in float64 (no scikit-learn).

    Differences whose total variance is below ``tol`` (e.g. a frozen vision tower) give an empty
    curve and 0 components, instead of ratios of rounding noise.
    """
    if diffs.dim() != 2:
        raise ValueError(f"expected [N, H] differences, got shape {tuple(diffs.shape)}")
    x = diffs.detach().to(torch.float64)
    n, dim = x.shape
    if center and n > 0:
        x = x - x.mean(0, keepdim=True)
    total = float((x**2).sum() / max(n, 1))
    result = PCAResult(n_samples=n, dim=dim, total_variance=total)
    if n == 0 or total < tol:
        result.components_for = {str(t): 0 for t in thresholds}
        return result
    singular = torch.linalg.svdvals(x)
    energy = singular**2
    ratio = energy / energy.sum()
    result.ratio = ratio.tolist()
    result.cumulative = torch.cumsum(ratio, 0).tolist()
    result.components_for = {str(t): components_needed(result.cumulative, t) for t in thresholds}
    return result


def write_pca(results: dict[str, PCAResult], out_dir: str | Path, title: str = "") -> tuple[Path, Path]:
    """``explained_variance.json`` and ``explained_variance.png`` (one cumulative curve per site)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "explained_variance.json"
    write_json(json_path, {site: r.to_dict() for site, r in results.items()})
    fig, ax = plt.subplots(figsize=(6, 4))
    for site, result in results.items():
        if result.cumulative:
            k = range(1, len(result.cumulative) + 1)
            ax.plot(k, result.cumulative, marker=".", label=f"{site} (k90={result.components_for['0.9']})")
    for threshold in THRESHOLDS:
        ax.axhline(threshold, color="gray", lw=0.5, ls="--")
    ax.set(xlabel="principal components", ylabel="cumulative explained variance", ylim=(0, 1.02))
    ax.set_xscale("log")
    ax.set_title(title or "PCA of activation differences (fine-tuned - base)")
    ax.legend(fontsize=7)
    png_path = out_dir / "explained_variance.png"
    fig.tight_layout()
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return json_path, png_path
