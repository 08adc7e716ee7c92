"""The benchmark runs LeGrad and attention flow like any other method, also on a subset."""

from __future__ import annotations

import pytest
import torch

from attnexplain import AttentionFlow, LeGrad
from attnexplain.benchmark import BenchmarkConfig, open_dataset, run_benchmark
from attnexplain.benchmark.registry import METHODS
from attnexplain.benchmark.report import summarise
from attnexplain.metrics import MassJaccard
from tests.benchmark.helpers import IMAGE, tiny_model, tiny_preprocess


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return tiny_model()


def test_specs_build_the_methods(model):
    assert METHODS["legrad"].kind == "gradient" and METHODS["legrad"].needs_head
    assert METHODS["attention_flow"].kind == "attention"
    assert not METHODS["attention_flow"].per_head


def test_legrad_and_flow_are_scored_and_flow_on_a_subset(model, tmp_path):
    data = open_dataset("synthetic:4", IMAGE)
    common = {"metrics": ("mass_jaccard", "deletion_black"), "batch_size": 2,
              "faithfulness_steps": 2, "examples": 0, "progress": False}  # fmt: skip
    full = run_benchmark(model, tiny_preprocess(), data, tmp_path / "all",
                         BenchmarkConfig(methods=("legrad",), **common))  # fmt: skip
    flow = BenchmarkConfig(methods=("attention_flow",), limit=2, **common)
    subset = run_benchmark(model, tiny_preprocess(), data, tmp_path / "flow", flow)
    cells = {(c.method, c.metric): c for c in summarise(full.rows + subset.rows)}
    assert cells[("legrad", "mass_jaccard")].n == 4
    assert cells[("attention_flow", "mass_jaccard")].n == 2
    assert cells[("attention_flow", "deletion_black")].n == 2
    # The rows hold the method's own maps' scores: recompute one image's map directly.
    sample = data.data[0]
    inputs = tiny_preprocess()(sample.image)
    target = torch.tensor([sample.label])
    for name, method in (("legrad", LeGrad(model)), ("attention_flow", AttentionFlow(model))):
        row = next(r for r in full.rows + subset.rows
                   if r["method"] == name and r["image_id"] == sample.image_id)  # fmt: skip
        maps = method.attribute(inputs, target)
        expected = float(MassJaccard()(maps, sample.mask[None])[0])
        assert row["metrics"]["mass_jaccard"] == pytest.approx(expected, abs=1e-6)


def test_legrad_is_refused_on_a_headless_model(tmp_path):
    data = open_dataset("synthetic:2", IMAGE)
    config = BenchmarkConfig(methods=("legrad",), limit=2, progress=False)
    with pytest.raises(ValueError, match="no classification head"):
        run_benchmark(tiny_model(head=False), tiny_preprocess(), data, tmp_path, config)
