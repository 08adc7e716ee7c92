"""High-norm detection and artifact scores on models whose answer is known (planted tokens)."""

from __future__ import annotations

import json

import pytest
import torch

from attnexplain.capture import UnsupportedModelError
from attnexplain.diagnostics import ArtifactDiagnostics, AttentionQuery
from tests.conftest import ALL_FAMILIES, FIXED_SIZE_FAMILIES, NO_CLS_FAMILIES, shared_family
from tests.diagnostics.helpers import planted, reference_attentions, reference_norms

REGISTER_FAMILIES = {"hf_dinov2_registers": [1, 2, 3], "timm_registers": [1, 2]}
CLS_FAMILIES = [name for name in ALL_FAMILIES if name not in NO_CLS_FAMILIES]
#: (row, col) planted per image: one token in image 0, two in image 1.
PLANTED = [[(1, 2)], [(0, 0), (3, 1)]]


def _inputs(size: tuple[int, int] = (32, 32), batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(7))


def _tokens(positions: list[list[tuple[int, int]]], prefix: int, width: int) -> list[list[int]]:
    return [[prefix + row * width + col for row, col in image] for image in positions]


def _sizes(name: str) -> list[tuple[int, int]]:
    return [(32, 32)] if name in FIXED_SIZE_FAMILIES else [(32, 32), (40, 48)]


#: Image–text families at their own size: SigLIP (no CLS, nothing registered) and OpenCLIP.
IMAGE_TEXT_CASES = [("hf_siglip_model", (32, 32)), ("open_clip", (32, 32))]


@pytest.mark.parametrize(
    ("name", "size"),
    [(name, size) for name in ALL_FAMILIES for size in _sizes(name)] + IMAGE_TEXT_CASES,
)
def test_gap_rule_finds_exactly_the_planted_tokens(name, size):
    family = shared_family(name)
    width = size[1] // 8
    with planted(family, _tokens(PLANTED, family.num_prefix_tokens, width)):
        report = ArtifactDiagnostics(family.model).diagnose(_inputs(size))
    assert [sorted(report.positions(b)) for b in range(2)] == [sorted(p) for p in PLANTED]
    assert report.high_norm[:, : family.num_prefix_tokens].sum() == 0
    assert (report.separations > 3).all()


@pytest.mark.parametrize("name", ALL_FAMILIES)
def test_unplanted_models_have_no_high_norm_tokens(name):
    report = ArtifactDiagnostics(shared_family(name).model).diagnose(_inputs())
    assert report.high_norm.sum() == 0
    assert torch.isinf(report.thresholds).all()


@pytest.mark.parametrize("name", ALL_FAMILIES)
def test_fixed_threshold_finds_the_planted_tokens(name):
    family = shared_family(name)
    x = _inputs()
    prefix = family.num_prefix_tokens
    clean = reference_norms(family, x)[:, -1, prefix:]
    threshold = 10 * float(clean.max())  # planted tokens are scaled by 50
    with planted(family, _tokens(PLANTED, prefix, 4)):
        report = ArtifactDiagnostics(family.model, threshold=threshold).diagnose(x)
    assert [sorted(report.positions(b)) for b in range(2)] == [sorted(p) for p in PLANTED]
    assert report.thresholds.tolist() == [threshold, threshold]
    assert torch.isnan(report.separations).all()


