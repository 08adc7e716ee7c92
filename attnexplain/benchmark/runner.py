"""The benchmark runner: dataset x methods x metrics, one durable row per (image, method).

For every batch of images the runner

1. resizes the whole ``[0, 1]`` images to the model's input size (no crop, so that maps and masks
   cover the same pixels) and normalises them with the model's
   :class:`~attnexplain.zoo.Preprocess` (one batched forward gives the predicted classes);
2. asks each method for its maps on the batch (one batched call per method);
3. scores every map with the localisation metrics and, for a model with a classification head,
   the faithfulness metrics (their perturbed images are batched too);
4. appends one row per ``(image_id, method)`` to the results file and fsyncs it.

**Which mask a map is scored against.** Fused maps (``K = 1``) are scored by the map metrics
(:data:`~attnexplain.benchmark.registry.MAP_METRICS`) against the sample's ``mask``: the union of
the objects of the sample's ``label`` class (for VOC and COCO, the class of the largest object;
for single-object data the object itself). The per-object metric ``best_head_jaccard`` follows
DINO: for every annotated object separately, the best head's Jaccard (``K = 1`` maps have one
"head"), then the mean over the image's objects; the per-object values are kept in the row's
``objects`` field. Maps are bilinearly resized to the mask's resolution (``mask_resolution=
"image"``, the default) or the masks are resized (nearest) to the model's input size
(``"model"``, Chefer et al.'s protocol, which resizes images and masks to 224 x 224).

**Class-specific scoring** (the ``class_specific`` metrics, the default on ``synthetic-multi``).
On every image with at least :data:`MIN_SCORED_CLASSES` present classes (the classes of
:func:`~attnexplain.data.objects.class_masks` at the scoring resolution: objects left with no
pixel are skipped and counted in the row's ``empty_objects``), each fused method is asked for
the map of every present class and of one absent class (the *negative* query, drawn from the
image id, so it never depends on batching). The maps of the present classes are scored against
the per-class masks (row ``classes``, per-class values in ``objects``, the image's mean in
``metrics``); the negative map by the mass it puts on the present objects (row
``negative_class``). Images with fewer classes get no class-specific metric: the comparison is
about telling objects apart. The oracle ``all_objects`` (the union of the object masks) joins
the baselines. Labels must be the model's classes (``target="label"``).

**Targets.** ``target="label"`` explains the sample's label (the synthetic data, whose labels
are the embedded model's classes); ``"predicted"`` explains the model's top-1 class (the choice
for VOC, COCO and ImageNet-segmentation, whose ids are not the model's). Headless models have no
target and no faithfulness metrics.

**Maps.** With ``save_maps`` (the default) every image's maps of every method are kept
under ``maps/`` for the explorer page (:mod:`~attnexplain.benchmark.maps`: 8-bit per map, the
attention methods on the patch grid at every layer and head), written before the image's rows.

**Resume.** Rows already in the output folder are skipped by key; a truncated last line is
dropped. **Sharding.** Under ``torchrun`` (``WORLD_SIZE > 1``) the runner joins a ``gloo``
process group; the images are cut into fixed batches of ``batch_size`` and rank ``r`` scores
batches ``r, r + world_size, ...`` into its own file; after a barrier rank 0 merges all rows
into ``results.jsonl`` sorted by (index, method). Each model call sees the same images as in a
single-process run, so the merged rows, and every statistic of them, are bit-identical to a
single-process run's with the same thread count (torchrun sets ``OMP_NUM_THREADS=1``).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from attnexplain.benchmark.maps import MAPS_DIR, ViewSource, save_sample, store_batch, view_source
from attnexplain.benchmark.registry import (
    CLASS_METRICS,
    FAITHFULNESS_METRICS,
    MAP_METRICS,
    METHODS,
    OBJECT_METRICS,
    ORACLES,
    DatasetChoice,
    FaithfulnessContext,
    MethodContext,
    TargetPolicy,
    metric_info,
    parse_methods,
    parse_metrics,
)
from attnexplain.benchmark.store import (
    RESULTS_FILE,
    Row,
    RowWriter,
    merge_rows,
    rank_file,
    read_rows,
    result_files,
    row_key,
)
from attnexplain.capture import UnsupportedModelError, eval_mode, resolve_adapter
from attnexplain.data.objects import ClassMasks, class_masks
from attnexplain.zoo import Preprocess

META_FILE = "run.json"
#: Fewest present classes for an image to be scored by the class-specific metrics.
MIN_SCORED_CLASSES = 2
EXAMPLES_DIR = "examples"
MaskResolution = Literal["image", "model"]


@dataclass(frozen=True)
class BenchmarkConfig:
    """What to run and how.

    Attributes:
        methods: method names (see :data:`~attnexplain.benchmark.registry.METHODS`); the
            baselines ``random`` and ``centre`` are always added.
        metrics: metric names or groups, ``None`` for all that apply.
        batch_size: images per model call (methods, and faithfulness chunks).
        limit: score only the first ``limit`` images of the dataset.
        target: ``"label"`` or ``"predicted"``; ``None`` takes the dataset's default.
        mask_resolution: score at the mask's resolution (``"image"``) or the model's (``"model"``).
        faithfulness_steps: the most deletion / insertion steps (capped at the patch count).
        method_options: keyword arguments per method name (e.g. ``{"rollout": {"start_layer":
            1}}``).
        examples: save the maps of the first ``examples`` images for the report's figure.
        save_maps: store every image's maps under ``maps/`` for the explorer page.
        seed: seed of the random baseline.
        progress: show a progress bar on stderr.
        model_name: how the report names the model.
        dropped: methods or metrics the caller left out, with the reason (recorded in
            ``run.json`` as ``dropped``, so a run never loses a method without saying why).

    Raises:
        ValueError: on a non-positive ``batch_size``, ``limit`` or ``faithfulness_steps``, a
            negative ``examples``, or an unknown ``target`` / ``mask_resolution``.
    """

    methods: tuple[str, ...] = ("raw", "rollout", "gradcam")
    metrics: tuple[str, ...] | None = None
    batch_size: int = 16
    limit: int | None = None
    target: TargetPolicy | None = None
    mask_resolution: MaskResolution = "image"
    faithfulness_steps: int = 16
    method_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    examples: int = 4
    save_maps: bool = True
    seed: int = 0
    progress: bool = True
    model_name: str = "model"
    dropped: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("batch_size", "faithfulness_steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise ValueError(f"limit must be a positive int or None, got {self.limit!r}")
        if self.examples < 0:
            raise ValueError(f"examples must be >= 0, got {self.examples}")
        if self.target not in (None, "label", "predicted"):
            raise ValueError(f"target must be 'label' or 'predicted', got {self.target!r}")
        if self.mask_resolution not in ("image", "model"):
            raise ValueError(
                f"mask_resolution must be 'image' or 'model', got {self.mask_resolution!r}"
            )
        unknown = sorted(set(self.method_options) - set(self.methods))
        if unknown:
            raise ValueError(f"method_options names method(s) not run: {', '.join(unknown)}")


@dataclass
class BenchmarkRun:
    """What :func:`run_benchmark` returns.

    Attributes:
        out_dir: the run folder.
        rows: every row of the run, sorted by (index, method), on the main process; empty on
            other ranks.
        meta: the contents of ``run.json`` (settings, metric metadata, machine, sessions).
        is_main: whether this process is rank 0 (the one that writes the report).
    """

    out_dir: Path
    rows: list[Row]
    meta: dict[str, Any]
    is_main: bool


@dataclass(frozen=True)
class _Truth:
    """A sample's ground truth at the resolution it is scored at."""

    mask: torch.Tensor  # (1, H, W) bool
    ignore: torch.Tensor  # (1, H, W) bool
    objects: torch.Tensor  # (K, H, W) bool
    labels: torch.Tensor  # (K,) int64, the class of each object


