"""PCA recovers a planted subspace; steering removes a planted direction; z-scoring beats an outlier."""

from __future__ import annotations

import math

import pytest
import torch

from mirage.analysis.pca import components_needed, pca
from mirage.analysis.steering import mean_difference, steer_hidden, steering


def _planted(n: int, dim: int, singular: list[float], seed: int = 0) -> torch.Tensor:
    """An [n, dim] matrix U diag(s) V^T with orthonormal U, V: its spectrum is exactly ``singular``."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(n, len(singular), generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(dim, len(singular), generator=g, dtype=torch.float64))
    return u @ torch.diag(torch.tensor(singular, dtype=torch.float64)) @ v.T


def test_pca_recovers_a_planted_rank_r_difference():
    base = torch.randn(200, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    # Energies 9, 4, 2.25 of 15.25: 2 components hold 85% (< 90%), 3 hold all of it.
    tuned = base + _planted(200, 64, [3.0, 2.0, 1.5]) + 1e-6 * torch.randn(200, 64, dtype=torch.float64)
    result = pca(tuned - base)
    assert result.components_for["0.9"] == 3
    assert result.components_for["0.5"] == 1  # 9 / 15.25 = 59%
    assert result.cumulative[1] == pytest.approx(13 / 15.25, abs=1e-6)
    assert result.cumulative[2] == pytest.approx(1.0, abs=1e-6)
    assert result.ratio[0] == pytest.approx(9 / 15.25, abs=1e-6)


def test_pca_centering_and_an_unchanged_component():
    shift = torch.zeros(10, 4)
    shift[:, 2] = 5.0  # every input moved the same way: one direction uncentred, nothing centred
    assert pca(shift).components_for == {"0.5": 1, "0.9": 1}
    assert pca(shift, center=True).components_for == {"0.5": 0, "0.9": 0}
    frozen = pca(torch.zeros(6, 8))  # e.g. a frozen vision tower
    assert frozen.ratio == [] and frozen.components_for["0.9"] == 0 and frozen.total_variance == 0.0
    assert components_needed([0.2, 0.6, 0.95], 0.9) == 3


def test_steering_add_and_project_remove_a_planted_direction():
    torch.manual_seed(0)
    direction = torch.nn.functional.normalize(torch.randn(16), dim=0)
    clean = torch.randn(2, 5, 16)
    clean = clean - (clean @ direction)[..., None] * direction  # no component along the direction
    planted = clean + 3.0 * direction
    assert torch.allclose(steer_hidden(planted, direction, -3.0, "add"), clean, atol=1e-6)
    varied = clean + torch.randn(2, 5, 1) * direction  # a different amount at each position
    assert torch.allclose(steer_hidden(varied, direction, 1.0, "project"), clean, atol=1e-6)
    half = steer_hidden(varied, direction, 0.5, "project") @ direction
    assert torch.allclose(half, 0.5 * (varied @ direction), atol=1e-6)
    with pytest.raises(ValueError, match="mode"):
        steer_hidden(planted, direction, 1.0, "flip")


def test_z_scoring_ignores_an_outlier_channel():
    g = torch.Generator().manual_seed(0)
    n, dim = 400, 8
    safe, harmful = torch.randn(n, dim, generator=g) * 0.1, torch.randn(n, dim, generator=g) * 0.1
    harmful[:, 3] += 1.0  # the real difference: channel 3, ten standard deviations
    outlier = 1000.0  # channel 0 spreads a thousand times wider and carries no signal
    safe[:, 0] *= outlier * 10
    harmful[:, 0] *= outlier * 10
    raw = mean_difference(harmful, safe, zscore=False)
    z = mean_difference(harmful, safe, zscore=True)
    assert abs(raw[0]) > 0.9  # the raw mean difference is mostly noise from the outlier channel
    assert abs(z[3]) > 0.99 and z[3] > 0  # z-scored, it points at the planted channel
    assert math.isclose(float(z.norm()), 1.0, rel_tol=1e-5)


def test_steering_hook_on_a_real_decoder_layer(tiny_llava, processor):
    """A hook at layer 1 adds coeff * u to that layer's output; removing it restores the model."""
    from mirage.analysis.activations import collect_activations
    from mirage.data.records import Sample

    model, _ = tiny_llava
    samples = [Sample("a", "what is shown?", None), Sample("b", "describe the picture.", None)]
    site = "language_model.1"
    before = collect_activations(model, processor, samples, [site], pooling="last")[site]
    direction = torch.nn.functional.normalize(torch.randn(before.shape[1]), dim=0)
    with steering(model, 1, direction, coeff=-2.5, mode="add"):
        steered = collect_activations(model, processor, samples, [site], pooling="last")[site]
    after = collect_activations(model, processor, samples, [site], pooling="last")[site]
    assert torch.allclose(steered, before - 2.5 * direction, atol=1e-5)
    assert torch.allclose(after, before)
    with steering(model, 1, direction, coeff=1.0, mode="project"):
        projected = collect_activations(model, processor, samples, [site], pooling="last")[site]
    assert torch.allclose(projected @ direction, torch.zeros(2), atol=1e-5)
