"""Load a model and its own preprocessing from a spec: the embedded default, a folder, a hub id,
or a timm name.

Specs (what ``--model`` takes):

- ``"default"``, ``"multilabel"``, ``"clip"``: the embedded models
  (:data:`~attnexplain.zoo.EMBEDDED_MODELS`, :func:`attnexplain.zoo.load_default`);
- ``"timm:NAME"``: a model of timm's registry with its pretrained weights, e.g.
  ``timm:vit_small_patch16_224.augreg_in21k_ft_in1k`` (the weights live on the Hugging Face hub
  under ``timm/NAME`` and come from its cache);
- a folder: a Hugging Face checkpoint (``model.save_pretrained(DIR)`` and
  ``processor.save_pretrained(DIR)``) or a timm one (``timm.models.save_for_hf(model, DIR)``);
- a Hugging Face hub id ``ORG/NAME``: a transformers checkpoint (``facebook/dino-vits16``) or a
  timm one (``timm/NAME``, the same weights as ``timm:NAME``), read from the local cache.

Hugging Face checkpoints load with the Auto class that owns the class named in their config's
``architectures`` (so ``DeiTForImageClassificationWithTeacher`` keeps both heads), and their
preprocessing is their own image processor's (see :class:`~attnexplain.zoo.Preprocess`).

Nothing downloads at import time. A hub id or timm weights missing from the cache are fetched
only when the hub answers: offline (``HF_HUB_OFFLINE=1``) or when the hub cannot be reached, the
load fails at once with a message saying how to get a local copy, instead of retrying for half a
minute.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnexplain.zoo import EMBEDDED_MODELS, Preprocess, load_default

if TYPE_CHECKING:
    from torch import nn

DEFAULT_MODEL = "default"
#: How messages name the embedded models: "an embedded model (default, multilabel, clip)".
_EMBEDDED = f"an embedded model ({', '.join(EMBEDDED_MODELS)})"
TIMM_PREFIX = "timm:"
#: Seconds to wait for the hub's answer before calling it unreachable.
HUB_PROBE_TIMEOUT_S = 5.0
CONFIG_FILE = "config.json"
PROCESSOR_FILE = "preprocessor_config.json"
#: Weight files of a transformers checkpoint, one of which must be cached.
_HF_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
#: Weight files of a timm checkpoint on the hub, safetensors first.
_TIMM_WEIGHTS = ("model.safetensors", "open_clip_model.safetensors")
_FETCH_HINT = (
    "download it where there is network (`hf download {id} --local-dir DIR`) and pass "
    "--model DIR, or run once with the hub reachable so that it is cached"
)


class ModelLoadError(RuntimeError):
    """A model spec could not be loaded (unknown, not cached offline, unreadable)."""


def load_model(spec: str = DEFAULT_MODEL, device: str = "cpu") -> tuple[nn.Module, Preprocess]:
    """Load a model and its preprocessing.

    Args:
        spec: an embedded model's name (``"default"``, ``"multilabel"``, ``"clip"``),
            ``"timm:NAME"``, a model folder (Hugging Face or timm) or a
            Hugging Face hub id (``ORG/NAME``, including timm's ``timm/NAME``); see the module
            docstring.
        device: where to put the model.

    Returns:
        The model in eval mode and its :class:`~attnexplain.zoo.Preprocess`.

    Raises:
        ModelLoadError: if the model cannot be loaded; the message names the cause (unknown
            name, missing folder or file, not cached while offline or with the hub unreachable)
            and what to do about it.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ModelLoadError(f"model spec must be a non-empty string, got {spec!r}")
    if spec in EMBEDDED_MODELS:
        return load_default(spec, device=device)
    if spec.startswith(TIMM_PREFIX):
        model, preprocess = _load_timm_name(spec[len(TIMM_PREFIX) :])
    else:
        path = Path(spec).expanduser()
        if path.exists():
            model, preprocess = _load_folder(path)
        elif _is_hub_id(spec):
            model, preprocess = _load_hub(spec)
        else:
            raise ModelLoadError(
                f"model folder not found: {spec} (no such file or folder); check the path, or "
                f"pass a Hugging Face hub id (ORG/NAME), timm:NAME or {_EMBEDDED}"
            )
    return model.to(device).eval(), preprocess


def _is_hub_id(spec: str) -> bool:
    """Whether ``spec`` is spelled like a hub id (``NAME`` or ``ORG/NAME``) rather than a path."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(spec)
    except HFValidationError:
        return False
    return spec.count("/") <= 1


# -- folders ------------------------------------------------------------------------------------


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"cannot read {path}: {error}") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"{path} is not a model config (a JSON object)")
    return config


def _is_timm_config(config: dict[str, Any]) -> bool:
    """timm's ``save_for_hf`` writes ``architecture``; transformers writes ``model_type``."""
    return "architecture" in config and "model_type" not in config


def _load_folder(path: Path) -> tuple[nn.Module, Preprocess]:
    if not path.is_dir():
        raise ModelLoadError(
            f"{path} is a file; --model takes a model folder (config.json and weights), a hub "
            f"id, timm:NAME or {_EMBEDDED}"
        )
    if not (path / CONFIG_FILE).is_file():
        raise ModelLoadError(
            f"{path} has no {CONFIG_FILE}: not a Hugging Face or timm model folder; save one "
            "with model.save_pretrained(DIR) and its image processor's save_pretrained(DIR) "
            "(transformers), or timm.models.save_for_hf(model, DIR) (timm)"
        )
    if _is_timm_config(_read_config(path / CONFIG_FILE)):
        return _load_timm_source(f"local-dir:{path}", str(path))
    if not (path / PROCESSOR_FILE).is_file():
        raise ModelLoadError(
            f"{path} has {CONFIG_FILE} but no {PROCESSOR_FILE}, so the model's input size, "
            "resize and normalisation are unknown; save its image processor next to it: "
            f"AutoImageProcessor.from_pretrained(HUB_ID).save_pretrained({str(path)!r})"
        )
    return _load_transformers(str(path), local_only=True)


# -- transformers checkpoints -------------------------------------------------------------------


def _owned_names(auto: Any, config: Any) -> set[str]:
    """Names of the model classes the Auto class ``auto`` maps ``config``'s type to."""
    mapping = auto._model_mapping
    if type(config) not in mapping:
        return set()
    classes = mapping[type(config)]
    return {c.__name__ for c in (classes if isinstance(classes, tuple | list) else (classes,))}


def model_auto_class(config: Any) -> tuple[Any, str | None]:
    """The transformers Auto class that loads ``config``'s ``architectures``, and a note.

    The first architecture owned by ``AutoModelForImageClassification`` (every classifier,
    DeiT's with-teacher variant included), ``AutoModelForZeroShotImageClassification``
    (CLIP-style models) or ``AutoModel`` (backbones) decides. A config naming none of them
    loads as ``AutoModel`` (the backbone) and the note says so.

    Args:
        config: a transformers ``PretrainedConfig``.

    Returns:
        ``(auto_class, note)``; ``note`` is ``None`` when ``architectures`` decided.
    """
    from transformers import (
        AutoModel,
        AutoModelForImageClassification,
        AutoModelForZeroShotImageClassification,
    )

    architectures = list(getattr(config, "architectures", None) or [])
    for architecture in architectures:
        for auto in (
            AutoModelForImageClassification,
            AutoModelForZeroShotImageClassification,
            AutoModel,
        ):
            if architecture in _owned_names(auto, config):
                return auto, None
    named = f"names architectures {architectures}" if architectures else "names no architectures"
    return AutoModel, (
        f"{CONFIG_FILE} {named}, none of them an image classifier or base model of "
        f"{config.model_type!r}; loaded the base model (AutoModel), without a classification "
        "head: gradient methods and faithfulness metrics need one"
    )


@contextlib.contextmanager
def _quiet_weight_loading() -> Iterator[None]:
    """No "Loading weights" bar from transformers (downloads keep huggingface_hub's bars)."""
    from transformers.utils import logging

    enabled = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            logging.enable_progress_bar()


def _load_transformers(source: str, *, local_only: bool) -> tuple[nn.Module, Preprocess]:
    from transformers import AutoConfig, AutoImageProcessor

    try:
        config = AutoConfig.from_pretrained(source, local_files_only=local_only)
        auto, note = model_auto_class(config)
        if note is not None:
            warnings.warn(f"{source}: {note}", stacklevel=3)
        with _quiet_weight_loading():
            model = auto.from_pretrained(source, local_files_only=local_only)
        processor = AutoImageProcessor.from_pretrained(source, local_files_only=local_only)
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(f"could not load Hugging Face model {source!r}: {error}") from None
    try:
        preprocess = Preprocess.from_processor(processor)
    except ValueError as error:
        raise ModelLoadError(f"{source}: {error}") from None
    return model, preprocess


# -- the hub ------------------------------------------------------------------------------------


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_unreachable() -> str | None:
    """Why the Hugging Face hub (``HF_ENDPOINT``) cannot be reached, or ``None`` if it answers.

    One request without retries, through huggingface_hub's own HTTP client (so proxies and
    custom clients apply), waiting at most :data:`HUB_PROBE_TIMEOUT_S`.
    """
    from huggingface_hub import constants, get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_PROBE_TIMEOUT_S)
    except Exception as error:  # every transport error means "not reachable"
        return f"{type(error).__name__}: {error}"
    return None


