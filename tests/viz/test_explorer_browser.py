"""The explorer in a real browser: headless Chromium opens the page from disk (file://), the test
switches image / method / layer / head / threshold through the page's own controls and reads the
displayed map back from the canvas.

References are independent of the page's code: the saved maps are read from the run folder's
``.npz`` files with numpy, resized with torch's bilinear interpolation, coloured with
matplotlib's colour maps, and thresholded with DINO's rule as written in its
``visualize_attention.py``.

``ATTNEXPLAIN_EXPLORER_SCREENSHOTS=<folder>`` makes the test save the documentation's
screenshots there (``scripts/make_explorer_screenshots.py``); ``ATTNEXPLAIN_EXPLORER_TIMING=
<file>`` writes the measured page sizes and load times as JSON.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image

from attnexplain.benchmark.store import read_rows
from attnexplain.viz.explorer import ExplorerImage, write_explorer, write_run_explorer
from benchmarks.explorer import (
    BrowserUnavailable,
    console_errors,
    open_page,
    set_viewport,
    start_chromium,
)

WIDE, NARROW = (1280, 800), (400, 800)
SCREENSHOTS = os.environ.get("ATTNEXPLAIN_EXPLORER_SCREENSHOTS")
TIMING = os.environ.get("ATTNEXPLAIN_EXPLORER_TIMING")
#: The docs' budget of one figure.
SCREENSHOT_BYTES = 300_000


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    try:
        driver = start_chromium(tmp_path_factory.mktemp("chromium-profile"), WIDE)
    except BrowserUnavailable as error:
        pytest.skip(str(error))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def run_page(embedded_run) -> Path:
    return write_run_explorer(embedded_run.out_dir)[0]


@pytest.fixture(scope="module")
def timings() -> dict:
    measured: dict = {}
    yield measured
    if TIMING and measured:
        Path(TIMING).write_text(json.dumps(measured, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------
# Driving the page
# ----------------------------------------------------------------------------------------------


def _open(driver, page: Path) -> dict:
    try:
        return open_page(driver, page)
    except RuntimeError as error:
        pytest.fail(str(error))


def _select(driver, control: str, value: object) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, control)).select_by_value(str(value))


def _press(driver, key: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    driver.execute_script("document.activeElement.blur()")  # arrows on a control are its own
    ActionChains(driver).send_keys(getattr(Keys, key)).perform()


def _slide(driver, control: str, value: float) -> None:
    driver.execute_script(
        "const e = document.getElementById(arguments[0]); e.value = arguments[1];"
        "e.dispatchEvent(new Event('input', {bubbles: true}));",
        control,
        str(value),
    )


def _click(driver, css: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, css).click()


def _pixels(driver, css: str) -> np.ndarray:
    """``(H, W, 4)`` uint8 RGBA of the canvas ``css`` at its own resolution."""
    width, height, data = driver.execute_script(
        "const c = document.querySelector(arguments[0]);"
        "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "return [c.width, c.height, btoa(String.fromCharCode.apply(null, d))];",
        css,
    )
    return np.frombuffer(base64.b64decode(data), np.uint8).reshape(height, width, 4)


def _shown(driver) -> dict:
    return json.loads(driver.execute_script("return document.getElementById('map').dataset.view"))


def _screenshot(driver, name: str) -> None:
    """Save the viewport for the docs: full colour, or a 256-colour palette over the budget."""
    if not SCREENSHOTS:
        return
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png"})
    image = Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
    path = Path(SCREENSHOTS) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)
    if path.stat().st_size > SCREENSHOT_BYTES:
        image.quantize(256, dither=Image.Dither.FLOYDSTEINBERG).save(path, optimize=True)


# ----------------------------------------------------------------------------------------------
# References
# ----------------------------------------------------------------------------------------------


def _saved(run_dir: Path, index: int, method: str) -> dict:
    with np.load(run_dir / "maps" / f"{index:06d}-{method}.npz") as data:
        return {name: data[name] for name in data.files}


def _saved_map(run_dir: Path, index: int, method: str, layer: int, head: int) -> np.ndarray:
    saved = _saved(run_dir, index, method)
    (v,) = np.flatnonzero((saved["layers"] == layer) & (saved["heads"] == head))
    return saved["offset"][v] + saved["codes"][v] * saved["scale"][v]


def _upsampled(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    grid = torch.from_numpy(np.asarray(values, np.float64))[None, None]
    return F.interpolate(grid, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def _levels(values: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip(np.rint((values - low) / (high - low) * 255), 0, 255).astype(int)


def _per_image_levels(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Grey levels of a saved map shown per image: its own min to max, then resized."""
    return _levels(_upsampled(grid, size), grid.min(), grid.max())


