"""Take the explorer page's documentation screenshots with the browser test itself.

    python scripts/make_explorer_screenshots.py [--out docs/figures]

Runs ``tests/viz/test_explorer_browser.py`` with ``ATTNEXPLAIN_EXPLORER_SCREENSHOTS`` set, so the
screenshots show the page exactly as the test drives it (the embedded model's benchmark run, in
headless Chromium at 1280 x 800 and 400 x 800): ``explorer.png`` (one method, threshold and mask
outline on), ``explorer-side-by-side.png`` and ``explorer-narrow.png``. Needs what the test needs:
Chromium, chromedriver and selenium (``make test`` installs them).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("explorer.png", "explorer-side-by-side.png", "explorer-narrow.png")
MAX_BYTES = 300_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    environment = {**os.environ, "ATTNEXPLAIN_EXPLORER_SCREENSHOTS": str(out), "MPLBACKEND": "Agg"}
    test = ROOT / "tests" / "viz" / "test_explorer_browser.py"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:xdist", str(test)]
    result = subprocess.run(command, cwd=ROOT, env=environment, check=False)
    if result.returncode != 0:
        return result.returncode
    for name in NAMES:
        path = out / name
        if not path.is_file():
            print(f"{path} was not written (was the browser test skipped?)", file=sys.stderr)
            return 1
        size = path.stat().st_size
        print(f"{path} ({size / 1000:.0f} kB)")
        if size > MAX_BYTES:
            print(f"{name} is over the docs' {MAX_BYTES // 1000} kB budget", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
