"""Stored maps: 8-bit quantisation, views per layer and head, the runner's ``maps/`` folder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from attnexplain.benchmark import BenchmarkConfig, open_dataset, run_benchmark
from attnexplain.benchmark.maps import (
    FUSED_HEAD,
    METHOD_LAYER,
    NONFINITE_CODE,
    MapViews,
    RawLayerViews,
    load_maps,
    quantise,
)
from attnexplain.benchmark.registry import BASELINES
from attnexplain.capture import resolve_adapter
from attnexplain.methods import AttentionRollout, GradCAM, RawCLSAttention
from tests.benchmark.helpers import IMAGE, tiny_preprocess
from tests.conftest import DEPTH, HEADS, PATCH, shared_family

IMAGES = 4
GRID = IMAGE // PATCH
METHODS = ("raw", "raw_heads", "rollout", "gradcam")
CONFIG = BenchmarkConfig(
    methods=METHODS,
    metrics=("mass_jaccard",),
    batch_size=2,
    target="predicted",
    examples=0,
    progress=False,
)


class Killed(RuntimeError):
    """Stands for a kill: raised from the after-batch hook."""


# ----------------------------------------------------------------------------------------------
# Quantisation
# ----------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    arrays(
        np.float64,
        st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6)),
        elements=st.floats(-1e6, 1e6, allow_nan=False),
    )
)
def test_quantisation_error_is_at_most_half_a_step(maps: np.ndarray) -> None:
    count = maps.shape[0]
    views = MapViews(maps, (METHOD_LAYER,) * count, tuple(range(count)), (True,) * count)
    quantised = quantise(views)
    for v in range(count):
        low, high = maps[v].min(), maps[v].max()
        assert quantised.offset[v] == low
        assert quantised.scale[v] == pytest.approx((high - low) / 255)
        error = np.abs(quantised.values()[v] - maps[v]).max()
        assert error <= quantised.scale[v] / 2 + 1e-9 * max(1.0, abs(high), abs(low))
        if high > low:  # the full code range is used
            assert quantised.codes[v].min() == 0 and quantised.codes[v].max() == 255


def test_nonfinite_pixels_get_their_own_code() -> None:
    maps = np.array([[[0.0, np.nan], [np.inf, 2.0]], [[np.nan, np.nan], [np.nan, np.nan]]])
    quantised = quantise(MapViews(maps, (0, 0), (0, 1), (True, True)))
    assert quantised.nonfinite.tolist() == [2, 4]
    assert quantised.codes[0].tolist() == [[0, NONFINITE_CODE], [NONFINITE_CODE, 254]]
    values = quantised.values()
    assert values[0, 0, 0] == 0.0 and values[0, 1, 1] == pytest.approx(2.0)
    assert np.isnan(values[0, 0, 1]) and np.isnan(values[0, 1, 0]) and np.isnan(values[1]).all()


def test_constant_map_round_trips_exactly() -> None:
    quantised = quantise(MapViews.from_array(np.full((3, 3), 0.25)))
    assert quantised.scale[0] == 0 and (quantised.values() == 0.25).all()


def test_views_from_arrays_of_every_rank() -> None:
    assert MapViews.from_array(np.zeros((5, 5))).heads == (FUSED_HEAD,)
    assert MapViews.from_array(np.zeros((1, 5, 5))).layers == (METHOD_LAYER,)
    assert MapViews.from_array(np.zeros((3, 5, 5))).heads == (0, 1, 2)
    grid = MapViews.from_array(torch.zeros(2, 3, 5, 5))
    assert list(zip(grid.layers, grid.heads)) == [(la, h) for la in (0, 1) for h in (0, 1, 2)]
    with pytest.raises(ValueError, match=r"\(h, w\), \(K, h, w\) or \(layers, K, h, w\)"):
        MapViews.from_array(np.zeros((1, 2, 3, 5, 5)))


def test_views_check_their_labels() -> None:
    maps = np.zeros((2, 3, 3))
    with pytest.raises(ValueError, match="heads has 1 entries for 2 maps"):
        MapViews(maps, (0, 0), (0,), (True, True))
    with pytest.raises(ValueError, match="repeat"):
        MapViews(maps, (0, 0), (1, 1), (True, True))
    with pytest.raises(ValueError, match=">= -1"):
        MapViews(maps, (0, -2), (0, 1), (True, True))
    with pytest.raises(ValueError, match=r"\(V, h, w\)"):
        MapViews(np.zeros((3, 3)), (0,), (0,), (True,))


# ----------------------------------------------------------------------------------------------
# The runner's maps/ folder
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def family():
    return shared_family("hf_vit")


@pytest.fixture(scope="module")
def data():
    return open_dataset(f"synthetic:{IMAGES}", IMAGE)


@pytest.fixture(scope="module")
def run(family, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("maps-run")
    return run_benchmark(family.model, tiny_preprocess(), data, out, CONFIG)


def _inputs(data) -> torch.Tensor:
    images = torch.stack([data.data[i].image for i in range(IMAGES)])
    return tiny_preprocess()(images)


def test_every_image_and_method_is_stored(run, data) -> None:
    stored = load_maps(run.out_dir)
    methods = [*METHODS, *BASELINES]
    assert sorted(stored.views) == sorted((i, m) for i in range(IMAGES) for m in methods)
    for index, sample in stored.samples.items():
        truth = data.data[index]
        assert sample.image_id == truth.image_id
        expected = (truth.image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        np.testing.assert_array_equal(sample.image, expected)
        np.testing.assert_array_equal(sample.mask, truth.mask.numpy())
    assert sorted(stored.samples) == list(range(IMAGES))


def test_raw_views_are_every_layer_and_head_of_the_eager_attention(run, data, family) -> None:
    """Reference: the eager model's attention probabilities, CLS row over the patch keys."""
    stored = load_maps(run.out_dir)
    attentions = family.reference_attentions(_inputs(data))  # per layer (B, heads, N, N)
    for index in range(IMAGES):
        rows = torch.stack([a[index, :, 0, 1:] for a in attentions])  # (L, heads, patches)
        per_head = rows.reshape(DEPTH, HEADS, GRID, GRID).double().numpy()
        for method, fused in (("raw", True), ("raw_heads", False)):
            views = stored.views[index, method]
            expected = {
                (layer, head): per_head[layer, head]
                for layer in range(DEPTH)
                for head in range(HEADS)
            }
            if fused:
                expected |= {(la, FUSED_HEAD): per_head[la].mean(0) for la in range(DEPTH)}
            got = dict(zip(zip(views.layers.tolist(), views.heads.tolist()), views.values()))
            assert got.keys() == expected.keys()
            for key, value in expected.items():
                v = list(got).index(key)
                np.testing.assert_allclose(got[key], value, atol=views.scale[v] / 2 + 1e-7)
            scored = {k for k, s in zip(got, views.scored) if s}
            last = DEPTH - 1
            wanted = {(last, FUSED_HEAD)} if fused else {(last, h) for h in range(HEADS)}
            assert scored == wanted


