"""Sharding under torchrun: two gloo CPU processes report exactly what one process does.

Both the single-object run and the class-specific run on multi-object scenes are checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnexplain.benchmark.store import read_rows, result_files
from tests.benchmark import torchrun_worker
from tests.benchmark.helpers import comparable, free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.torchrun
def test_two_processes_match_one(tmp_path: Path) -> None:
    sharded, single = tmp_path / "sharded", tmp_path / "single"
    sharded_multi, single_multi = tmp_path / "sharded-multi", tmp_path / "single-multi"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "GLOO_SOCKET_IFNAME": "lo",
        "PYTHONPATH": str(ROOT),
    }
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
        "--master_addr=127.0.0.1", f"--master_port={free_port()}",
        "-m", "tests.benchmark.torchrun_worker", str(sharded), str(sharded_multi),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]

    threads = torch.get_num_threads()
    try:
        reference = torchrun_worker.benchmark(single)
        reference_multi = torchrun_worker.benchmark_multi(single_multi)
    finally:
        torch.set_num_threads(threads)

    # One merged file, no rank files left, every (image, method) exactly once.
    assert result_files(sharded) == [sharded / "results.jsonl"]
    merged = read_rows([sharded / "results.jsonl"])
    keys = [(r["image_id"], r["method"]) for r in merged]
    assert len(keys) == len(set(keys)) == torchrun_worker.IMAGES * 6
    assert comparable(merged) == comparable(reference.rows)

    sessions = json.loads((sharded / "run.json").read_text())["sessions"]
    assert sessions[-1]["world_size"] == 2
    # The report's numbers are the same digits.
    assert (sharded / "summary.json").read_text() == (single / "summary.json").read_text()
    assert (sharded / "summary.csv").read_text() == (single / "summary.csv").read_text()
    # Each rank saved the examples of the images it scored.
    assert sorted(p.name for p in (sharded / "examples").iterdir()) == sorted(
        p.name for p in (single / "examples").iterdir()
    )

    # The class-specific run: per-class rows and the report's numbers agree as well.
    merged_multi = read_rows([sharded_multi / "results.jsonl"])
    assert comparable(merged_multi) == comparable(reference_multi.rows)
    assert any("class_sensitivity" in r["metrics"] for r in merged_multi)
    for name in ("summary.json", "summary.csv", "report.md"):
        sharded_text = (sharded_multi / name).read_text()
        single_text = (single_multi / name).read_text()
        if name == "report.md":  # the session lines name the process count and wall time
            sharded_text, single_text = (
                t[t.index("## Class-specific") : t.index("## Against")]
                for t in (sharded_text, single_text)
            )
        assert sharded_text == single_text, name