@dataclass(frozen=True)
class _Queries:
    """What a method is asked about one image in class-specific scoring."""

    present: ClassMasks  # the present classes and their masks, at the scoring resolution
    negative: int | None  # one absent class of the model, if there is one

    @property
    def scored(self) -> bool:
        """Whether the image has enough classes for class-specific scoring."""
        return len(self.present.labels) >= MIN_SCORED_CLASSES


def machine_info(device: torch.device) -> dict[str, Any]:
    """The machine a run used: OS, CPU, core and thread counts, library versions, accelerator."""
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        info["accelerator"] = torch.cuda.get_device_name(device)
    return info


def _join_process_group() -> tuple[int, int, bool]:
    """``(rank, world_size, created)``: join the torchrun group when ``WORLD_SIZE > 1``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, False
    import torch.distributed as dist

    created = not dist.is_initialized()
    if created:
        dist.init_process_group("gloo")
    return dist.get_rank(), dist.get_world_size(), created


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


def _resize(tensor: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` to ``size`` (no-op when equal); ``nearest`` keeps bools bool."""
    if tuple(tensor.shape[-2:]) == size:
        return tensor
    if mode == "nearest":
        return F.interpolate(tensor.float(), size=size, mode="nearest") > 0.5
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)


def _model_images(samples: Sequence[Any], size: int) -> torch.Tensor:
    """``(B, 3, S, S)`` images in ``[0, 1]`` at the model's size, resized like ``Preprocess``."""
    images = []
    for sample in samples:
        image = sample.image[None].float()
        if tuple(image.shape[-2:]) != (size, size):
            image = F.interpolate(
                image, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
        images.append(image)
    # Resampling may leave values a rounding error outside [0, 1], which faithfulness rejects.
    return torch.cat(images).clamp(0.0, 1.0)


def _device(model: nn.Module) -> torch.device:
    """Where the model's parameters live (batches are sent there)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def has_classification_head(model: nn.Module, image_size: int) -> bool:
    """Whether ``model`` returns class logits, tried on one blank ``image_size`` input.

    Raises:
        UnsupportedModelError: if the model's attention cannot be read.
    """
    adapter = resolve_adapter(model)
    probe = torch.zeros(1, adapter.in_channels, image_size, image_size, device=_device(model))
    try:
        with torch.no_grad():
            adapter.logits_forward(probe)
    except UnsupportedModelError:
        return False
    return True


class _Session:
    """One process's share of a run: built once, then fed batch by batch."""

    def __init__(
        self,
        model: nn.Module,
        preprocess: Preprocess,
        dataset: DatasetChoice,
        config: BenchmarkConfig,
        maps_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.dataset = dataset
        self.preprocess = preprocess
        self.adapter = resolve_adapter(model)
        self.size = preprocess.image_size
        self.device = _device(model)
        self.has_head = has_classification_head(model, self.size)
        self.methods = parse_methods(config.methods)
        headless = [m for m in self.methods if METHODS[m].needs_head and not self.has_head]
        if headless:
            raise ValueError(
                f"method(s) {', '.join(headless)} differentiate a class logit, but the model has "
                "no classification head; use attention methods (raw, raw_heads, rollout)"
            )
        self.metrics = parse_metrics(
            config.metrics, has_head=self.has_head, class_specific=dataset.class_specific
        )
        self.target = config.target or dataset.default_target
        self.class_metrics = {n: CLASS_METRICS[n]() for n in self.metrics if n in CLASS_METRICS}
        if self.class_metrics:
            if self.target != "label":
                raise ValueError(
                    "class-specific metrics explain every present class, so the dataset's "
                    "labels must be the model's classes (target='label', --target label)"
                )
            self.methods += [m for m in ORACLES if m not in self.methods]
        # The union of each image's objects at the model's size, for the oracle baselines.
        self._objects: dict[str, torch.Tensor] = {}
        context = MethodContext(
            model, preprocess, self.adapter.logits_forward, config.batch_size, config.seed,
            objects=lambda ids: torch.stack([self._objects[i] for i in ids]),
        )  # fmt: skip
        self.explainers = {
            name: METHODS[name].build(context, **config.method_options.get(name, {}))
            for name in self.methods
        }
        self.maps_dir = maps_dir
        self.view_sources: dict[str, ViewSource] = {
            name: view_source(name, self.adapter, config.method_options.get(name, {}))
            for name in (self.methods if maps_dir is not None else ())
        }
        faithfulness = FaithfulnessContext(
            forward=lambda images: self.adapter.logits_forward(preprocess.normalize(images)),
            patch_size=self.adapter.patch_size[0],
            steps=config.faithfulness_steps,
            batch_size=config.batch_size,
            image_size=self.size,
        )
        self.map_metrics = {n: MAP_METRICS[n]() for n in self.metrics if n in MAP_METRICS}
        self.object_metrics = {n: OBJECT_METRICS[n]() for n in self.metrics if n in OBJECT_METRICS}
        self.faithfulness = {
            n: FAITHFULNESS_METRICS[n](faithfulness)
            for n in self.metrics
            if n in FAITHFULNESS_METRICS
        }

    def fingerprint(self) -> dict[str, Any]:
        """Settings a resumed run must share with the rows already written."""
        return {
            "model": self.config.model_name,
            "dataset": self.dataset.name,
            "image_size": self.size,
            "metrics": self.metrics,
            "target": self.target if self.has_head else None,
            "mask_resolution": self.config.mask_resolution,
            "faithfulness_steps": self.config.faithfulness_steps,
            "method_options": {k: dict(v) for k, v in self.config.method_options.items()},
            "seed": self.config.seed,
        }

    # -- one batch ------------------------------------------------------------------------------

    def score_batch(
        self, indices: Sequence[int], done: set[tuple[str, str]], examples_dir: Path
    ) -> list[Row]:
        """Rows of every method not yet done on the images ``indices``."""
        samples = [self.dataset.data[i] for i in indices]
        ids = [str(s.image_id) for s in samples]
        images = _model_images(samples, self.size).to(self.device)
        # The images are already at the model's size: normalise only (no model-style crop,
        # so that maps cover the same pixels as the masks).
        inputs = self.preprocess.normalize(images)
        predicted = target = None
        if self.has_head:
            with torch.no_grad():
                logits = self.adapter.logits_forward(inputs)
            predicted = target = logits.argmax(dim=1)
            if self.target == "label":
                labels = torch.tensor([int(s.label) for s in samples], device=self.device)
                target = torch.where(labels >= 0, labels, predicted)
                if int(target.max()) >= logits.shape[1]:
                    raise ValueError(
                        f"label {int(target.max())} is not a class of this {logits.shape[1]}-class "
                        "model; explain the prediction instead (target='predicted', "
                        "--target predicted)"
                    )
        truths = [self._truth(s) for s in samples]
        if self.maps_dir is not None:
            for index, image_id, image, truth in zip(indices, ids, images, truths):
                mask, ignore = self._at_model_size(truth.mask), self._at_model_size(truth.ignore)
                save_sample(self.maps_dir, index, image_id, image, mask, ignore)
        if any(METHODS[m].kind == "oracle" for m in self.methods):
            self._objects = {
                image_id: _resize(s.object_masks[None], (self.size, self.size), "nearest")[0].any(0)
                for image_id, s in zip(ids, samples)
            }
        queries = None
        if self.class_metrics:
            queries = [
                self._queries(t, image_id, logits.shape[1]) for t, image_id in zip(truths, ids)
            ]
        rows: list[Row] = []
        for name in self.methods:
            todo = {j for j, image_id in enumerate(ids) if (image_id, name) not in done}
            if not todo:
                continue
            # The whole batch is scored even when a torn write left only some rows missing: the
            # model then sees the same batch as in an uninterrupted run, to the last bit.
            method_rows = self._score_method(
                name, images, inputs, target, truths, ids, examples_dir, indices, queries
            )
            for j, row in enumerate(method_rows):
                if j not in todo:
                    continue
                row.update(
                    index=int(indices[j]),
                    label=int(samples[j].label),
                    target=None if target is None else int(target[j]),
                    predicted=None if predicted is None else int(predicted[j]),
                )
                rows.append(row)
        return rows

    def _truth(self, sample: Any) -> _Truth:
        mask, ignore, objects = sample.mask[None], sample.ignore[None], sample.object_masks
        if self.config.mask_resolution == "model":
            size = (self.size, self.size)
            mask = _resize(mask[None], size, "nearest")[0]
            ignore = _resize(ignore[None], size, "nearest")[0]
            objects = _resize(objects[None], size, "nearest")[0]
        return _Truth(mask.bool(), ignore.bool(), objects.bool(), sample.object_labels)

    def _queries(self, truth: _Truth, image_id: str, classes: int) -> _Queries:
        """The classes to ask about one image: every present class and one absent one."""
        grouped = class_masks(truth.labels, truth.objects)
        if len(grouped.labels) and int(grouped.labels.max()) >= classes:
            raise ValueError(
                f"image {image_id!r} has an object of class {int(grouped.labels.max())}, not a "
                f"class of this {classes}-class model; class-specific metrics need the "
                "dataset's labels to be the model's classes"
            )
        absent = sorted(set(range(classes)) - set(grouped.labels.tolist()))
        # Drawn from the image id (not a shared generator) so no batching or sharding changes it.
        negative = absent[zlib.crc32(image_id.encode()) % len(absent)] if absent else None
        return _Queries(grouped, negative)

    def _at_model_size(self, mask: torch.Tensor) -> torch.Tensor:
        """A ``(1, H, W)`` bool mask resized (nearest) to the model's ``(S, S)``."""
        return _resize(mask[None], (self.size, self.size), "nearest")[0, 0]

    def _score_method(
        self,
        name: str,
        images: torch.Tensor,
        inputs: torch.Tensor,
        target: torch.Tensor | None,
        truths: list[_Truth],
        ids: list[str],
        examples_dir: Path,
        indices: list[int],
        queries: list[_Queries] | None = None,
    ) -> list[Row]:
        spec = METHODS[name]
        start = time.perf_counter()
        maps = self.explainers[name](inputs, target, ids).detach().float()
        expected = (len(ids), self.size, self.size)
        if maps.dim() != 4 or (maps.shape[0], *maps.shape[2:]) != expected:
            raise ValueError(
                f"method {name} returned maps of shape {tuple(maps.shape)}, expected "
                f"({len(ids)}, K, {self.size}, {self.size})"
            )
        if not spec.per_head and maps.shape[1] != 1:
            raise ValueError(f"method {name} returned K = {maps.shape[1]} maps, expected 1")
        maps_done = time.perf_counter()
        rows = [self._localise(image_id, name, m, t) for image_id, m, t in zip(ids, maps, truths)]
        class_maps: list[torch.Tensor | None] = [None] * len(ids)
        query_seconds = 0.0  # the class-specific maps count as map time
        if queries is not None and not spec.per_head:
            class_maps, query_seconds = self._class_specific(
                name, rows, inputs, ids, truths, queries
            )
        localised = time.perf_counter()
        if not spec.per_head and self.faithfulness:
            self._faithfulness(rows, images, maps, target)
        finished = time.perf_counter()
        share = 1.0 / len(ids)
        for row in rows:
            row["seconds"] = {
                "maps": (maps_done - start + query_seconds) * share,
                "localisation": (localised - maps_done - query_seconds) * share,
                "faithfulness": (finished - localised) * share,
            }
        for k, index in enumerate(indices):
            if index < self.config.examples:
                extra = {}
                if class_maps[k] is not None and queries is not None:
                    extra = self._class_example(queries[k], class_maps[k])
                self._save_example(
                    examples_dir, index, ids[k], name, images[k], truths[k], maps[k], extra
                )
        if self.maps_dir is not None:
            store_batch(self.maps_dir, indices, name, self.view_sources[name](inputs, maps))
        return rows

    def _class_specific(
        self,
        name: str,
        rows: list[Row],
        inputs: torch.Tensor,
        ids: list[str],
        truths: list[_Truth],
        queries: list[_Queries],
    ) -> tuple[list[torch.Tensor | None], float]:
        """Ask ``name`` about every query of the batch and score the answers into ``rows``.

        Returns:
            Per image, the maps of its present classes then its negative class,
            ``(C (+ 1), S, S)`` at the model's size (``None`` when no class is present), and
            the seconds spent making the maps.
        """
        start = time.perf_counter()
        pairs = [
            (j, int(label))
            for j, query in enumerate(queries)
            for label in [*query.present.labels.tolist(), query.negative]
            if label is not None and query.scored
        ]
        answers = []
        size = self.config.batch_size
        for start in range(0, len(pairs), size):
            chunk = pairs[start : start + size]
            index = torch.tensor([j for j, _ in chunk], device=inputs.device)
            targets = torch.tensor([label for _, label in chunk], device=inputs.device)
            answer = self.explainers[name](inputs[index], targets, [ids[j] for j, _ in chunk])
            answers.append(answer.detach().float()[:, 0])
        stacked = torch.cat(answers) if answers else inputs.new_zeros(0, self.size, self.size)
        seconds = time.perf_counter() - start
        per_image: list[torch.Tensor | None] = [None] * len(ids)
        cursor = 0
        for j, query in enumerate(queries):
            count = (len(query.present.labels) + (query.negative is not None)) * query.scored
            per_image[j] = stacked[cursor : cursor + count] if count else None
            cursor += count
            self._score_classes(rows[j], per_image[j], truths[j], query)
        return per_image, seconds

    def _score_classes(
        self, row: Row, maps: torch.Tensor | None, truth: _Truth, query: _Queries
    ) -> None:
        """The class-specific metrics of one image's maps, written into its row."""
        present = query.present
        row.update(
            classes=present.labels.tolist(),
            negative_class=query.negative,
            empty_objects=present.empty,
        )
        if maps is None:
            return
        size = tuple(truth.mask.shape[-2:])
        scored = _resize(maps[None].cpu(), size, "bilinear")[0]  # (C (+ 1), H, W)
        count = len(present.labels)
        ignore = truth.ignore[0]
        for metric_name, metric in self.class_metrics.items():
            if not metric.paired:
                if query.negative is not None:
                    values = metric(scored[count:], present.masks, ignore)
                    row["metrics"][metric_name] = float(values[0])
                continue
            if count < metric.min_classes:
                continue
            values = metric(scored[:count], present.masks, ignore).tolist()
            row["objects"][metric_name] = values
            row["metrics"][metric_name] = float(np.mean(values))

    def _class_example(self, query: _Queries, maps: torch.Tensor) -> dict[str, np.ndarray]:
        """The arrays the report's class-specific figure needs, at the model's size."""
        masks = _resize(query.present.masks[None], (self.size, self.size), "nearest")[0]
        return {
            "classes": query.present.labels.numpy(),
            "class_maps": maps[: len(query.present.labels)].cpu().numpy(),
            "class_masks": masks.cpu().numpy(),
        }

    def _localise(self, image_id: str, method: str, maps: torch.Tensor, truth: _Truth) -> Row:
        size = tuple(truth.mask.shape[-2:])
        scored = _resize(maps[None].cpu(), size, "bilinear")  # (1, K, H, W)
        values: dict[str, float] = {}
        objects: dict[str, list[float]] = {}
        if scored.shape[1] == 1 and not METHODS[method].per_head:
            for name, metric in self.map_metrics.items():
                values[name] = float(metric(scored, truth.mask, truth.ignore)[0])
        for name, metric in self.object_metrics.items():
            per_object = [float(metric(scored, o[None], truth.ignore)[0]) for o in truth.objects]
            objects[name] = per_object
            values[name] = float(np.mean(per_object))
        return {"image_id": image_id, "method": method, "metrics": values, "objects": objects}

    def _faithfulness(
        self,
        rows: list[Row],
        images: torch.Tensor,
        maps: torch.Tensor,
        target: torch.Tensor | None,
    ) -> None:
        if target is None:  # a headless model has no faithfulness metrics
            return
        for row in rows:
            row["curves"] = {}
        for name, metric in self.faithfulness.items():
            curves = metric(images, maps, target)
            x = curves.x.tolist()
            for k, row in enumerate(rows):
                row["metrics"][name] = float(curves.auc[k])
                row["curves"][name] = {
                    "x": x,
                    "probability": curves.probability[k].tolist(),
                    "correct": curves.correct[k].int().tolist(),
                }

    def _save_example(
        self,
        folder: Path,
        index: int,
        image_id: str,
        method: str,
        image: torch.Tensor,
        truth: _Truth,
        maps: torch.Tensor,
        extra: Mapping[str, np.ndarray] | None = None,
    ) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        mask = self._at_model_size(truth.mask)
        np.savez_compressed(
            folder / f"{index:06d}-{method}.npz",
            image=image.cpu().numpy(),
            mask=mask.cpu().numpy(),
            map=maps.cpu().numpy(),
            image_id=np.array(image_id),
            **(extra or {}),
        )


def _check_fingerprint(meta: dict[str, Any], fingerprint: dict[str, Any], out_dir: Path) -> None:
    previous = meta.get("fingerprint")
    if previous is None or previous == fingerprint:
        return
    changed = sorted(k for k in {*previous, *fingerprint} if previous.get(k) != fingerprint.get(k))
    details = "; ".join(f"{k}: {previous.get(k)!r} -> {fingerprint.get(k)!r}" for k in changed)
    raise ValueError(
        f"{out_dir} holds rows of a run with other settings ({details}); resume with the same "
        "settings or choose another output folder"
    )


#: Fields of ``run.json`` a resumed run reads, and the JSON type each must have.
_META_TYPES: dict[str, type] = {
    "fingerprint": dict,
    "methods": list,
    "sessions": list,
    "dropped": dict,
}


def read_meta(out_dir: str | Path) -> dict[str, Any]:
    """The ``run.json`` of a run folder (``{}`` when there is none yet).

    Raises:
        ValueError: if the file is not a JSON object of the fields a run writes (the message
            names the file and what to do; the file is left as it is).
    """
    path = Path(out_dir) / META_FILE
    if not path.is_file():
        return {}
    fix = (
        "move it away to resume from the rows in results.jsonl (a new run.json is written), "
        "or choose another --out folder"
    )
    try:
        meta = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error}); {fix}") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path} holds a JSON {type(meta).__name__}, not a run record; {fix}")
    for key, kind in _META_TYPES.items():
        if key in meta and not isinstance(meta[key], kind):
            raise ValueError(
                f"{path}: field {key!r} is a {type(meta[key]).__name__}, expected a JSON "
                f"{'object' if kind is dict else 'array'}; {fix}"
            )
    return meta