def _cached(repo_id: str, filename: str) -> Path | None:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename)
    return Path(found) if isinstance(found, str) else None


def _require_download(what: str, repo_id: str) -> None:
    """Fail at once if ``what`` (not cached) cannot be downloaded: offline, or hub unreachable."""
    from huggingface_hub import constants

    hint = _FETCH_HINT.format(id=repo_id)
    if _hub_offline():
        raise ModelLoadError(
            f"{what} not in the local Hugging Face cache, and HF_HUB_OFFLINE=1 forbids "
            f"downloading; {hint}"
        )
    reason = hub_unreachable()
    if reason is not None:
        raise ModelLoadError(
            f"{what} not in the local Hugging Face cache, and the hub {constants.ENDPOINT} "
            f"cannot be reached ({reason}); {hint}"
        )


def _load_hub(repo_id: str) -> tuple[nn.Module, Preprocess]:
    config_path = _cached(repo_id, CONFIG_FILE)
    if config_path is not None:
        if _is_timm_config(_read_config(config_path)):
            if any(_cached(repo_id, name) for name in _TIMM_WEIGHTS):
                return _load_timm_source(f"local-dir:{config_path.parent}", repo_id)
        elif any(_cached(repo_id, name) for name in _HF_WEIGHTS) and _cached(
            repo_id, PROCESSOR_FILE
        ):
            return _load_transformers(repo_id, local_only=True)
    _require_download(
        f"{repo_id!r} is not a folder here, and as a Hugging Face hub id it is", repo_id
    )
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError

    try:
        config = _read_config(Path(hf_hub_download(repo_id, CONFIG_FILE)))
    except (HfHubHTTPError, OSError) as error:
        raise ModelLoadError(
            f"could not fetch {repo_id}/{CONFIG_FILE} from the hub ({type(error).__name__}: "
            f"{error}); check the id (private models need `hf auth login`)"
        ) from None
    if _is_timm_config(config):
        return _load_timm_source(f"hf-hub:{repo_id}", repo_id)
    return _load_transformers(repo_id, local_only=False)


