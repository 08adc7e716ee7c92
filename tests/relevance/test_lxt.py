"""AttnLRP and CP-LRP against the authors' package, lxt 2.1, on torchvision's ViT.

lxt's efficient mode patches torchvision's classes globally (``nn.GELU``, ``nn.LayerNorm``,
``nn.MultiheadAttention``) and computes relevance as Gradient × Input with a unit gradient on
the target logit; linear layers and the patch convolution keep their plain gradient, which is
LRP-0 (the ε-rule with ε → 0), so our maps are computed with a tiny ε here. Its default map for
torchvision ViTs is ``cp_LRP`` (attention probabilities constant); AttnLRP proper inside the
attention is lxt's ``wrap_attention_forward`` (``divide_gradient`` by 4, 4 and 2 on queries,
keys and values, the softmax left to its own gradient), which lxt wires up for Hugging Face
attention functions only, so the test applies that same lxt rule to the torchvision module.
The patched classes are restored after each call.
"""

from __future__ import annotations

import copy
import sys
import types

import pytest
import torch
from torch import nn

from attnexplain.methods.attnlrp import AttnLRP
from tests.conftest import CLASSES, shared_family

pytest.importorskip("torchvision")
pytest.importorskip("lxt", reason="lxt is installed by `make setup` (pip install --no-deps lxt)")
pytest.importorskip("zennit", reason="lxt.efficient imports zennit (the lrp-reference extra)")

_PATCHED = (nn.GELU, nn.LayerNorm, nn.MultiheadAttention)


def _import_lxt_efficient():
    """``lxt.efficient`` without its BERT patch module.

    Narrow shim: ``lxt/efficient/models/__init__.py`` imports ``models/bert.py``, which imports
    ``transformers.modeling_attn_mask_utils`` (removed in transformers 5). BERT is not used here,
    so a stand-in module takes its place in ``sys.modules`` for the import only.
    """
    name = "lxt.efficient.models.bert"
    stand_in = types.ModuleType(name)
    stand_in.modeling_bert = types.ModuleType("transformers.models.bert.modeling_bert")
    stand_in.attnLRP = {}
    previous = sys.modules.get(name)
    sys.modules[name] = stand_in
    try:
        from lxt.efficient import monkey_patch
        from lxt.efficient.rules import divide_gradient
    finally:
        if previous is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = previous
    return monkey_patch, divide_gradient


def lxt_relevance(model: nn.Module, x: torch.Tensor, targets: list[int], attnlrp: bool):
    """lxt's pixel relevance, summed over channels: ``(B, 1, H, W)``."""
    from torchvision.models import vision_transformer

    monkey_patch, divide_gradient = _import_lxt_efficient()
    saved = {cls: dict(cls.__dict__) for cls in _PATCHED}
    patched = copy.deepcopy(model).requires_grad_(False)
    try:
        monkey_patch(vision_transformer)
        if attnlrp:

            def attention_forward(self, query, key, value, *args, **kwargs):
                return self.original_forward(
                    divide_gradient(query, 4), divide_gradient(key, 4), divide_gradient(value, 2),
                    *args, **kwargs,
                )  # fmt: skip

            nn.MultiheadAttention.forward = attention_forward
        inputs = x.clone().requires_grad_(True)
        logits = patched(inputs)
        logits[torch.arange(len(targets)), torch.tensor(targets)].sum().backward()
        return (inputs * inputs.grad).sum(dim=1, keepdim=True)
    finally:
        for cls, attributes in saved.items():
            for name in set(cls.__dict__) - set(attributes):
                delattr(cls, name)
            for name, value in attributes.items():
                if cls.__dict__.get(name) is not value:
                    setattr(cls, name, value)


@pytest.mark.parametrize("variant", ["cp-lrp", "attnlrp"])
def test_attnlrp_matches_lxt_on_torchvision(variant):
    model = shared_family("torchvision").model
    forwards = {cls: cls.forward for cls in _PATCHED}
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for targets in ([1, 3], [0, CLASSES - 1]):
        expected = lxt_relevance(model, x, targets, attnlrp=variant == "attnlrp")
        assert {cls: cls.forward for cls in _PATCHED} == forwards  # lxt's patches undone
        got = AttnLRP(model, variant=variant, epsilon=1e-9).attribute(x, target=targets)
        scale = expected.abs().max()
        assert (got - expected).abs().max() <= 1e-4 * scale
        assert scale > 0 and (expected < 0).any()  # signed, non-trivial maps


def test_cp_lrp_and_attnlrp_differ_inside_the_attention():
    model = shared_family("torchvision").model
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    cp = lxt_relevance(model, x, [2], attnlrp=False)
    attn = lxt_relevance(model, x, [2], attnlrp=True)
    assert not torch.allclose(cp, attn, rtol=1e-2, atol=1e-6)
    torch.testing.assert_close(
        AttnLRP(model, epsilon=1e-9).attribute(x, target=2),
        attn,
        rtol=1e-3,
        atol=1e-4 * attn.abs().max().item(),
    )
