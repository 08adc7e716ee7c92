"""Smoke test of the quality suite on a few images: one process and two under torchrun agree.

No quality is asserted; six images say nothing about the model. What is checked: the three
passes run (localisation, faithfulness, class-specific on the multi-label model), the report and
its timing are written, and a sharded run writes the same summaries.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import quality
from tests.benchmark.helpers import free_port

ROOT = Path(__file__).resolve().parents[2]
ARGS = [
    "--images", "6", "--batch-size", "3", "--steps", "2", "--methods", "raw,rollout,gradcam",
    "--multi-images", "6",
]  # fmt: skip


def test_single_process_writes_the_report(tmp_path: Path) -> None:
    out, runs = tmp_path / "report", tmp_path / "runs"
    code = quality.main([*ARGS, "--out", str(out), "--run-dir", str(runs), "--threads", "1"])
    assert code in (0, 1)  # 1 = an attention method lost to a baseline on these 6 images
    report = (out / "report.md").read_text()
    assert "python benchmarks/quality.py" in report and "Against the baselines" in report
    timing = json.loads((out / "timing.json").read_text())
    assert timing["processes"] == 1
    assert timing["localisation"] > 0 and timing["faithfulness"] > 0
    assert timing["class_specific"] > 0
    cells = json.loads((out / "summary.json").read_text())["cells"]
    methods = {cell["method"] for cell in cells}
    assert methods == {"raw", "rollout", "gradcam", "random", "centre"}
    # The class-specific section: its table, the verdict and the figure of the two-class maps.
    assert "## Class-specific" in report and "(figures/class_maps.png)" in report
    assert "the same map for every class on every image: `raw`, `rollout`" in report
    assert (out / "figures" / "class_maps.png").is_file()
    with (out / "summary_class_specific.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert {r["method"] for r in rows} == {
        "raw", "rollout", "gradcam", "random", "centre", "all_objects"
    }  # fmt: skip


@pytest.mark.torchrun
def test_torchrun_report_equals_the_single_process_one(tmp_path: Path) -> None:
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    quality.main([*ARGS, "--out", str(single), "--run-dir", str(tmp_path / "r1"), "--threads", "1"])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    env["PYTHONPATH"] = str(ROOT)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}",
        str(ROOT / "benchmarks" / "quality.py"), *ARGS,
        "--out", str(sharded), "--run-dir", str(tmp_path / "r2"),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode in (0, 1), done.stderr[-3000:]
    assert (sharded / "summary.csv").read_text() == (single / "summary.csv").read_text()
    csv_name = "summary_class_specific.csv"
    assert (sharded / csv_name).read_text() == (single / csv_name).read_text()
    assert json.loads((sharded / "timing.json").read_text())["processes"] == 2
    assert "torchrun --standalone --nproc_per_node=2" in (sharded / "report.md").read_text()
