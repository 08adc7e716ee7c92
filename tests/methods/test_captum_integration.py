"""The attention methods plug into Captum's visualisation and metrics."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import pytest
import torch
from captum.attr import Attribution
from captum.attr import visualization as captum_viz
from captum.metrics import infidelity, sensitivity_max
from matplotlib.figure import Figure

from attnexplain import AttentionRollout, MeanAttentionDistance, RawCLSAttention
from attnexplain.viz import image_to_captum, to_captum


@pytest.fixture
def hf_vit(fresh_family):
    return fresh_family("hf_vit").model


def test_methods_are_captum_attributions(hf_vit):
    for method in (RawCLSAttention, AttentionRollout, MeanAttentionDistance):
        explainer = method(hf_vit)
        assert isinstance(explainer, Attribution)
        logits = explainer.forward_func(torch.randn(2, 3, 32, 32))
        assert logits.shape == (2, 5)
    assert RawCLSAttention.get_name() == "Raw CLS Attention"


def test_blended_heat_map_draws(hf_vit):
    image = torch.rand(3, 32, 32)
    attribution = AttentionRollout(hf_vit).attribute(image[None])[0]
    heat = to_captum(attribution)
    assert heat.shape == (32, 32, 1)
    figure, _ = captum_viz.visualize_image_attr(
        heat, image_to_captum(image), method="blended_heat_map", sign="positive",
        use_pyplot=False,
    )  # fmt: skip
    assert isinstance(figure, Figure)


def _perturb(inputs: torch.Tensor):
    noise = torch.randn_like(inputs) * 0.05
    return noise, inputs - noise


@pytest.mark.parametrize("method", [RawCLSAttention, AttentionRollout])
def test_captum_infidelity_and_sensitivity_run(hf_vit, method):
    explainer = method(hf_vit)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    attributions = explainer.attribute(x).expand(-1, 3, -1, -1)
    score = infidelity(
        explainer.forward_func, _perturb, x, attributions, target=1, n_perturb_samples=4
    )
    assert score.shape == (2,) and torch.isfinite(score).all()
    sensitivity = sensitivity_max(explainer.attribute, x, n_perturb_samples=3, perturb_radius=0.02)
    assert sensitivity.shape == (2,) and torch.isfinite(sensitivity).all()
    assert (sensitivity > 0).all()