def test_scored_views_upsample_to_the_scored_maps(run, data, family) -> None:
    """The grid views, bilinearly upsampled, are the maps the benchmark scored."""
    stored = load_maps(run.out_dir)
    inputs = _inputs(data)
    target = family.model(inputs).logits.argmax(1)
    scored_maps = {
        "raw": RawCLSAttention(family.model).attribute(inputs),
        "rollout": AttentionRollout(family.model).attribute(inputs),
        "gradcam": GradCAM(family.model).attribute(inputs, target),
    }
    for method, maps in scored_maps.items():
        for index in range(IMAGES):
            views = stored.views[index, method]
            v = int(np.flatnonzero(views.scored)[0])
            grid = torch.from_numpy(views.values()[v])[None, None]
            upsampled = F.interpolate(grid, size=(IMAGE, IMAGE), mode="bilinear")[0, 0]
            np.testing.assert_allclose(
                upsampled.numpy(), maps[index, 0].double().numpy(), atol=views.scale[v] / 2 + 1e-6
            )
            expected_size = (IMAGE, IMAGE) if method == "gradcam" else (GRID, GRID)
            assert views.codes.shape[-2:] == expected_size


def test_resume_after_kill_stores_the_same_maps(run, family, data, tmp_path) -> None:
    def kill_after_first_batch(number: int) -> None:
        raise Killed

    with pytest.raises(Killed):
        run_benchmark(
            family.model,
            tiny_preprocess(),
            data,
            tmp_path,
            CONFIG,
            after_batch=kill_after_first_batch,
        )
    assert len(load_maps(tmp_path).samples) == CONFIG.batch_size  # the first batch only
    run_benchmark(family.model, tiny_preprocess(), data, tmp_path, CONFIG)
    resumed, full = load_maps(tmp_path), load_maps(run.out_dir)
    assert resumed.views.keys() == full.views.keys()
    for key, views in full.views.items():
        np.testing.assert_array_equal(resumed.views[key].codes, views.codes)
        np.testing.assert_array_equal(resumed.views[key].offset, views.offset)
    assert not list(tmp_path.glob("maps/*.tmp"))