@pytest.mark.parametrize("name", [*CLS_FAMILIES, "open_clip"])
def test_artifact_and_register_shares_match_the_reference_attention(name):
    family = shared_family(name)
    x = _inputs()
    tokens = _tokens(PLANTED, family.num_prefix_tokens, 4)
    with planted(family, tokens):
        report = ArtifactDiagnostics(family.model).diagnose(x)
        attentions = reference_attentions(family, x)
    assert report.query == "CLS"
    share = report.artifact_share
    assert share.shape == (2, 3, 4)
    for b, flagged in enumerate(tokens):
        for layer, attention in enumerate(attentions):
            expected = sum(attention[b, :, 0, t] for t in flagged)  # CLS row, per head
            torch.testing.assert_close(share[b, layer], expected, rtol=1e-4, atol=1e-6)
    registers = REGISTER_FAMILIES.get(name, [])
    assert report.registers == registers
    if not registers:
        assert report.register_share is None
        return
    for layer, attention in enumerate(attentions):
        expected = attention[:, :, 0, registers].sum(dim=-1)
        torch.testing.assert_close(report.register_share[:, layer], expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", list(REGISTER_FAMILIES))
def test_high_norm_registers_are_reported_not_flagged(name):
    family = shared_family(name)
    register = REGISTER_FAMILIES[name][0]
    with planted(family, [[register], [register]]):
        report = ArtifactDiagnostics(family.model).diagnose(_inputs())
    assert report.high_norm.sum() == 0
    summary = report.summary()["images"][0]
    assert summary["register_norms"][0] > 10 * summary["patch_norm_max"]
    assert summary["high_norm_tokens"] == []


def test_model_without_cls_token_gets_detection_but_no_scores():
    family = shared_family("timm_no_class_token")
    with planted(family, _tokens(PLANTED, 0, 4)):
        report = ArtifactDiagnostics(family.model).diagnose(_inputs())
    assert [sorted(report.positions(b)) for b in range(2)] == [sorted(p) for p in PLANTED]
    assert report.query is None and report.artifact_share is None
    with pytest.raises(ValueError, match="no CLS token and no pooling query"):
        report.attention_maps()


class _LastTokenQuery(AttentionQuery):
    """A stand-in pooling query: the CLS-row probe, read as if it were another query's."""

    name = "pool"

    def __init__(self) -> None:
        from attnexplain.diagnostics import CLSQuery

        self.inner = CLSQuery()

    def probe(self, adapter):
        return self.inner.probe(adapter)

    def rows(self, probe):
        return self.inner.rows(probe)[:, -1:]

    def stage_names(self, adapter):
        return ["pooling head"]


def test_a_query_of_another_kind_plugs_in():
    family = shared_family("hf_vit")
    x = _inputs()
    with planted(family, _tokens(PLANTED, 1, 4)):
        report = ArtifactDiagnostics(family.model, query=_LastTokenQuery()).diagnose(x)
        attention = reference_attentions(family, x)[-1]
    assert report.query == "pool" and report.stage_names == ["pooling head"]
    torch.testing.assert_close(report.artifact_share[0, 0], attention[0, :, 0, 1 + 6])


def test_threshold_flagging_every_token_is_refused():
    diagnostics = ArtifactDiagnostics(shared_family("hf_vit").model, threshold=1e-3)
    with pytest.raises(ValueError, match="threshold 0.001 flags every patch token of image 0"):
        diagnostics.diagnose(_inputs())


def test_images_of_different_sizes_are_refused_and_equal_sizes_batched():
    diagnostics = ArtifactDiagnostics(shared_family("hf_vit").model)
    with pytest.raises(ValueError, match="images of different sizes in one batch: inputs"):
        diagnostics.diagnose([torch.randn(3, 32, 32), torch.randn(3, 32, 48)])
    x = _inputs()
    torch.testing.assert_close(diagnostics.diagnose(list(x)).norms, diagnostics.diagnose(x).norms)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"threshold": "otsu"}, ValueError, "threshold must be a positive number or 'gap'"),
        ({"layer": 3}, ValueError, "layer=3 is out of range"),
        ({"query": "pooling"}, TypeError, "query must be 'auto', None or an AttentionQuery"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        ArtifactDiagnostics(shared_family("hf_vit").model, **kwargs)


def test_summary_is_json_and_names_the_planted_tokens():
    family = shared_family("hf_dinov2_registers")
    x = _inputs()
    with planted(family, _tokens(PLANTED, 4, 4)):
        report = ArtifactDiagnostics(family.model).diagnose(x)
        norms = reference_norms(family, x)[:, -1]
    summary = json.loads(json.dumps(report.summary(["a", "b"])))
    assert summary["registers"] == [1, 2, 3] and summary["layer"] == 2
    second = summary["images"][1]
    assert second["name"] == "b" and second["grid"] == [4, 4]
    assert [(t["row"], t["col"]) for t in second["high_norm_tokens"]] == PLANTED[1]
    assert [t["token"] for t in second["high_norm_tokens"]] == [4 + 0, 4 + 13]
    assert second["high_norm_tokens"][0]["norm"] == pytest.approx(float(norms[1, 4]), rel=1e-5)
    assert second["fraction_flagged"] == 2 / 16 and second["uniform_share"] == 2 / 20
    assert len(second["artifact_share"]) == 3 and len(second["artifact_share"][0]) == 4
    assert second["threshold"] is not None and second["cls_norm"] == pytest.approx(
        float(norms[1, 0]), rel=1e-5
    )
    with pytest.raises(ValueError, match="one entry per image"):
        report.summary(["only one"])


@pytest.mark.parametrize("name", ["hf_vit", "timm", "torchvision", "dino_custom"])
def test_attribute_is_the_norm_map_of_the_detection_layer(name):
    family = shared_family(name)
    x = _inputs()
    maps = ArtifactDiagnostics(family.model, layer=1).attribute(x, upsample=False)
    expected = reference_norms(family, x)[:, 1, family.num_prefix_tokens :].reshape(2, 1, 4, 4)
    torch.testing.assert_close(maps.double(), expected, rtol=1e-5, atol=1e-4)
    assert ArtifactDiagnostics(family.model).attribute(x).shape == (2, 1, 32, 32)


def test_unreadable_models_are_refused_at_diagnose():
    from tests.diagnostics.test_tokens import _FlatViT

    with pytest.raises(UnsupportedModelError, match="sits in no transformer block"):
        ArtifactDiagnostics(_FlatViT()).diagnose(torch.randn(1, 3, 32, 32))
