"""Smoke test of the explorer benchmark: a tiny run, one load, the JSON and the table.

No timing is asserted; the numbers of a run this small mean nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import explorer


def test_benchmark_writes_sizes_and_load_times(tmp_path: Path, capsys) -> None:
    try:
        explorer.start_chromium(tmp_path / "probe").quit()
    except explorer.BrowserUnavailable as error:
        pytest.skip(str(error))
    arguments = ["--images", "2", "--repeats", "1", "--no-budget", "--metrics", "mass_jaccard"]
    status = explorer.main([*arguments, "--out", str(tmp_path / "out")])
    assert status == 0
    written = json.loads((tmp_path / "out" / "explorer.json").read_text())
    (page,) = written["pages"].values()
    assert page["bytes"] == Path(page["page"]).stat().st_size
    assert page["console_errors"] == [] and len(page["loads"]) == 1
    assert page["median"]["load_ms"] > 0 and page["median"]["ready_ms"] > 0
    assert "| embedded run, 2 images x 7 methods |" in capsys.readouterr().out
