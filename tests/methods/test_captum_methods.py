"""Captum's own gradient methods on the supported families, through ``forward_function``."""

from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients, Saliency

from attnexplain.capture import UnsupportedModelError
from attnexplain.methods._gradients import forward_function

FAMILIES = ["hf_vit", "timm", "torchvision"]
TARGETS = [1, 3]


def _inputs(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _model_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The family's own call, written out independently of the adapters."""
    return model(pixel_values=x).logits if hasattr(model, "config") else model(x)


def _target_logits(logits: torch.Tensor) -> torch.Tensor:
    return logits[torch.arange(len(TARGETS)), torch.tensor(TARGETS)]


@pytest.mark.parametrize("family", FAMILIES, indirect=True)
def test_forward_function_returns_the_models_logits(family):
    x = _inputs()
    with torch.no_grad():
        got = forward_function(family.model)(x)
        expected = _model_logits(family.model, x)
    assert got.shape == (2, 5)
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("family", FAMILIES, indirect=True)
def test_integrated_gradients_is_complete(family):
    x, baseline = _inputs(), torch.zeros(2, 3, 32, 32)
    ig = IntegratedGradients(forward_function(family.model))
    attributions, delta = ig.attribute(
        x, baselines=baseline, target=TARGETS, n_steps=24, return_convergence_delta=True
    )
    assert attributions.shape == x.shape
    with torch.no_grad():
        gap = _target_logits(_model_logits(family.model, x)) - _target_logits(
            _model_logits(family.model, baseline)
        )
    # Completeness (Sundararajan et al. 2017): attributions sum to f(x) - f(baseline), up to the
    # quadrature error of n_steps, which Captum reports as the convergence delta. Randomly
    # initialised HF models are nearly flat (gaps ~1e-5), hence a relative tolerance.
    tolerance = 0.02 * gap.abs() + 1e-7
    assert (attributions.sum(dim=(1, 2, 3)) - gap).abs().le(tolerance).all()
    assert delta.abs().le(tolerance).all()
    assert (gap.abs() > 10 * 1e-7).all()  # the absolute slack is small next to the gap
    assert all(p.grad is None for p in family.model.parameters())


@pytest.mark.parametrize("family", FAMILIES, indirect=True)
def test_saliency_is_the_absolute_input_gradient(family):
    x = _inputs()
    got = Saliency(forward_function(family.model)).attribute(x.clone().requires_grad_(), TARGETS)
    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(_target_logits(_model_logits(family.model, leaf)).sum(), leaf)
    assert got.shape == x.shape
    torch.testing.assert_close(got, grad.abs())
    assert all(p.grad is None for p in family.model.parameters())


@pytest.mark.parametrize("family", ["hf_vit_backbone"], indirect=True)
def test_forward_function_of_a_backbone_says_it_has_no_head(family):
    with pytest.raises(UnsupportedModelError, match="no classification head"):
        IntegratedGradients(forward_function(family.model)).attribute(_inputs(), target=0)