def _method_range(run_dir: Path, method: str) -> tuple[float, float]:
    files = sorted((run_dir / "maps").glob(f"*-{method}.npz"))
    lows, highs = [], []
    for file in files:
        with np.load(file) as data:
            lows.append(data["offset"].min())
            highs.append((data["offset"] + 255 * data["scale"]).max())
    return float(min(lows)), float(max(highs))


def _assert_levels(shown: np.ndarray, expected: np.ndarray) -> None:
    """The canvas shows ``expected`` grey levels to within one level (float rounding)."""
    assert shown.shape[:2] == expected.shape
    assert (shown[..., 3] == 255).all()
    assert (shown[..., 0] == shown[..., 1]).all() and (shown[..., 1] == shown[..., 2]).all()
    difference = np.abs(shown[..., 0].astype(int) - expected)
    assert difference.max() <= 1, f"{(difference > 1).sum()} pixels off by more than one level"


def _dino_kept(values: np.ndarray, mass: float) -> np.ndarray:
    """DINO's visualize_attention.py: argsort, normalise, cumsum, keep cumval > 1 - mass."""
    flat = np.clip(values.ravel(), 0, None)
    order = np.argsort(flat, kind="stable")
    cumulative = np.cumsum(flat[order] / flat.sum())
    kept = np.empty(flat.size, bool)
    kept[order] = cumulative > 1 - mass
    return kept.reshape(values.shape)


# ----------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------


def test_displayed_maps_are_the_saved_maps(browser, embedded_run, run_page, timings) -> None:
    run_dir = embedded_run.out_dir
    timings["embedded_run_6_images"] = {**_open(browser, run_page), "size": run_page.stat().st_size}
    _select(browser, "colormap", "gray")
    size = (96, 96)
    cases = [
        (0, "raw", 3, -1, None),  # the scored map: last layer, fused
        (0, "raw", 1, 5, None),  # another layer, one head
        (1, "raw_heads", 0, 2, "ARROW_RIGHT"),
        (1, "rollout", 3, -1, None),
        (1, "gradcam", -1, -1, None),
        (0, "grad_rollout", -1, -1, "ARROW_LEFT"),
        (5, "raw", 2, 7, "ARROW_LEFT"),  # wraps around to the last image
    ]
    for index, method, layer, head, key in cases:
        if key:
            _press(browser, key)
        _select(browser, "method", method)
        if layer != -1 and method != "rollout":
            _select(browser, "layer", layer)
            _select(browser, "head", head)
        shown = _shown(browser)
        assert (shown["layer"], shown["head"]) == (layer, head), (method, shown)
        assert shown["image"] == f"synthetic-test-{index:06d}"
        grid = _saved_map(run_dir, index, method, layer, head)
        _assert_levels(_pixels(browser, "#map"), _per_image_levels(grid, size))
    # The layer selector says what rollout's layer is; one end block here, so it is disabled.
    _select(browser, "method", "rollout")
    label = browser.execute_script("return document.getElementById('layer-label').textContent")
    assert label == "Rollout ends at block"
    assert browser.execute_script("return document.getElementById('layer').disabled")
    # Raw values: one colour scale over every map of the method.
    _select(browser, "method", "raw")
    _select(browser, "layer", 0)
    _select(browser, "head", 3)
    _select(browser, "normalisation", "raw")
    grid = _saved_map(run_dir, 5, "raw", 0, 3)
    values = _upsampled(grid, size)
    _assert_levels(_pixels(browser, "#map"), _levels(values, *_method_range(run_dir, "raw")))
    # Colour maps are matplotlib's.
    _select(browser, "normalisation", "image")
    _select(browser, "colormap", "viridis")
    levels = _per_image_levels(grid, size)
    table = (colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).round()
    shown = _pixels(browser, "#map")[..., :3].astype(int)
    nearest = [np.abs(shown - table[np.clip(levels + d, 0, 255)]).max(-1) for d in (-1, 0, 1)]
    assert np.min(nearest, axis=0).max() == 0
    assert console_errors(browser) == []