# -- timm ---------------------------------------------------------------------------------------


def _import_timm() -> Any:
    try:
        import timm
    except ImportError:
        raise ModelLoadError(
            "timm models need the extra: pip install 'attnexplain[timm]'"
        ) from None
    return timm


def _timm_preprocess(model: nn.Module) -> Preprocess:
    """timm's evaluation transform: resize by ``1 / crop_pct``, centre crop, normalise."""
    import timm

    data = timm.data.resolve_data_config({}, model=model)
    height, width = data["input_size"][-2:]
    if height != width:
        raise ModelLoadError(f"timm input size {data['input_size']} is not square")
    scale = math.floor(height / data.get("crop_pct", 1.0))
    resize: int | tuple[int, int] = (scale, scale) if data.get("crop_mode") == "squash" else scale
    interpolation = data.get("interpolation", "bicubic")
    resample = interpolation if interpolation in ("nearest", "bilinear", "bicubic") else "bicubic"
    return Preprocess(int(height), data["mean"], data["std"], resize=resize, resample=resample)


def _load_timm_source(source: str, shown: str, **kwargs: Any) -> tuple[nn.Module, Preprocess]:
    timm = _import_timm()
    try:
        model = timm.create_model(source, pretrained=True, **kwargs)
    except (RuntimeError, OSError, ValueError, KeyError) as error:
        raise ModelLoadError(f"could not load timm model {shown}: {error}") from None
    return model, _timm_preprocess(model)


def _load_timm_name(name: str) -> tuple[nn.Module, Preprocess]:
    timm = _import_timm()
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ModelLoadError(
            f"unknown timm model {name!r}: timm {timm.__version__} has no model of that "
            f'name{hint}; list them with python -c "import timm; '
            "print(timm.list_models('*vit*', pretrained=True))\""
        )
    try:
        config = timm.models.get_pretrained_cfg(name)
    except RuntimeError:
        config = None
    if config is None:
        architecture = name.split(".")[0]
        tags = timm.list_pretrained(f"{architecture}.*")
        raise ModelLoadError(
            f"timm has no pretrained weights called {name!r}; those of {architecture}: "
            f"{', '.join(tags) or 'none'}"
        )
    repo_id = config.hf_hub_id
    if repo_id:
        weights = next(
            (path for file in _TIMM_WEIGHTS if (path := _cached(repo_id, file)) is not None),
            None,
        )
        if weights is not None:
            # The cached file, loaded as such: timm never asks the hub.
            overlay = {"file": str(weights), "custom_load": False}
            return _load_timm_source(name, name, pretrained_cfg_overlay=overlay)
        _require_download(
            f"timm model {name!r} is known, but its pretrained weights ({repo_id} on the "
            "Hugging Face hub) are",
            repo_id,
        )
    return _load_timm_source(name, name)
