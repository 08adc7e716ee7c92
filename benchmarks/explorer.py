"""Explorer page size and load time in headless Chromium.

Two pages, each opened ``--repeats`` times from disk (``file://``) in a fresh tab:

1. **embedded run**: the embedded model on the first ``--images`` (50) synthetic test images,
   the benchmark command's default methods (raw, raw_heads, rollout, gradcam, grad_rollout, plus
   the random and centre baselines) and every metric, written by ``write_run_explorer``;
2. **budget page**: the issue's budget, 50 images x 7 methods x 4 layers x 8 heads on a
   ViT-B/16's 14 x 14 grid over 224 px photos (the shared COCO sample when present, else
   synthetic shapes), written by ``write_explorer``.

Load time is read from the page itself: the navigation timing's ``loadEventEnd`` (the HTML
parsed and its script run) and ``performance.now()`` when the page has unpacked its data and
drawn the first map (``document.body.dataset.readyMs``), both from the start of navigation. The
targets (issue 18): under 10 MB and under 2 s for the budget page.

Usage::

    python benchmarks/explorer.py --out /tmp/explorer-bench            # writes explorer.json
    python benchmarks/explorer.py --images 8 --repeats 1 --no-budget   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from attnexplain.benchmark.maps import MapViews
from attnexplain.viz.explorer import ExplorerImage, write_explorer, write_run_explorer

ROOT = Path(__file__).resolve().parents[1]
#: The shared COCO sample, beside the checkout (``/work/shared``) or above a worktree of it.
COCO = next(
    (
        found
        for parent in ROOT.parents
        if (found := parent / "shared/data/coco2017-ccby-sample").is_dir()
    ),
    ROOT.parent / "shared/data/coco2017-ccby-sample",
)
#: Flags that let Chromium run headless here: no GPU, no sandbox (root), no network at all.
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip
#: The issue's budget: 50 images x 7 methods x 4 layers x 8 heads, ViT-B/16 at 224 px.
BUDGET_IMAGES, BUDGET_METHODS, BUDGET_LAYERS, BUDGET_HEADS = 50, 7, 4, 8
BUDGET_SIZE, BUDGET_GRID = 224, 14
BUDGET_BYTES, BUDGET_SECONDS = 10_000_000, 2.0
#: The benchmark command's default methods (random and centre are added by the runner).
DEFAULT_METHODS = ("raw", "raw_heads", "rollout", "gradcam", "grad_rollout")


class BrowserUnavailable(RuntimeError):
    """No headless Chromium (or no selenium) on this machine; the message says what to install."""


# ----------------------------------------------------------------------------------------------
# Chromium
# ----------------------------------------------------------------------------------------------


def _find(*names: str) -> str | None:
    return next((path for name in names if (path := shutil.which(name))), None)


def start_chromium(profile: Path, size: tuple[int, int] = (1280, 800)) -> Any:
    """A selenium driver of headless Chromium with a fresh profile and a ``size`` viewport.

    Raises:
        BrowserUnavailable: without selenium, Chromium or chromedriver.
    """
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as error:
        raise BrowserUnavailable(
            "selenium is missing: pip install 'attnexplain[browser]' (make test installs it)"
        ) from error
    chromium = _find("chromium", "chromium-browser", "google-chrome")
    driver_path = _find("chromedriver")
    if chromium is None or driver_path is None:
        raise BrowserUnavailable(
            "no headless Chromium and chromedriver on PATH: apt-get install chromium "
            "chromium-driver (make test does this where apt-get can run)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    set_viewport(driver, size)
    return driver


def set_viewport(driver: Any, size: tuple[int, int]) -> None:
    """Make the page's viewport exactly ``(width, height)`` CSS pixels."""
    width, height = size
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
    )


def open_page(driver: Any, page: Path, timeout: float = 30.0) -> dict[str, float]:
    """Load ``page`` from disk and wait until it has drawn its first map.

    Returns:
        ``load_ms`` (navigation timing's ``loadEventEnd``), ``dom_ms``
        (``domContentLoadedEventEnd``) and ``ready_ms`` (data unpacked, first map drawn), all in
        milliseconds from the start of navigation.

    Raises:
        RuntimeError: if the page shows an error or is not drawn within ``timeout`` seconds.
    """
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(page.resolve().as_uri())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, error = driver.execute_script(
            "const e = document.querySelector('#notes .error');"
            "return [document.body.dataset.ready, e && e.textContent];"
        )
        if error:
            raise RuntimeError(f"{page.name} reports an error: {error}")
        if ready:
            return driver.execute_script(
                "const n = performance.getEntriesByType('navigation')[0];"
                "return {load_ms: n.loadEventEnd, dom_ms: n.domContentLoadedEventEnd,"
                " ready_ms: Number(document.body.dataset.readyMs)};"
            )
        time.sleep(0.01)
    raise RuntimeError(f"{page.name} was not drawn within {timeout:g} s")


