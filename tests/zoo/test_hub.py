"""``load_model`` by spec: folders, hub ids (from a private cache), timm names, and each failure
with its own message.

Nothing is downloaded: checkpoints are tiny random models built from configs
(``tests/stand_ins.py``). Tests that need the environment of a fresh process (a private hub
cache, ``HF_HUB_OFFLINE`` unset with the hub unreachable) run one in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
import transformers as tf

from attnexplain.benchmark.runner import has_classification_head
from attnexplain.zoo.hub import ModelLoadError, load_model, model_auto_class
from tests.stand_ins import add_to_cache, hf_folder, timm_folder

ROOT = Path(__file__).resolve().parents[2]
TIMM_NAME = "vit_tiny_patch16_224.augreg_in21k_ft_in1k"
TINY_TIMM = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4, num_classes=5)


def test_deit_with_teacher_loads_with_both_heads(tmp_path) -> None:
    # Its architectures entry does not end in ForImageClassification; it used to load as a bare
    # DeiTModel, and the benchmark then dropped every gradient method without a word.
    saved = hf_folder(tmp_path, "deit_teacher")
    model, preprocess = load_model(str(saved))
    assert type(model).__name__ == "DeiTForImageClassificationWithTeacher"
    reference = tf.DeiTForImageClassificationWithTeacher.from_pretrained(saved).eval()
    x = preprocess(torch.rand(3, 300, 200))
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=x).logits, reference(pixel_values=x).logits)
    assert has_classification_head(model, preprocess.image_size)
    assert (preprocess.image_size, preprocess.resize) == (224, (256, 256))


@pytest.mark.parametrize(
    ("config", "architectures", "expected", "note"),
    [
        ("ViTConfig", ["ViTForImageClassification"], "AutoModelForImageClassification", None),
        ("DeiTConfig", ["DeiTForImageClassificationWithTeacher"], "AutoModelForImageClassification",
         None),
        ("ViTConfig", ["ViTModel"], "AutoModel", None),
        ("CLIPConfig", ["CLIPModel"], "AutoModelForZeroShotImageClassification", None),
        ("ViTConfig", ["ViTForMaskedImageModeling"], "AutoModel", "names architectures"),
        ("DeiTConfig", None, "AutoModel", "names no architectures"),
    ],
)  # fmt: skip
def test_the_auto_class_that_owns_the_architecture_decides(
    config, architectures, expected, note
) -> None:
    auto, message = model_auto_class(getattr(tf, config)(architectures=architectures))
    assert auto.__name__ == expected
    assert (message is None) == (note is None)
    if note:
        assert note in message and "without a classification head" in message


def test_a_config_without_a_known_architecture_warns_and_loads_the_backbone(tmp_path) -> None:
    saved = hf_folder(tmp_path, "vit_backbone")
    config = json.loads((saved / "config.json").read_text())
    config["architectures"] = ["ViTForSomethingNew"]
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.warns(UserWarning, match="loaded the base model"):
        model, _ = load_model(str(saved))
    assert type(model).__name__ == "ViTModel"


def test_the_models_own_image_processor_decides_the_preprocessing(tmp_path) -> None:
    _, preprocess = load_model(str(hf_folder(tmp_path, "dinov2")))
    assert (preprocess.image_size, preprocess.resize, preprocess.resample) == (224, 256, "bicubic")
    assert preprocess.mean == pytest.approx((0.485, 0.456, 0.406))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("/nowhere/model", "model folder not found: /nowhere/model (no such file or folder)"),
        ("./missing-model", "model folder not found: ./missing-model"),
        ("runs/a/model", "model folder not found: runs/a/model"),
        ("", "model spec must be a non-empty string"),
    ],
)
def test_a_missing_path_is_not_taken_for_a_hub_id(spec, message) -> None:
    with pytest.raises(ModelLoadError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_model(spec)


def test_a_folder_without_config_or_processor_says_what_to_save(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="has no config.json: not a Hugging Face or timm"):
        load_model(str(tmp_path))
    saved = hf_folder(tmp_path / "model", "vit")
    (saved / "preprocessor_config.json").unlink()
    with pytest.raises(
        ModelLoadError,
        match=r"has config.json but no preprocessor_config.json, so the model's input size.*"
        r"AutoImageProcessor.from_pretrained\(HUB_ID\).save_pretrained",
    ):
        load_model(str(saved))
    with pytest.raises(ModelLoadError, match=r"config.json is a file; --model takes a model"):
        load_model(str(saved / "config.json"))


def test_a_timm_folder_saved_by_save_for_hf_loads_with_its_weights(tmp_path) -> None:
    import timm

    saved = timm_folder(tmp_path, "vit_tiny_patch16_224", **TINY_TIMM)
    model, preprocess = load_model(str(saved))
    torch.manual_seed(0)
    reference = timm.create_model("vit_tiny_patch16_224", **TINY_TIMM)
    from safetensors.torch import load_file

    reference.load_state_dict(load_file(saved / "model.safetensors"))
    x = preprocess(torch.rand(3, 50, 40))
    assert x.shape == (1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference.eval()(x))
    # timm's evaluation transform: shortest edge to 32 / crop_pct (0.9), centre crop.
    assert (preprocess.resize, preprocess.resample) == (35, "bicubic")


def test_unknown_timm_name_and_uncached_weights_have_their_own_messages(
    tmp_path, monkeypatch
) -> None:
    pytest.importorskip("timm")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    monkeypatch.setattr(
        constants, "HF_HUB_OFFLINE", True
    )  # as `make test` runs, whatever the shell
    with pytest.raises(ModelLoadError, match=r"unknown timm model 'vit_nonexistent_patch3': timm"):
        load_model("timm:vit_nonexistent_patch3")
    with pytest.raises(ModelLoadError, match=r"timm has no pretrained weights called 'vit_tiny_p"):
        load_model("timm:vit_tiny_patch16_224.no_such_tag")
    with pytest.raises(
        ModelLoadError,
        match=rf"timm model '{TIMM_NAME}' is known, but its pretrained weights \(timm/{TIMM_NAME} "
        r"on the Hugging Face hub\) are not in the local Hugging Face cache, and HF_HUB_OFFLINE=1",
    ):
        load_model(f"timm:{TIMM_NAME}")


def _python(code: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (its own huggingface_hub settings) from the repo."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    environment = {k: v for k, v in environment.items() if v is not None}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, cwd=ROOT, env=environment, timeout=timeout,
    )  # fmt: skip


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory) -> Path:
    """A private cache holding a transformers checkpoint and timm's, under their hub ids."""
    root = tmp_path_factory.mktemp("hub")
    cache = root / "cache"
    add_to_cache(cache, "someorg/tiny-deit", hf_folder(root / "deit", "deit_teacher"))
    # The real architecture (timm builds it by name), random weights.
    add_to_cache(cache, f"timm/{TIMM_NAME}", timm_folder(root / "timm", "vit_tiny_patch16_224"))
    return cache