def test_threshold_keeps_dinos_region_and_reports_its_jaccard(
    browser, embedded_run, run_page
) -> None:
    run_dir = embedded_run.out_dir
    _open(browser, run_page)
    rows = {(r["index"], r["method"]): r for r in read_rows([run_dir / "results.jsonl"])}
    with np.load(run_dir / "maps" / "000000.npz") as sample:
        mask = sample["mask"]
    for method, layer, head, mass in (("raw", 3, -1, 0.6), ("rollout", 3, -1, 0.6),
                                      ("raw", 2, 4, 0.35), ("gradcam", -1, -1, 0.8)):  # fmt: skip
        _select(browser, "method", method)
        if method == "raw":
            _select(browser, "layer", layer)
            _select(browser, "head", head)
        _slide(browser, "mass", mass)
        values = _upsampled(_saved_map(run_dir, 0, method, layer, head), (96, 96))
        expected = _dino_kept(values, mass)
        kept = _pixels(browser, "#kept")[..., 3] == 0
        # Pixels may only differ where float rounding ties them with the threshold value.
        boundary = np.clip(values, 0, None)[expected].min()
        differing = kept != expected
        assert np.allclose(values[differing], boundary, rtol=1e-9, atol=1e-12), differing.sum()
        shown = float(browser.execute_script(
            "return document.getElementById('threshold-readout').dataset.jaccard"
        ))  # fmt: skip
        reference = (expected & mask).sum() / (expected | mask).sum()
        assert shown == pytest.approx(reference, abs=differing.sum() / (expected | mask).sum())
        if mass == 0.6 and layer in (3, -1):  # the benchmark's own score (float maps)
            assert shown == pytest.approx(rows[0, method]["metrics"]["mass_jaccard"], abs=0.03)
    _select(browser, "method", "raw")
    _select(browser, "layer", 3)
    _select(browser, "head", -1)
    _slide(browser, "mass", 0.6)
    _click(browser, "#outline")
    _screenshot(browser, "explorer")
    text = browser.execute_script("return document.getElementById('threshold-readout').textContent")
    assert "Jaccard with the mask" in text
    assert console_errors(browser) == []


def test_side_by_side_shows_every_method(browser, embedded_run, run_page) -> None:
    run_dir = embedded_run.out_dir
    _open(browser, run_page)
    _select(browser, "colormap", "gray")
    _click(browser, "#view-all")
    methods = browser.execute_script(
        "return [...document.querySelectorAll('#grid canvas[data-method]')]"
        ".map(c => c.dataset.method)"
    )
    assert methods == ["raw", "raw_heads", "rollout", "gradcam", "grad_rollout", "random", "centre"]
    for method, layer, head in (("raw", 3, -1), ("rollout", 3, -1), ("centre", -1, -1)):
        grid = _saved_map(run_dir, 0, method, layer, head)
        shown = _pixels(browser, f'#grid canvas[data-method="{method}"]')
        _assert_levels(shown, _per_image_levels(grid, (96, 96)))
    _select(browser, "colormap", "viridis")
    _click(browser, "#threshold")
    _screenshot(browser, "explorer-side-by-side")
    _click(browser, '#grid button[aria-label="show raw_heads alone"]')
    assert _shown(browser)["method"] == "raw_heads"
    assert browser.execute_script("return document.getElementById('grid').hidden")
    assert console_errors(browser) == []