def console_errors(driver: Any) -> list[str]:
    """Console messages of level SEVERE logged since the last call."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


# ----------------------------------------------------------------------------------------------
# The pages
# ----------------------------------------------------------------------------------------------


def budget_photos() -> list[np.ndarray]:
    """50 ``(224, 224, 3)`` uint8 photos: the COCO sample when present, else synthetic shapes."""
    files = sorted(COCO.glob("*2017/*.jpg")) if COCO.is_dir() else []
    if len(files) >= BUDGET_IMAGES:
        photos = []
        for file in files[:BUDGET_IMAGES]:
            with Image.open(file) as image:
                image.draft("RGB", (2 * BUDGET_SIZE, 2 * BUDGET_SIZE))  # fast JPEG decode
                side = min(image.size)
                left, top = (image.width - side) // 2, (image.height - side) // 2
                crop = image.convert("RGB").crop((left, top, left + side, top + side))
                photos.append(np.asarray(crop.resize((BUDGET_SIZE, BUDGET_SIZE))))
        return photos
    from attnexplain.data.synthetic import SyntheticShapes

    data = SyntheticShapes("test", BUDGET_IMAGES, BUDGET_SIZE)
    return [
        (data[i].image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        for i in range(BUDGET_IMAGES)
    ]


def budget_images(photos: list[np.ndarray]) -> list[ExplorerImage]:
    """Each photo with 7 methods x 4 layers x 8 heads of attention-like maps on a 14 x 14 grid
    (a smooth bump plus noise, so the maps compress no better than real ones)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:BUDGET_GRID, 0:BUDGET_GRID]
    images = []
    for index, photo in enumerate(photos):
        maps = {}
        for method in range(BUDGET_METHODS):
            cy, cx = rng.uniform(2, 12, size=2)
            bump = np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / 8.0)
            shape = (BUDGET_LAYERS, BUDGET_HEADS, BUDGET_GRID, BUDGET_GRID)
            maps[f"method_{method}"] = MapViews.from_array(bump + 0.5 * rng.random(shape))
        mask = np.zeros((BUDGET_SIZE, BUDGET_SIZE), bool)
        mask[60:160, 50:170] = True
        images.append(ExplorerImage(f"photo-{index:02d}", photo, maps, mask=mask))
    return images


def embedded_run_page(
    folder: Path, images: int, threads: int, metrics: tuple[str, ...] | None = None
) -> tuple[Path, float]:
    """Benchmark the embedded model into ``folder`` and write its explorer; the run's seconds."""
    import torch

    from attnexplain.benchmark import BenchmarkConfig, open_dataset, run_benchmark
    from attnexplain.zoo import load_default

    torch.set_num_threads(threads)
    model, preprocess = load_default()
    data = open_dataset(f"synthetic:{images}", preprocess.image_size)
    config = BenchmarkConfig(
        methods=DEFAULT_METHODS,
        metrics=metrics,
        batch_size=min(images, 25),
        progress=False,
        model_name="default",
    )
    start = time.perf_counter()
    run_benchmark(model, preprocess, data, folder, config)
    seconds = time.perf_counter() - start
    return write_run_explorer(folder)[0], seconds


def measure(driver: Any, page: Path, repeats: int) -> dict[str, Any]:
    """Size of ``page`` and its load timings over ``repeats`` loads (and their medians)."""
    loads = [open_page(driver, page) for _ in range(repeats)]
    errors = console_errors(driver)
    return {
        "page": str(page),
        "bytes": page.stat().st_size,
        "loads": loads,
        "median": {k: statistics.median(load[k] for load in loads) for k in loads[0]},
        "console_errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    """Measure the pages; 1 if the budget page misses a target or a page logs an error."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50, help="embedded-run images")
    parser.add_argument("--repeats", type=int, default=5, help="loads per page")
    parser.add_argument("--no-budget", action="store_true", help="skip the budget page")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads of the run")
    parser.add_argument("--metrics", default=None, help="comma-separated (default: all)")
    parser.add_argument("--out", type=Path, default=Path("explorer-bench"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        "pages": {},
    }
    page, seconds = embedded_run_page(
        args.out / "embedded-run",
        args.images,
        args.threads,
        tuple(args.metrics.split(",")) if args.metrics else None,
    )
    results["embedded_run_seconds"] = seconds
    pages = {f"embedded run, {args.images} images x 7 methods": page}
    if not args.no_budget:
        (budget,) = write_explorer(
            args.out / "budget" / "explorer.html", budget_images(budget_photos())
        )
        pages["budget: 50 images x 7 methods x 4 layers x 8 heads"] = budget
    with tempfile.TemporaryDirectory() as profile:
        driver = start_chromium(Path(profile))
        try:
            results["browser"] = driver.capabilities.get("browserVersion")
            for name, path in pages.items():
                results["pages"][name] = measure(driver, path, args.repeats)
        finally:
            driver.quit()
    (args.out / "explorer.json").write_text(json.dumps(results, indent=2) + "\n")
    print("| page | size | loadEventEnd | drawn |\n|---|---|---|---|")
    failed = False
    for name, result in results["pages"].items():
        median = result["median"]
        print(
            f"| {name} | {result['bytes'] / 1e6:.2f} MB | {median['load_ms']:.0f} ms | "
            f"{median['ready_ms']:.0f} ms |"
        )
        failed |= bool(result["console_errors"])
        if name.startswith("budget"):
            failed |= result["bytes"] >= BUDGET_BYTES or median["ready_ms"] >= 1000 * BUDGET_SECONDS
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
