"""Execute every notebook in ``notebooks/`` and check what it computed.

Each notebook runs offline on the embedded model. Its last code cell, tagged ``results``, asserts
its own claim and prints one JSON line that the test reads back and checks again, so a notebook
whose checks were edited away still fails here. The kernel is the ``python3`` kernel spec, which
jupyter_client launches with this interpreter (``sys.executable``); an injected first cell
asserts that the kernel really runs in this environment.

The notebooks are stored with their outputs. After changing a notebook or the embedded model,
refresh them with ``python tests/test_notebooks.py`` (executes each and writes it back).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat", reason="nbformat is in the 'dev' extra")
nbclient = pytest.importorskip("nbclient", reason="nbclient is in the 'dev' extra")
pytest.importorskip("ipykernel", reason="ipykernel is in the 'dev' extra")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
#: Per-cell limit; each notebook takes well under a minute in all on 2 busy cores.
CELL_TIMEOUT = 300


def _kernel_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # the notebooks draw with the inline backend, not Agg
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        [str(NOTEBOOKS.parent), *filter(None, [env.get("PYTHONPATH")])]
    )
    return env


def execute(path: Path) -> tuple[Any, float]:
    """Run the notebook at ``path`` in a fresh kernel; return it executed and the seconds taken.

    Raises:
        nbclient.exceptions.CellExecutionError: if any cell raises.
    """
    nb = nbformat.read(path, as_version=4)
    guard = nbformat.v4.new_code_cell(
        f"import sys\nassert sys.prefix == {sys.prefix!r}, (sys.executable, {sys.prefix!r})"
    )
    nb.cells.insert(0, guard)
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    start = time.perf_counter()
    client.execute(env=_kernel_env())
    nb.cells.pop(0)
    return nb, time.perf_counter() - start


def results(nb: Any) -> dict[str, Any]:
    """The JSON line printed by the cell tagged ``results``."""
    tagged = [c for c in nb.cells if "results" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "a notebook needs exactly one code cell tagged 'results'"
    text = "".join(o.get("text", "") for o in tagged[0].outputs if o.output_type == "stream")
    lines = [line for line in text.splitlines() if line.startswith("{")]
    assert lines, f"the results cell printed no JSON line: {text!r}"
    return json.loads(lines[-1])


def test_every_notebook_is_tested():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(CHECKS)


def _check_quickstart(result: dict[str, Any]) -> None:
    # The maps equal the founding code's (DINO CLS row, jeonsworld rollout) on eager attention.
    assert result["raw_max_abs_diff"] < 1e-5
    assert result["rollout_max_abs_diff"] < 1e-5
    assert result["rollout_shape"] == [1, 1, 96, 96]
    assert len(result["heads_shape"]) == 4 and result["heads_shape"][0] == 1


def _check_compare_methods(result: dict[str, Any]) -> None:
    by_layer = result.pop("by_layer")
    assert set(result) == {"raw CLS", "rollout", "Grad-CAM", "grad. rollout", "attention flow",
                           "LeGrad", "random", "centre"}  # fmt: skip
    for method in ("raw CLS", "rollout"):
        for metric in ("energy_pointing_game", "auroc"):
            assert result[method][metric] > result["random"][metric], (method, metric)
    assert result["attention flow"]["auroc"] > result["random"]["auroc"]
    assert abs(result["random"]["auroc"] - 0.5) < 0.05  # noise is at chance
    # One value per layer; the last layer's own map and the rollout up to it are the methods'.
    assert {len(row) for row in by_layer.values()} == {4}
    assert abs(by_layer["raw CLS"][-1] - result["raw CLS"]["mass_jaccard"]) < 1e-6
    assert abs(by_layer["rollout up to"][-1] - result["rollout"]["mass_jaccard"]) < 1e-6


def _check_mean_attention_distance(result: dict[str, Any]) -> None:
    assert result["max_abs_diff_px"] < 1e-3  # matches compute_mean_attention_dist
    per_head = result["per_head_px"]  # (layers, heads)
    assert per_head and len({len(row) for row in per_head}) == 1
    assert all(d > 0 for row in per_head for d in row) and result["uniform_px"] > 0


def _check_clip_prompts(result: dict[str, Any]) -> None:
    assert result["score_max_abs_diff"] < 1e-5  # a prompt target is the model's own logit
    assert result["queries"] >= 48
    # The prompt's map points at the object it names, not at the others; the pooling query's
    # attention (no prompt) cannot, and its mass share is the chance share.
    assert result["rollout_queried"] > 0.6 and result["rollout_other"] < 0.2
    assert result["rollout_queried"] > result["pooling_queried"] + 0.2
    assert result["rollout_mass_share"] > result["chance_mass_share"] + 0.15


CHECKS = {
    "clip_prompts.ipynb": _check_clip_prompts,
    "quickstart.ipynb": _check_quickstart,
    "compare_methods.ipynb": _check_compare_methods,
    "mean_attention_distance.ipynb": _check_mean_attention_distance,
}


@pytest.mark.parametrize("name", sorted(CHECKS))
def test_notebook_runs_and_checks_out(name):
    nb, _seconds = execute(NOTEBOOKS / name)
    CHECKS[name](results(nb))


def _clean(nb: Any) -> Any:
    """Drop what changes on every run without changing content (timings, kernel versions)."""
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nb.metadata.get("language_info", {}).pop("version", None)
    return nb


if __name__ == "__main__":
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        executed, seconds = execute(path)
        CHECKS[path.name](results(executed))
        nbformat.write(_clean(executed), path)
        print(f"{path.name}: {seconds:.1f} s, {path.stat().st_size / 1000:.0f} kB")