def test_save_maps_off_stores_nothing(family, data, tmp_path) -> None:
    config = BenchmarkConfig(
        methods=("raw",), metrics=("mass_jaccard",), target="predicted", save_maps=False,
        progress=False,
    )  # fmt: skip
    run_benchmark(family.model, tiny_preprocess(), data, tmp_path, config)
    assert not (tmp_path / "maps").exists()


def test_a_stray_file_in_maps_is_named(tmp_path) -> None:
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "notes.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"notes\.npz: not a map file"):
        load_maps(tmp_path)


def test_raw_views_of_a_model_without_cls_token_are_its_pooling_query(tmp_path) -> None:
    """The benchmark stopped on SigLIP ("layer=0 has no query row"): its only row is the pooling
    head's query at the last layer. Reference: the head's own ``nn.MultiheadAttention`` weights."""
    from attnexplain.zoo import load_default

    model, preprocess = load_default("clip")
    data = open_dataset("synthetic:2", preprocess.image_size)
    config = BenchmarkConfig(
        methods=("raw", "raw_heads"), metrics=("mass_jaccard",), examples=0, progress=False
    )
    run_benchmark(model, preprocess, data, tmp_path, config)
    stored = load_maps(tmp_path)
    inputs = preprocess(torch.stack([data.data[i].image for i in range(2)]))
    vision = model.vision_model
    with torch.no_grad():
        tokens = vision(pixel_values=inputs).last_hidden_state
        probe = vision.head.probe.expand(len(tokens), -1, -1)
        _, weights = vision.head.attention(
            probe, tokens, tokens, need_weights=True, average_attn_weights=False
        )  # (B, heads, 1, N)
    grid = preprocess.image_size // vision.config.patch_size
    per_head = weights[:, :, 0].reshape(2, -1, grid, grid).double().numpy()
    last = vision.config.num_hidden_layers - 1
    for index in range(2):
        views = stored.views[index, "raw"]
        heads = per_head.shape[1]
        assert views.layers.tolist() == [last] * (heads + 1)
        assert views.heads.tolist() == [FUSED_HEAD, *range(heads)]
        expected = np.concatenate([per_head[index].mean(0, keepdims=True), per_head[index]])
        np.testing.assert_allclose(
            views.values(), expected, atol=float(views.scale.max()) / 2 + 1e-7
        )
        assert stored.views[index, "raw_heads"].heads.tolist() == list(range(heads))


@pytest.mark.parametrize("name", ["hf_deit_distilled", "timm_registers", "open_clip"])
def test_raw_layer_views_read_every_layer_in_one_forward(name) -> None:
    """Unquantised views against the reference attention's CLS rows, from a single forward."""
    family = shared_family(name)
    adapter = resolve_adapter(family.model)
    x = torch.randn(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(3))
    attentions = family.reference_attentions(x)
    forwards = []
    handle = adapter.patch_embedding.register_forward_hook(lambda *_: forwards.append(1))
    try:
        views = RawLayerViews(family.model, fused=True)(x)
    finally:
        handle.remove()
    assert len(forwards) == 1
    prefix = family.num_prefix_tokens
    for sample, view in enumerate(views):
        got = dict(zip(zip(view.layers, view.heads), view.maps))
        for layer, attention in enumerate(attentions):
            rows = attention[sample, :, 0, prefix:].reshape(HEADS, GRID, GRID)
            np.testing.assert_allclose(got[layer, FUSED_HEAD], rows.mean(0), rtol=1e-5, atol=1e-6)
            for head in range(HEADS):
                np.testing.assert_allclose(got[layer, head], rows[head], rtol=1e-5, atol=1e-6)
        assert len(got) == DEPTH * (HEADS + 1)