def test_cached_hub_ids_and_timm_names_load_without_the_hub(hub_cache) -> None:
    # HF_HUB_OFFLINE unset and the hub unreachable: cached models must not wait for it.
    code = f"""
        import json, torch
        from attnexplain.zoo.hub import load_model
        deit, deit_pre = load_model("someorg/tiny-deit")
        by_name, pre_name = load_model("timm:{TIMM_NAME}")
        by_repo, pre_repo = load_model("timm/{TIMM_NAME}")
        x = pre_name(torch.rand(3, 240, 300))
        with torch.no_grad():
            same = torch.equal(by_name(x), by_repo(x))
        print(json.dumps({{"deit": type(deit).__name__, "same": same,
                           "pre": [repr(pre_name), repr(pre_repo)]}}))
    """
    env = {
        "HF_HUB_CACHE": str(hub_cache),
        "HF_HUB_OFFLINE": None,
        "HF_ENDPOINT": "http://127.0.0.1:9",
    }
    done = _python(code, env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["deit"] == "DeiTForImageClassificationWithTeacher"
    # timm:NAME and the hub id timm/NAME are one model: same weights, same preprocessing.
    assert result["same"] and result["pre"][0] == result["pre"][1]
    assert "Retrying" not in done.stderr


UNREACHABLE = (
    "not in the local Hugging Face cache, and the hub http://127.0.0.1:9 cannot be reached"
)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("someorg/not-cached", "'someorg/not-cached' is not a folder here, and as a Hugging Face "
         f"hub id it is {UNREACHABLE}"),
        ("timm:vit_small_patch16_224.augreg_in21k", "its pretrained weights "
         f"(timm/vit_small_patch16_224.augreg_in21k on the Hugging Face hub) are {UNREACHABLE}"),
    ],
)  # fmt: skip
def test_uncached_models_fail_at_once_when_the_hub_is_unreachable(spec, message, tmp_path) -> None:
    # Before: huggingface_hub retried five times, up to 8 s apart, then a generic message. The
    # endpoint is a closed local port, so the hub is unreachable whatever the machine's network.
    code = f"""
        from attnexplain.zoo.hub import load_model, ModelLoadError
        try:
            load_model({spec!r})
        except ModelLoadError as error:
            print(error)
    """
    env = {
        "HF_HUB_CACHE": str(tmp_path),
        "HF_HUB_OFFLINE": None,
        "HF_ENDPOINT": "http://127.0.0.1:9",
    }
    done = _python(code, env, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    assert message in done.stdout and "hf download" in done.stdout
    assert "Retrying" not in done.stderr


def test_uncached_hub_id_offline_says_so(tmp_path, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE=1 forbids downloading"):
            load_model("someorg/not-cached")