def _write_meta(out_dir: Path, meta: dict[str, Any]) -> None:
    temporary = out_dir / (META_FILE + ".tmp")
    temporary.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    os.replace(temporary, out_dir / META_FILE)


def run_benchmark(
    model: nn.Module,
    preprocess: Preprocess,
    dataset: DatasetChoice | Any,
    out_dir: str | Path,
    config: BenchmarkConfig | None = None,
    *,
    after_batch: Callable[[int], None] | None = None,
) -> BenchmarkRun:
    """Score ``dataset`` with every method and metric of ``config``, resumably.

    Args:
        model: a supported vision transformer (its training flags are restored afterwards; it
            runs in eval mode). Batches go to the device of its parameters.
        preprocess: the model's preprocessing (input size, mean, std).
        dataset: a :class:`~attnexplain.benchmark.registry.DatasetChoice`, or any indexable
            collection of :class:`~attnexplain.data.base.SegmentationSample` (then named by its
            type, with ``target="predicted"`` unless ``config.target`` says otherwise).
        out_dir: the run folder: ``results.jsonl``, ``run.json``, ``examples/``, ``maps/``.
        config: what to run; the defaults of :class:`BenchmarkConfig` if ``None``.
        after_batch: called with the batch number after each batch's rows are durable (a test
            hook: raising in it stops the run as a kill would).

    Returns:
        The :class:`BenchmarkRun`.

    Raises:
        ValueError: for unknown methods or metrics, a gradient method or faithfulness metric on
            a headless model, labels outside the model's classes, or an output folder holding a
            run with other settings.
        UnsupportedModelError: for a model whose attention cannot be read.
    """
    config = config or BenchmarkConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not isinstance(dataset, DatasetChoice):
        dataset = DatasetChoice(type(dataset).__name__, dataset, "predicted")
    started, clock = datetime.now(timezone.utc), time.perf_counter()
    rank, world, created_group = _join_process_group()
    try:
        with eval_mode(model):
            maps_dir = out / MAPS_DIR if config.save_maps else None
            session = _Session(model, preprocess, dataset, config, maps_dir)
            meta = read_meta(out)
            # Corrupt rows fail here, before run.json is touched: nothing written is changed.
            read_rows(result_files(out))
            _check_fingerprint(meta, session.fingerprint(), out)
            total = min(config.limit or len(dataset.data), len(dataset.data))
            if rank == 0:
                meta.update(
                    fingerprint=session.fingerprint(),
                    model=config.model_name,
                    dataset=dataset.name,
                    images=total,
                    methods=list(dict.fromkeys([*meta.get("methods", []), *session.methods])),
                    metrics={n: asdict(metric_info(n)) for n in session.metrics},
                    method_kinds={n: spec.kind for n, spec in METHODS.items()},
                    has_head=session.has_head,
                    config={"batch_size": config.batch_size, "limit": config.limit},
                    dropped={**meta.get("dropped", {}), **config.dropped},
                )
                # The session is recorded now and updated after every batch, so the wall time
                # of a session that is killed still counts in the report.
                current = {
                    "started": started.isoformat(timespec="seconds"),
                    "wall_seconds": 0.0,
                    "world_size": world,
                    "rows_written": 0,
                    "finished": False,
                    "machine": machine_info(session.device),
                }
                meta.setdefault("sessions", []).append(current)
                _write_meta(out, meta)

            def progress(rows_written: int) -> None:
                if rank == 0:
                    current.update(wall_seconds=time.perf_counter() - clock)
                    current.update(rows_written=rows_written)
                    _write_meta(out, meta)

            _barrier(world)
            written = _score_shard(session, out, total, rank, world, progress, after_batch)
            _barrier(world)
            rows: list[Row] = []
            if rank == 0:
                # Also folds in rank files a killed multi-process run may have left behind.
                rows = merge_rows(out, meta["methods"])
                current["finished"] = True
                progress(written)
            return BenchmarkRun(out, rows, meta, rank == 0)
    finally:
        if created_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _score_shard(
    session: _Session,
    out: Path,
    total: int,
    rank: int,
    world: int,
    progress: Callable[[int], None],
    after_batch: Callable[[int], None] | None,
) -> int:
    """Score this rank's batches not yet done; returns the number of rows written.

    ``progress`` is called with the rows written so far after each durable batch.

    The dataset is cut into fixed batches ``[b * B, (b + 1) * B)`` and rank ``r`` takes the
    batches with ``b % world == r``. Every model call therefore sees the same images as in a
    single-process run (float kernels may round differently for other batch shapes), so
    sharded and single-process rows agree bit for bit at equal thread counts.
    """
    existing = read_rows(result_files(out))
    done = {row_key(row) for row in existing}
    methods_done: dict[int, set[str]] = {}
    for row in existing:
        methods_done.setdefault(int(row["index"]), set()).add(row["method"])
    wanted = set(session.methods)
    size = session.config.batch_size
    batches = []
    for start in range(rank * size, total, world * size):
        batch = list(range(start, min(start + size, total)))
        if any(not wanted <= methods_done.get(i, set()) for i in batch):
            batches.append(batch)
    path = out / RESULTS_FILE if world == 1 else rank_file(out, rank)
    written = 0
    bar = tqdm(
        total=sum(len(batch) for batch in batches),
        desc="benchmark" if world == 1 else f"benchmark[rank {rank}]",
        unit="img",
        file=sys.stderr,
        disable=not session.config.progress,
        position=rank,
    )
    with RowWriter(path) as writer, bar:
        for number, indices in enumerate(batches):
            rows = session.score_batch(indices, done, out / EXAMPLES_DIR)
            writer.write_batch(rows)
            done.update(row_key(row) for row in rows)
            written += len(rows)
            progress(written)
            bar.update(len(indices))
            if after_batch is not None:
                after_batch(number)
    return written
