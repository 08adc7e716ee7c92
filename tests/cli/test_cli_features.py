"""The library's targets, per-layer maps and explorer, as the installed console script runs them.

Each test starts ``attnexplain`` (the script next to the interpreter) in a subprocess on images
it saves as PNG files, then reads the outputs back and checks them against the library's own
calls on the same preprocessed input.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from tests.cli.test_cli import SCRIPT, attnexplain, one_line_error
from tests.viz.explorer_helpers import read_payload, view_codes

#: ``src`` / ``href`` of scripts, styles and images that point to the network.
REMOTE = re.compile(r"<(?:script|link|img)\b[^>]*\b(?:src|href)\s*=\s*[\"']?(?:https?:)?//", re.I)


@pytest.fixture(scope="module", autouse=True)
def console_script() -> None:
    if not SCRIPT.is_file():
        pytest.fail(f"no console script at {SCRIPT}: install the package (pip install -e .)")


def save_png(image: torch.Tensor, path: Path) -> Path:
    """A ``(3, H, W)`` image in ``[0, 1]`` as a PNG file."""
    pixels = (image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    Image.fromarray(pixels).save(path)
    return path


def preprocessed(preprocess, path: Path) -> torch.Tensor:
    with Image.open(path) as image:
        return preprocess(image.convert("RGB"))


@pytest.fixture(scope="module")
def scenes():
    from attnexplain.data.scenes import SyntheticScenes

    return SyntheticScenes("test", size=3)


def test_prompts_explain_each_image_once_per_prompt(scenes, tmp_path) -> None:
    from attnexplain.methods import GradientWeightedRollout
    from attnexplain.methods.targets import Prompt
    from attnexplain.zoo import load_default

    save_png(scenes[1].image, tmp_path / "scene.png")
    prompts = ["a red star", "a blue circle"]
    result = attnexplain(
        "explain", "scene.png", "--model", "clip", "--prompt", prompts[0], "--prompt", prompts[1],
        "--out", "o", "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    stems = ["scene_prompt-1", "scene_prompt-2"]
    written = [str(Path("o") / f"{stem}{suffix}") for stem in stems
               for suffix in (".png", ".safetensors", ".json")]  # fmt: skip
    assert result.stdout.split()[: len(written)] == written
    # Every default gradient method either runs on SigLIP or is named on stderr with the
    # model's reason (those reading a CLS token it does not have).
    from attnexplain.benchmark.registry import METHODS

    settings = [json.loads((tmp_path / "o" / f"{stem}.json").read_text()) for stem in stems]
    ran = set(settings[0]["methods"])
    assert {"gradcam", "grad_rollout", "legrad"} <= ran
    for name in (n for n, spec in METHODS.items() if spec.kind == "gradient"):
        assert (name in ran) != (f"note: {name} not run:" in result.stderr), name
    assert "note: transformer_attribution not run: TransformerAttribution reads the CLS" in (
        result.stderr
    )
    assert [s["prompt"] for s in settings] == prompts
    assert settings[0]["target"] is None and settings[0]["reference"] is None

    model, preprocess = load_default("clip")
    x = preprocessed(preprocess, tmp_path / "scene.png")
    method = GradientWeightedRollout(model)
    saved = [load_file(tmp_path / "o" / f"{stem}.safetensors") for stem in stems]
    for maps, prompt in zip(saved, prompts):
        direct = method.attribute(x, target=Prompt(prompt))[0]
        torch.testing.assert_close(maps["grad_rollout"], direct, rtol=1e-5, atol=1e-7)
    # The prompt changes the gradient maps, not the attention maps.
    difference = (saved[0]["grad_rollout"] - saved[1]["grad_rollout"]).abs().max()
    assert difference > 0.05 * saved[0]["grad_rollout"].abs().max()
    torch.testing.assert_close(saved[0]["rollout"], saved[1]["rollout"])


def test_reference_image_is_the_target(scenes, tmp_path) -> None:
    from attnexplain.methods import GradCAM
    from attnexplain.methods.targets import ReferenceImage
    from attnexplain.zoo import load_default

    save_png(scenes[0].image, tmp_path / "a.png")
    save_png(scenes[2].image, tmp_path / "b.png")
    result = attnexplain(
        "explain", "a.png", "--model", "clip", "--reference", "b.png", "--methods", "gradcam",
        "--out", "o", "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [
        str(Path("o") / f"a_reference{suffix}") for suffix in (".png", ".safetensors", ".json")
    ]
    model, preprocess = load_default("clip")
    reference = ReferenceImage(preprocessed(preprocess, tmp_path / "b.png")[0])
    direct = GradCAM(model).attribute(preprocessed(preprocess, tmp_path / "a.png"), reference)
    maps = load_file(tmp_path / "o" / "a_reference.safetensors")
    torch.testing.assert_close(maps["gradcam"], direct[0], rtol=1e-5, atol=1e-7)
    assert json.loads((tmp_path / "o" / "a_reference.json").read_text())["reference"] == "b.png"


def test_target_flags_are_one_line_errors_that_name_the_fix(scenes, tmp_path) -> None:
    save_png(scenes[0].image, tmp_path / "a.png")
    cases = [
        (["--prompt", "a red star"], "--prompt needs an image-text model (e.g. --model clip)"),
        (["--model", "clip", "--target", "3", "--prompt", "a red star"],
         "--target and --prompt both say what the gradient methods explain; pass one"),
        (["--model", "clip", "--per-layer"], "--per-layer reads the CLS token's row"),
        (["--model", "clip", "--methods", "saliency", "--prompt", "a red star"],
         "method(s) saliency explain a class index, not a prompt or reference"),
    ]  # fmt: skip
    for args, message in cases:
        line = one_line_error(attnexplain("explain", "a.png", *args, "--out", "o", cwd=tmp_path))
        assert message in line, line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prompt", " "], "--prompt number 1 is empty"),
        (["--reference", "missing.png"], "--reference image not found"),
        (["--reference", "a.png", "--target", "1"], "--target and --reference both say"),
    ],
)
def test_target_flags_are_checked_before_the_model_loads(args, message, tmp_path, capsys) -> None:
    from attnexplain.cli import main

    save_png(torch.zeros(3, 8, 8), tmp_path / "a.png")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        assert main(["explain", "a.png", "--model", "no/such-model", *args]) == 2
    assert message in capsys.readouterr().err


def test_per_layer_maps_and_the_explorer_page(tmp_path) -> None:
    from attnexplain.methods import AttentionRollout, RawCLSAttention
    from attnexplain.zoo import default_samples, load_default

    samples = default_samples(2)
    for sample in samples:
        save_png(sample.image, tmp_path / f"{sample.image_id}.png")
    names = [sample.image_id for sample in samples]
    result = attnexplain(
        "explain", *(f"{name}.png" for name in names), "--methods", "raw,gradcam",
        "--per-layer", "--html", "--out", "o", "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    per_image = [f"{name}{suffix}" for name in names
                 for suffix in (".png", "_layers.png", ".safetensors", ".json")]  # fmt: skip
    assert result.stdout.split() == [str(Path("o") / f) for f in [*per_image, "explorer.html"]]

    model, preprocess = load_default()
    layers = model.config.num_hidden_layers
    x = preprocessed(preprocess, tmp_path / f"{names[1]}.png")
    maps = load_file(tmp_path / "o" / f"{names[1]}.safetensors")
    raw = RawCLSAttention(model, layer="all").attribute(x)[0, :, 0]  # (L, H, W)
    rollout = AttentionRollout(model).layer_maps(x).cumulative[0]
    assert maps["layers/raw"].shape == (layers, 96, 96)
    torch.testing.assert_close(maps["layers/raw"], raw, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(maps["layers/rollout"], rollout, rtol=1e-5, atol=1e-7)
    # The last layer's raw map is the raw method's map, the last rollout the pooled rollout.
    torch.testing.assert_close(maps["layers/raw"][-1], maps["raw"][0], rtol=1e-5, atol=1e-7)
    settings = json.loads((tmp_path / "o" / f"{names[1]}.json").read_text())
    assert settings["layers"] == {"layers/raw": list(range(layers)),
                                  "layers/rollout": list(range(layers))}  # fmt: skip
    with Image.open(tmp_path / "o" / f"{names[1]}_layers.png") as figure:
        assert figure.width > figure.height  # one column per layer, two rows

    page = tmp_path / "o" / "explorer.html"
    assert not REMOTE.search(page.read_text()), REMOTE.search(page.read_text())
    header, binary = read_payload(page)
    assert [image["id"] for image in header["images"]] == names
    entry = header["images"][1]["methods"]
    assert set(entry) == {"raw", "gradcam"}
    # raw: every layer x (fused, every head) on the patch grid; gradcam: its map as saved.
    heads = model.config.num_attention_heads
    assert len(entry["raw"]["views"]) == layers * (heads + 1)
    (view,) = entry["gradcam"]["views"]
    offset, scale = view[5], view[6]
    shown = offset + view_codes(binary, view).astype("float64") * scale
    torch.testing.assert_close(
        torch.from_numpy(shown), maps["gradcam"][0].double(), rtol=0, atol=scale / 2 + 1e-6
    )


def test_benchmark_html_writes_the_run_explorer(tmp_path) -> None:
    result = attnexplain(
        "benchmark", "--dataset", "synthetic:4", "--limit", "2", "--methods", "raw,rollout",
        "--metrics", "mass_jaccard", "--html", "--out", "run", "--no-progress", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [str(Path("run") / f) for f in ("report.md", "explorer.html")]
    page = tmp_path / "run" / "explorer.html"
    assert not REMOTE.search(page.read_text()), REMOTE.search(page.read_text())
    header, _ = read_payload(page)
    ids = [image["id"] for image in header["images"]]
    assert ids == ["synthetic-test-000000", "synthetic-test-000001"]  # --limit 2
    assert {"raw", "rollout", "random", "centre"} <= set(header["images"][0]["methods"])
    assert len(list((tmp_path / "run" / "maps").glob("*-raw.npz"))) == 2


def test_benchmark_no_save_maps_stores_no_maps(tmp_path) -> None:
    result = attnexplain(
        "benchmark", "--dataset", "synthetic:4", "--limit", "1", "--methods", "raw",
        "--metrics", "mass_jaccard", "--no-save-maps", "--out", "run", "--no-progress",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "run" / "report.md").is_file()
    assert not (tmp_path / "run" / "maps").exists()


def test_explain_and_diagnose_share_their_run_flags() -> None:
    from attnexplain.cli import build_parser

    subcommands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]

    def flags(name: str) -> dict[str, tuple]:
        return {
            action.dest: (tuple(action.option_strings), action.type, action.nargs, action.help)
            for action in subcommands[name]._actions
            if action.dest in ("images", "model", "device", "batch_size", "no_progress", "out")
        }

    explain, diagnose, benchmark = flags("explain"), flags("diagnose"), flags("benchmark")
    assert len(explain) == 6 and explain == diagnose
    assert "clip" in explain["model"][3]
    assert {k: v for k, v in explain.items() if k not in ("images", "out")} == {
        k: v for k, v in benchmark.items() if k != "out"
    }