def test_layout_at_1280x800_and_on_a_narrow_window(browser, run_page) -> None:
    for size in (WIDE, NARROW):
        set_viewport(browser, size)
        _open(browser, run_page)
        layout = browser.execute_script(
            "const r = document.getElementById('stage').getBoundingClientRect();"
            "const unlabelled = [...document.querySelectorAll('select, input')]"
            "  .filter(e => !e.labels || e.labels.length === 0).map(e => e.id);"
            "return {scroll: document.documentElement.scrollWidth, width: innerWidth,"
            " stage: [r.width, r.bottom], unlabelled};"
        )
        assert layout["scroll"] <= layout["width"], "the page scrolls sideways"
        assert layout["unlabelled"] == []
        assert layout["stage"][0] >= 0.8 * min(size[0] - 16, 500)
        if size == WIDE:
            assert layout["stage"][1] <= size[1], "the map does not fit a 1280 x 800 screen"
        else:
            _screenshot(browser, "explorer-narrow")
    set_viewport(browser, WIDE)
    assert console_errors(browser) == []


def test_pages_of_bad_input_open_and_say_what_is_missing(browser, embedded_run, tmp_path) -> None:
    rng = np.random.default_rng(1)
    nan_map = rng.random((8, 8))
    nan_map[3, 3] = np.nan
    pixels = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
    images = [
        ExplorerImage("nonfinite", pixels, {"raw": nan_map}),
        ExplorerImage("other-size", pixels[:32, :32], {"raw": rng.random((16, 16))}),
        ExplorerImage("no-pixels", None, {"raw": rng.random((6, 6))}),
        ExplorerImage("scores-only", pixels, {}, scores={"raw": {"mass_jaccard": 0.5}}),
    ]
    (page,) = write_explorer(tmp_path / "explorer.html", images)
    _open(browser, page)
    notes = browser.execute_script("return document.getElementById('notes').textContent")
    assert "one method" in notes
    expected_notes = {
        "nonfinite": "1 of the 64 values of this map are NaN or infinite",
        "other-size": "no mask for this image",
        "no-pixels": "the image's pixels were not saved",
        "scores-only": "no map of raw for this image",
    }
    for number, (image_id, note) in enumerate(expected_notes.items()):
        if number:
            _press(browser, "ARROW_RIGHT")
        text = browser.execute_script("return document.getElementById('image-notes').textContent")
        assert note in text, (image_id, text)
        if image_id == "nonfinite":  # the NaN cell and what bilinear mixes it into: transparent
            alpha = _pixels(browser, "#map")[..., 3]
            assert alpha[3 * 6 + 3, 3 * 6 + 3] == 0 and alpha[0, 0] == 255
    run = tmp_path / "run"
    shutil.copytree(embedded_run.out_dir, run, ignore=shutil.ignore_patterns("maps", "exa*"))
    _open(browser, write_run_explorer(run)[0])
    notes = browser.execute_script("return document.getElementById('notes').textContent")
    assert "this run stored no maps" in notes
    scores = browser.execute_script("return document.getElementById('scores').textContent")
    assert "mass_jaccard" in scores
    assert console_errors(browser) == []


def test_maps_sharing_their_codes_keep_their_own_values(browser, tmp_path) -> None:
    """``2 * m`` has the codes of ``m``: stored once, drawn with each map's own scale."""
    grid = np.random.default_rng(2).random((6, 6))
    pixels = np.zeros((24, 24, 3), np.uint8)
    images = [ExplorerImage(f"x{k}", pixels, {"m": (k + 1) * grid}) for k in range(2)]
    (page,) = write_explorer(tmp_path / "explorer.html", images)
    _open(browser, page)
    _select(browser, "colormap", "gray")
    _select(browser, "normalisation", "raw")
    for k in range(2):
        if k:
            _press(browser, "ARROW_RIGHT")
        values = _upsampled((k + 1) * grid, (24, 24))
        _assert_levels(_pixels(browser, "#map"), _levels(values, grid.min(), 2 * grid.max()))
    assert console_errors(browser) == []


def test_budget_page_load_time_is_measured(browser, budget_page, timings) -> None:
    """50 images x 7 methods x 4 layers x 8 heads: the size is asserted in test_explorer_page;
    here the browser's load time is measured and recorded (never asserted: timings belong to
    benchmarks, see benchmarks/explorer.py)."""
    timing = _open(browser, budget_page)
    size = budget_page.stat().st_size
    timings["budget_50x7x4x8"] = {**timing, "size": size}
    print(f"budget page: {size / 1e6:.2f} MB, drawn after {timing['ready_ms']:.0f} ms")
    assert browser.execute_script("return window.explorer.header.images.length") == 50
    assert console_errors(browser) == []
