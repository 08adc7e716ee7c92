"""The command line run as a user types it: the installed console script, ``python -m``, torchrun.

Every test here starts the entry point in a subprocess, as documented: the ``attnexplain`` script
next to the interpreter (``Path(sys.executable).parent / "attnexplain"``, where ``pip install``
puts it), ``python -m attnexplain.cli`` and ``torchrun -m attnexplain.benchmark.cli``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.benchmark.helpers import free_port

BIN = Path(sys.executable).parent
SCRIPT = BIN / "attnexplain"
ROOT = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
HEAVY = ("torch", "transformers", "captum", "numpy", "matplotlib", "PIL", "timm", "sklearn")


def run(
    command: list[str], cwd: Path, timeout: float = 300, **env: str
) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg", **env}
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=environment,
                          timeout=timeout)  # fmt: skip


def attnexplain(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return run([str(SCRIPT), *args], cwd)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The single stderr line of a failed command (asserting exit status 2, no traceback)."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.fixture(scope="module", autouse=True)
def console_script() -> None:
    if not SCRIPT.is_file():
        pytest.fail(f"no console script at {SCRIPT}: install the package (pip install -e .)")


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["--version"], ["explain", "--help"], ["benchmark", "--help"],
     ["explain", "--no-such-flag"], ["benchmark", "--limit", "0", "--out", "x"]],
)  # fmt: skip
def test_help_and_argument_errors_import_no_heavy_module(argv, tmp_path) -> None:
    # Startup was 8.5 s because building the parser imported torch, transformers and Captum.
    code = (
        "import sys\nfrom attnexplain.cli import main\ntry:\n    main(sys.argv[1:])\n"
        "except SystemExit:\n    pass\n"
        f"print('HEAVY', sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    )
    result = run([sys.executable, "-c", code, *argv], tmp_path)
    assert result.stdout.strip().splitlines()[-1] == "HEAVY []", result.stdout + result.stderr


def test_version_and_help(tmp_path) -> None:
    from attnexplain import __version__

    assert attnexplain("--version", cwd=tmp_path).stdout.strip() == f"attnexplain {__version__}"
    for command in ("explain", "benchmark"):
        assert command in attnexplain("--help", cwd=tmp_path).stdout
    assert "--discard-ratio" in attnexplain("explain", "--help", cwd=tmp_path).stdout


def test_explain_without_arguments_writes_figures_maps_and_settings(tmp_path) -> None:
    from attnexplain.methods import AttentionRollout
    from attnexplain.zoo import default_samples, load_default

    result = attnexplain("explain", "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    printed = [tmp_path / line for line in result.stdout.split()]
    samples = default_samples(4)
    stems = [s.image_id for s in samples] + ["mean_attention_distance"]
    assert printed == [tmp_path / "out" / f"{stem}{suffix}" for stem in stems
                       for suffix in (".png", ".safetensors", ".json")]  # fmt: skip
    for figure in printed[::3]:
        assert figure.read_bytes()[:8] == PNG_SIGNATURE
    # The raw maps are the methods' values: the rollout map equals a direct call.
    model, preprocess = load_default()
    maps = load_file(tmp_path / "out" / f"{samples[1].image_id}.safetensors")
    direct = AttentionRollout(model).attribute(preprocess(samples[1].image))[0]
    torch.testing.assert_close(maps["rollout"], direct, rtol=1e-5, atol=1e-7)
    assert maps["raw_heads"].shape == (model.config.num_attention_heads, 96, 96)
    settings = json.loads((tmp_path / "out" / f"{samples[1].image_id}.json").read_text())
    assert settings["target"] == settings["predicted"] == samples[1].label
    assert settings["target_label"] == model.config.id2label[samples[1].label]
    assert set(settings["methods"]) == {
        "raw", "raw_heads", "rollout", "gradcam", "grad_rollout", "legrad",
        "transformer_attribution", "lrp", "partial_lrp", "attnlrp",
    }  # attention_flow and the Captum methods only by name or "all"  # fmt: skip
    assert settings["methods"]["rollout"]["options"]["discard_ratio"] == 0.0
    distances = load_file(tmp_path / "out" / "mean_attention_distance.safetensors")["distances"]
    assert distances.shape == (4, model.config.num_hidden_layers, model.config.num_attention_heads)
    assert "explain: 100%" in result.stderr  # the progress bar


def test_explain_images_with_the_same_stem_write_distinct_files(tmp_path) -> None:
    # a/x.png and b/x.jpg used to overwrite each other's x.png.
    pixels = np.random.default_rng(0).integers(0, 256, (80, 120, 3), dtype=np.uint8)
    for folder, suffix in (("a", ".png"), ("b", ".jpg")):
        (tmp_path / folder).mkdir()
        Image.fromarray(pixels).save(tmp_path / folder / f"x{suffix}")
    result = attnexplain(
        "explain", "a/x.png", "b/x.jpg", "--methods", "rollout,gradcam", "--target", "star",
        "--discard-ratio", "0.5", "--format", "jpg", "--out", "o", "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [str(Path("o") / f"{stem}{suffix}") for stem in ("a_x", "b_x")
                                     for suffix in (".jpg", ".safetensors", ".json")]  # fmt: skip
    for stem in ("a_x", "b_x"):
        with Image.open(tmp_path / "o" / f"{stem}.jpg") as figure:
            assert figure.format == "JPEG"
        settings = json.loads((tmp_path / "o" / f"{stem}.json").read_text())
        assert (settings["target"], settings["target_label"]) == (3, "star")
        assert settings["methods"]["rollout"]["options"]["discard_ratio"] == 0.5
        assert "discard_ratio" not in settings["methods"]["gradcam"]["options"]
    assert "explain:" not in result.stderr  # --no-progress


def test_bad_explain_arguments_are_one_line_through_the_console_script(tmp_path) -> None:
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    cases = [
        (["explain", "broken.png"], "cannot read image broken.png"),
        (["explain", "--methods", "gradient-magic"], "unknown method(s) gradient-magic"),
        (["explain", "--device", "banana"], "--device 'banana' is not a torch device"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ]
    for args, message in cases:
        assert message in one_line_error(attnexplain(*args, cwd=tmp_path))


def test_benchmark_through_the_console_script(tmp_path) -> None:
    # Every real run used to end in AttributeError: 'Namespace' object has no attribute
    # 'handler'. Default methods and metrics, on the smallest data.
    out = tmp_path / "run"
    result = attnexplain(
        "benchmark", "--model", "default", "--dataset", "synthetic:4", "--limit", "1",
        "--steps", "2", "--out", str(out), "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == str(out / "report.md")
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    from attnexplain.benchmark.cli import DEFAULT_METHODS

    methods = {*DEFAULT_METHODS, "random", "centre"}
    assert {r["method"] for r in rows} == methods and len(rows) == len(methods)
    assert {"transformer_attribution", "attnlrp", "legrad"} <= methods
    assert "deletion_black" in rows[0]["metrics"]


def test_benchmark_through_python_dash_m(tmp_path) -> None:
    out = tmp_path / "run"
    result = run([
        sys.executable, "-m", "attnexplain.cli", "benchmark", "--dataset", "synthetic:4",
        "--limit", "2", "--methods", "raw", "--metrics", "mass_jaccard", "--out", str(out),
        "--no-progress",
    ], tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "report.md").is_file()
    assert len((out / "results.jsonl").read_text().splitlines()) == 2 * 3  # raw + 2 baselines


@pytest.mark.torchrun
def test_benchmark_under_torchrun_with_the_module_form(tmp_path) -> None:
    torchrun = BIN / "torchrun"
    launcher = (
        [str(torchrun)] if torchrun.is_file() else [sys.executable, "-m", "torch.distributed.run"]
    )
    out = tmp_path / "run"
    command = [
        *launcher, "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={free_port()}",
        "-m", "attnexplain.benchmark.cli", "--dataset", "synthetic:4", "--limit", "4",
        "--batch-size", "1", "--methods", "raw", "--metrics", "mass_jaccard", "--out", str(out),
        "--no-progress",
    ]  # fmt: skip
    result = run(command, tmp_path, GLOO_SOCKET_IFNAME="lo", OMP_NUM_THREADS="1")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 4 * 3
    meta = json.loads((out / "run.json").read_text())
    assert meta["sessions"][-1]["world_size"] == 2
    assert not list(out.glob("results.rank*.jsonl"))
