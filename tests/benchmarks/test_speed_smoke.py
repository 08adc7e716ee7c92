"""Smoke test of the speed suite: its code path runs end to end on a toy model and writes JSON.

No timing is asserted; the numbers of a run this small mean nothing.
"""

from __future__ import annotations

import json

import torch

from benchmarks import speed


def test_suite_runs_in_child_processes_and_writes_json(tmp_path):
    out = tmp_path / "speed.json"
    document = speed.main(
        ["--models", "tiny-test", "--sizes", "32", "--batches", "1", "--repeats", "1",
         "--interleave", "--out", str(out)]
    )  # fmt: skip

    written = json.loads(out.read_text())
    assert written["results"] == json.loads(json.dumps(document["results"]))
    assert written["machine"]["threads"] >= 1
    by_approach = {result["case"]["approach"]: result for result in written["results"]}
    assert set(by_approach) == set(speed.APPROACHES)
    for approach, result in by_approach.items():
        if approach == "gradcam" and speed.load_gradcam() is None:
            assert result["status"] == "skipped"
            continue
        assert result["status"] == "ok", (approach, result["reason"])
        assert len(result["times_s"]) == 1 and result["median_s"] > 0
        assert result["peak_bytes"] >= 0 and result["memory_method"]
        assert result["allocated_peak_bytes"] >= 0
        assert len(result["interleaved_times_s"]) == 1 and result["interleaved_median_s"] > 0
    floor = next(row for row in written["ratios"] if row["approach"] == "floor")
    assert floor["time_ratio"] == 1.0 and floor["timing"] == "interleaved"
    assert {check["approach"] for check in written["targets"]} >= {"raw_cls", "rollout", "mad"}
    relevance = {row["approach"]: row for row in written["relevance"]}
    assert set(relevance) == set(speed.RELEVANCE)
    assert all(row["time_vs_floor_backward"] > 0 for row in relevance.values())
    assert "x floor_backward" in speed.format_relevance(written["relevance"])


def test_over_budget_cases_are_skipped_with_the_reason(tmp_path):
    document = speed.main(
        ["--models", "tiny-test", "--sizes", "32", "--batches", "1", "--repeats", "1",
         "--approaches", "eager_attentions", "--memory-budget-gb", "0", "--in-process"]
    )  # fmt: skip
    eager = next(r for r in document["results"] if r["case"]["approach"] == "eager_attentions")
    assert eager["status"] == "skipped" and "budget" in eager["reason"]
    assert "skipped: needs" in speed.format_table(document["ratios"])


def test_peer_rollout_matches_attention_rollout():
    import attnexplain

    model = speed.build_model("tiny-test", "eager", seed=0)
    inputs = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        output = model(pixel_values=inputs, output_attentions=True, interpolate_pos_encoding=True)
    peer = speed.peer_rollout(output.attentions)
    ours = attnexplain.AttentionRollout(model).attribute(inputs, upsample=False)
    torch.testing.assert_close(ours.flatten(1), peer, rtol=1e-4, atol=1e-6)


def test_trials_combine_to_medians():
    case = {"model": "tiny-test", "size": 32, "batch": 1, "approach": "floor"}
    trials = [
        speed.Measurement(case=case, status="ok", times_s=[t, t], median_s=t, peak_bytes=p,
                          resident_bytes=10, allocated_peak_bytes=p, background_cpu=b)
        for t, p, b in ((1.0, 100, 0.0), (3.0, 300, 0.2), (2.0, 200, 0.1))
    ]  # fmt: skip
    combined = speed.combine_trials(trials)
    assert combined.median_s == 2.0 and combined.trial_medians_s == [1.0, 3.0, 2.0]
    assert combined.peak_bytes == 200 and combined.allocated_peak_bytes == 200
    assert len(combined.times_s) == 6 and combined.background_cpu == 0.2
    failed = speed.Measurement(case=case, status="error", reason="boom")
    assert speed.combine_trials([trials[0], failed]).status == "error"


def test_flow_suite_agrees_with_the_reference_and_writes_json(tmp_path):
    out = tmp_path / "flow.json"
    document = speed.main(
        ["--flow", "--models", "tiny-test", "--sizes", "32", "--repeats", "1",
         "--flow-reference-tokens", "2", "--out", str(out)]
    )  # fmt: skip
    (row,) = json.loads(out.read_text())["flow"]
    assert row == json.loads(json.dumps(document["flow"][0]))
    assert (row["tokens"], row["layers"], row["patches"]) == (5, 2, 4)
    assert row["reference_tokens_solved"] == 2 and row["extrapolated"]
    assert row["max_abs_diff"] < 1e-6  # the solved patches agree with networkx
    assert row["attention_flow_s"] > 0 and row["attention_flow_cpu_s"] > 0
    assert row["reference_extrapolated_s"] > row["reference_graph_s"] > 0
    assert "from 2 of 4 patches" in speed.format_flow(document["flow"])
    alone = speed.main(["--flow", "--models", "tiny-test", "--sizes", "32", "--repeats", "1",
                        "--flow-reference-tokens", "0"])["flow"]  # fmt: skip
    assert alone[0]["reference_tokens_solved"] == 0 and alone[0]["attention_flow_s"] > 0
    assert "not run" in speed.format_flow(alone)
