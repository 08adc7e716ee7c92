"""Cascading randomisation on a tiny conv model with gradient × input maps."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from attnexplain.metrics import cascading_randomization, default_layer_order


def tiny_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),
    )


def gradient_times_input(
    model: nn.Module, images: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    images = images.clone().requires_grad_()
    model(images).gather(1, target[:, None]).sum().backward()
    return (images.grad * images).sum(dim=1, keepdim=True)


IMAGES = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(1))
TARGET = torch.tensor([0, 1, 2])


def test_correlation_starts_at_one_and_drops() -> None:
    steps = cascading_randomization(tiny_model(), gradient_times_input, IMAGES, TARGET)
    assert [step["layer"] for step in steps] == [None, "6", "2", "0"]
    assert [step["randomized"] for step in steps] == [(), ("6",), ("6", "2"), ("6", "2", "0")]
    assert torch.equal(steps[0]["spearman"], torch.ones(3, dtype=torch.float64))
    assert torch.equal(steps[0]["spearman_abs"], torch.ones(3, dtype=torch.float64))
    assert all(step["spearman"].mean() < 0.5 for step in steps[1:])
    assert steps[-1]["spearman"].abs().max() < 0.5
    for step in steps:
        assert step["spearman"].shape == (3,) and step["spearman"].dtype == torch.float64
        assert step["maps"].shape == (3, 1, 12, 12)


def test_original_maps_match_the_callers_model() -> None:
    model = tiny_model()
    steps = cascading_randomization(model, gradient_times_input, IMAGES, TARGET, layers=["6"])
    assert torch.allclose(steps[0]["maps"], gradient_times_input(tiny_model(), IMAGES, TARGET))


def test_callers_model_and_rng_are_untouched() -> None:
    model = tiny_model()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    model[0].weight.requires_grad_(False)
    rng = torch.get_rng_state()
    cascading_randomization(model, gradient_times_input, IMAGES, TARGET)
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    assert all(parameter.grad is None for parameter in model.parameters())
    assert model[0].weight.requires_grad is False and model[2].weight.requires_grad is True
    assert torch.equal(torch.get_rng_state(), rng)


def test_seeded_and_reproducible() -> None:
    def run(seed: int) -> torch.Tensor:
        steps = cascading_randomization(
            tiny_model(), gradient_times_input, IMAGES, TARGET, seed=seed
        )
        return torch.stack([step["spearman"] for step in steps])

    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_explicit_layers() -> None:
    steps = cascading_randomization(
        tiny_model(), gradient_times_input, IMAGES, TARGET, layers=["0"]
    )
    assert [step["layer"] for step in steps] == [None, "0"]


def test_parameters_without_reset_are_redrawn() -> None:
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1, 3, 1, 1))  # no reset_parameters

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x * self.scale).mean(dim=(2, 3))

    seen: list[nn.Module] = []

    def explain(model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        seen.append(model)
        return images * model.scale

    model = Scaled()
    cascading_randomization(model, explain, IMAGES, TARGET)
    working = seen[-1]
    assert working is not model and torch.equal(model.scale, torch.ones(1, 3, 1, 1))
    assert working.scale.abs().max() < 0.2  # trunc_normal_(std=0.02)


def test_constant_map_has_zero_correlation_without_warnings() -> None:
    calls = []

    def explain(model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        calls.append(None)
        if len(calls) == 1:
            return images[:, :1]
        return torch.zeros_like(images[:, :1])

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        steps = cascading_randomization(tiny_model(), explain, IMAGES, TARGET, layers=["6"])
    assert torch.equal(steps[1]["spearman"], torch.zeros(3, dtype=torch.float64))


class TestDefaultLayerOrder:
    def test_sequential(self) -> None:
        assert default_layer_order(tiny_model()) == ["6", "2", "0"]

    def test_transformer_like(self) -> None:
        class Block(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.norm = nn.LayerNorm(4)
                self.mlp = nn.Linear(4, 4)

        class PatchEmbed(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.proj = nn.Conv2d(3, 4, 2, stride=2)

        class Vit(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
                self.patch_embed = PatchEmbed()
                self.blocks = nn.ModuleList([Block(), Block()])
                self.act = nn.GELU()
                self.norm = nn.LayerNorm(4)
                self.head = nn.Linear(4, 2)

        # Blocks stay whole; the root's own tokens are randomised last, with what is left.
        assert default_layer_order(Vit()) == [
            "head",
            "norm",
            "blocks.1",
            "blocks.0",
            "patch_embed.proj",
            "",
        ]

    def test_single_layer_model(self) -> None:
        assert default_layer_order(nn.Linear(3, 2)) == [""]


class TestValidation:
    @pytest.mark.parametrize(
        ("layers", "message"),
        [
            (["7"], r"no module named '7' in the model; the default order is \['6', '2', '0'\]"),
            (["1"], r"module '1' has no parameters"),
            ([], r"at least one module"),
            (["6", "6"], r"must not repeat a module, got \['6'\]"),
        ],
    )
    def test_layers(self, layers: list[str], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            cascading_randomization(
                tiny_model(), gradient_times_input, IMAGES, TARGET, layers=layers
            )

    def test_explain_fn_not_callable(self) -> None:
        with pytest.raises(TypeError, match="explain_fn must be callable"):
            cascading_randomization(tiny_model(), None, IMAGES, TARGET)  # type: ignore[arg-type]

    def test_explain_fn_returns_a_tensor(self) -> None:
        with pytest.raises(TypeError, match=r"explain_fn must return a torch\.Tensor, got list"):
            cascading_randomization(tiny_model(), lambda m, x, t: [], IMAGES, TARGET)

    def test_explain_fn_changes_shape(self) -> None:
        calls = []

        def explain(model: nn.Module, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            calls.append(None)
            return torch.rand(3, 1, 12, 12 if len(calls) == 1 else 6)

        with pytest.raises(ValueError, match=r"with '6' randomised, expected \(3, 1, 12, 12\)"):
            cascading_randomization(tiny_model(), explain, IMAGES, TARGET)

    def test_explain_fn_returns_nan(self) -> None:
        with pytest.raises(ValueError, match="NaN or infinite maps for the original model"):
            cascading_randomization(tiny_model(), lambda m, x, t: x[:, :1] / 0.0, IMAGES, TARGET)
