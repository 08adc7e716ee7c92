"""Diagnostics figures: headless, drawing exactly the report's numbers."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from attnexplain.diagnostics import ArtifactDiagnostics
from attnexplain.viz import artifact_overlay, artifact_scores_plot, norm_histograms
from tests.conftest import shared_family
from tests.diagnostics.helpers import planted

PLANTED = [[4 + 5], [4 + 0, 4 + 13]]  # hf_dinov2_registers: 4 prefix tokens, 4 x 4 patches


@pytest.fixture(scope="module")
def report():
    family = shared_family("hf_dinov2_registers")
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with planted(family, PLANTED):
        return ArtifactDiagnostics(family.model).diagnose(x)


@pytest.fixture(autouse=True)
def no_pyplot_figures():
    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before


def _bar_heights(ax) -> np.ndarray:
    return np.array([patch.get_height() for patch in ax.patches])


def test_histograms_count_every_patch_token_and_stack_the_flagged_ones(report):
    fig = norm_histograms(report, bins=10)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    for ax in fig.axes:
        heights = _bar_heights(ax)
        assert heights.sum() == pytest.approx(2 * 16)  # every patch token of both images once
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    # The second (stacked, red) series holds the 3 flagged tokens, in every panel.
    for ax in fig.axes:
        assert _bar_heights(ax)[10:].sum() == pytest.approx(3)
    thresholds = [
        line.get_xdata()[0] for line in fig.axes[-1].lines if line.get_linestyle() == "--"
    ]
    assert sorted(thresholds) == pytest.approx(sorted(report.thresholds.tolist()))
    # CLS and the 3 registers are drawn as ticks at their norms in every panel.
    ticks = [line for line in fig.axes[0].lines if line.get_marker() == "|"]
    assert len(ticks) == 4
    np.testing.assert_allclose(ticks[1].get_xdata(), report.norms[:, 0, 1].numpy(), rtol=1e-6)


def test_histograms_pick_layers_and_validate(report):
    assert [ax.get_title() for ax in norm_histograms(report, layers=[-1]).axes] == [
        "layer 2 (detection)"
    ]
    with pytest.raises(ValueError, match="layer 5 is out of range for a model with 3 layers"):
        norm_histograms(report, layers=[5])
    with pytest.raises(ValueError, match="bins must be at least 2"):
        norm_histograms(report, bins=1)


def test_overlay_outlines_exactly_the_detected_patches(report):
    image = torch.rand(3, 32, 32)
    fig = artifact_overlay(image, report, 1, cleaned=torch.rand(1, 4, 4))
    assert [ax.get_title() for ax in fig.axes] == [
        "image (2 high-norm tokens)", "token norms, layer 2", "CLS attention, layer 2", "cleaned",
    ]  # fmt: skip
    for ax in fig.axes[1:]:
        corners = sorted((p.get_x(), p.get_y()) for p in ax.patches)
        assert corners == [(-0.5, -0.5), (8 - 0.5, 24 - 0.5)]  # (row 0, col 0), (row 3, col 1)
    norms = report.norms[1, -1, 4:].reshape(4, 4).double()
    expected = ((norms - norms.min()) / (norms.max() - norms.min())).numpy()
    drawn = fig.axes[1].images[1].get_array()
    np.testing.assert_allclose(drawn[::8, ::8], expected, rtol=1e-6)  # nearest: one cell a patch
    with pytest.raises(ValueError, match="index 2 is out of range for a report of 2 images"):
        artifact_overlay(image, report, 2)


def test_scores_plot_draws_the_batch_mean_shares(report):
    fig = artifact_scores_plot(report)
    titles = [ax.get_title() for ax in fig.axes[:2]]
    assert titles == ["share on high-norm tokens", "share on registers"]
    np.testing.assert_allclose(
        fig.axes[0].images[0].get_array(), report.artifact_share.mean(0).numpy(), rtol=1e-6
    )
    np.testing.assert_allclose(
        fig.axes[1].images[0].get_array(), report.register_share.mean(0).numpy(), rtol=1e-6
    )


def test_scores_plot_needs_a_measured_query():
    report = ArtifactDiagnostics(shared_family("hf_vit").model, query=None).diagnose(
        torch.randn(1, 3, 32, 32)
    )
    with pytest.raises(ValueError, match="measured no attention"):
        artifact_scores_plot(report)
    assert len(artifact_overlay(torch.rand(3, 32, 32), report).axes) == 2
