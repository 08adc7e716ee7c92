r"""Targets: what to explain, read as one score per sample from the model's output.

A gradient method differentiates one scalar, the sum over the batch of each sample's score
(:func:`target_scores`); in evaluation mode each sample's output depends on that sample only,
so one backward pass serves a batch with a different target per sample. What a score *is* for
a model family (its class logits, label names, pooled embedding, text embeddings and
image–text logit) is read through the model's adapter; nothing here knows a model.

=============================================  ==============================================
target                                         score of sample :math:`b`
=============================================  ==============================================
``None``                                       logit of the predicted class
``int`` / ``np.integer`` / :class:`ClassIndex`  logit of that class
``str`` on a classifier / :class:`Label`       logit of the class of that name
                                               (``config.id2label``)
``str`` on an image–text model / :class:`Prompt`  the model's own image–text logit:
                                               :math:`e^{s} \cos(v_b, t)` (+ SigLIP's bias)
``Prompt([t1, t2, ...])``                      the same logit with the ensemble's text
                                               embedding, the mean of the prompts' unit
                                               embeddings (CLIP's prompt ensembling)
:class:`Embedding` ``(D,)`` or ``(B, D)``      :math:`\cos(v_b, e)` with the pooled image
                                               embedding :math:`v_b`
:class:`ReferenceImage`                        :math:`\cos(v_b, v(\text{reference}))`
a callable / :class:`Score`                    ``fn(output)[b]``, ``fn`` returning ``(B,)``
=============================================  ==============================================

A list or tuple (or a 1-D integer tensor / array) holds one target per sample, of any of the
kinds above (length ``B``, or 1 for every sample): ``["a red star", "a blue disc"]`` explains
each image with its own prompt. A prompt ensemble for one sample is a :class:`Prompt` of several
texts, never a bare list.

Examples:
    >>> from attnexplain.methods.targets import Embedding, Prompt
    >>> target = [Prompt("a red star"), Prompt(["a blue disc", "a disc, blue"])]  # per sample
    >>> Embedding(torch.ones(8)).vectors.shape
    torch.Size([8])
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from attnexplain.capture import ModelAdapter

__all__ = [
    "ClassIndex",
    "Embedding",
    "Label",
    "Prompt",
    "ReferenceImage",
    "Score",
    "ScoreTarget",
    "TargetLike",
    "class_indices",
    "target_scores",
]

_ACCEPTED = (
    "an int class index, a label name or text prompt (str), a ClassIndex, Label, Prompt, "
    "Embedding, ReferenceImage or Score, a callable score(output) -> (B,), one of these per "
    "sample in a list, an integer tensor / array, or None"
)


class ScoreTarget(ABC):
    """One thing to explain: a score for every sample of a batch, read from the model's output.

    Subclasses implement :meth:`scores`; targets of one kind that are cheaper together (class
    logits gathered at once, prompts embedded in one text forward) override :meth:`scores_of`.
    """

    def bind(self, adapter: ModelAdapter) -> ScoreTarget:
        """The target this one is for ``adapter``'s model (a label name becomes its index)."""
        return self

    @abstractmethod
    def scores(self, adapter: ModelAdapter, output: Any) -> torch.Tensor:
        """Every sample's score under this target.

        Args:
            adapter: the model's adapter (reads logits, embeddings and text from ``output``).
            output: the model's output (or a readout of it) inside the autograd graph.

        Returns:
            ``(B,)`` scores.
        """

    @classmethod
    def scores_of(
        cls, targets: Sequence[ScoreTarget], adapter: ModelAdapter, output: Any
    ) -> torch.Tensor:
        """The scores of several targets of this kind: ``(B, len(targets))``."""
        return torch.stack([target.scores(adapter, output) for target in targets], dim=1)


@dataclass(frozen=True)
class ClassIndex(ScoreTarget):
    """The logit of class ``index``.

    Raises:
        TypeError: for a non-integer index.
    """

    index: int

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, int | np.integer):
            raise TypeError(f"a class index must be an int, got {self.index!r}")
        object.__setattr__(self, "index", int(self.index))

    def scores(self, adapter: ModelAdapter, output: Any) -> torch.Tensor:
        return self.scores_of([self], adapter, output)[:, 0]

    @classmethod
    def scores_of(
        cls, targets: Sequence[ScoreTarget], adapter: ModelAdapter, output: Any
    ) -> torch.Tensor:
        logits = adapter.logits(output)
        indices = [target.index for target in targets]  # type: ignore[attr-defined]
        _check_range(indices, logits.shape[-1])
        return logits[:, indices]


@dataclass(frozen=True)
class _Predicted(ScoreTarget):
    """The logit of each sample's predicted class (the default target)."""

    def scores(self, adapter: ModelAdapter, output: Any) -> torch.Tensor:
        logits = adapter.logits(output)
        return logits.gather(1, logits.detach().argmax(dim=-1, keepdim=True))[:, 0]


_PREDICTED = _Predicted()


@dataclass(frozen=True)
class Label(ScoreTarget):
    """The logit of the class named ``name`` in the model's label names (``config.id2label``).

    Raises:
        TypeError: for a non-string name.
    """

    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"a label name must be a str, got {self.name!r}")

    def bind(self, adapter: ModelAdapter) -> ScoreTarget:
        names = adapter.label_names()
        model = type(adapter.model).__name__
        text_hint = (
            "; text prompts need an image–text model (CLIPModel, SiglipModel, OpenCLIP)"
            if not adapter.has_text_tower
            else ""
        )
        if names is None:
            raise ValueError(
                f"target {self.name!r} is a label name, but {model} carries no label names: "
                f"pass the class index (an int){text_hint}"
            )
        if self.name not in names:
            close = difflib.get_close_matches(self.name, list(names), n=3)
            hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
            shown = ", ".join(map(repr, list(names)[:10])) + (", ..." if len(names) > 10 else "")
            raise ValueError(
                f"target {self.name!r} is not a label of {model} ({hint}labels: {shown}){text_hint}"
            )
        return ClassIndex(list(names).index(self.name))

    def scores(self, adapter: ModelAdapter, output: Any) -> torch.Tensor:
        return self.bind(adapter).scores(adapter, output)


class Prompt(ScoreTarget):
    """A text prompt, or an ensemble of prompts, for an image–text model.

    The score is the model's own image–text logit, ``exp(logit_scale) · cos(image, text)``
    (plus ``logit_bias`` for SigLIP); for several texts the text embedding is the mean of their
    unit-normalised embeddings (Radford et al. 2021's prompt ensembling), so one text scores
    exactly the model's logit. Text embeddings are computed once per call, without gradients.

    Args:
        texts: one prompt, or several forming an ensemble.
        tokenizer: the model's tokenizer; ``None`` for the one its adapter finds (OpenCLIP's
            BPE tokenizer, the tokenizer saved with a Hugging Face model).

    Raises:
        TypeError: for a non-string prompt.
        ValueError: for an empty list or an empty prompt.
    """

    def __init__(self, texts: str | Sequence[str], tokenizer: Any = None) -> None:
        items = [texts] if isinstance(texts, str) else list(texts)
        if not items:
            raise ValueError(
                "Prompt needs at least one text, got an empty list; pass "
                "Prompt('a photo of a dog') or an ensemble Prompt(['a dog', 'a photo of a dog'])"
            )
        for item in items:
            if not isinstance(item, str):
                raise TypeError(f"a prompt must be a str, got {item!r}")
            if not item.strip():
                raise ValueError("a prompt must not be empty; pass the text to explain")
        self.texts = tuple(items)
        self.tokenizer = tokenizer

    def __repr__(self) -> str:
        return f"Prompt({list(self.texts)!r})"

    def __hash__(self) -> int:
        return hash((self.texts, id(self.tokenizer)))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Prompt)
            and self.texts == other.texts
            and self.tokenizer is other.tokenizer
        )

    def scores(self, adapter: ModelAdapter, output: Any) -> torch.Tensor:
        return self.scores_of([self], adapter, output)[:, 0]

    @classmethod
    def scores_of(
        cls, targets: Sequence[ScoreTarget], adapter: ModelAdapter, output: Any
    ) -> torch.Tensor:
        # Every distinct text is embedded once, in one text forward per tokenizer.
        embedded: dict[tuple[int, str], torch.Tensor] = {}
        by_tokenizer: dict[int, tuple[Any, list[str]]] = {}
        for prompt in targets:
            tokenizer, texts = by_tokenizer.setdefault(id(prompt.tokenizer), (prompt.tokenizer, []))  # type: ignore[attr-defined]
            texts.extend(text for text in prompt.texts if text not in texts)  # type: ignore[attr-defined]
        for key, (tokenizer, texts) in by_tokenizer.items():
            vectors = adapter.encode_text(texts, tokenizer)
            embedded.update({(key, text): vector for text, vector in zip(texts, vectors)})
        ensembles = torch.stack(
            [
                torch.stack(
                    [F.normalize(embedded[id(p.tokenizer), t], dim=-1) for t in p.texts]  # type: ignore[attr-defined]
                ).mean(dim=0)
                for p in targets
            ]
        )
        return adapter.image_text_logits(output, ensembles)


def _check_vectors(vectors: Any, name: str) -> torch.Tensor:
    if not isinstance(vectors, torch.Tensor) or not vectors.is_floating_point():
        raise TypeError(f"{name} must be a float tensor (D,) or (B, D), got {vectors!r:.80}")
    if vectors.dim() not in (1, 2) or vectors.shape[-1] == 0:
        raise ValueError(f"{name} must be (D,) or (B, D), got shape {tuple(vectors.shape)}")
    if not torch.isfinite(vectors).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return vectors.detach()


class Embedding(ScoreTarget):
    """Cosine similarity of the model's pooled image embedding with a vector.

    The pooled embedding is what the adapter reads from the output: CLIP / SigLIP image
    embeddings, a Hugging Face encoder's ``pooler_output`` (DINOv2: the normed CLS token), a
    backbone's pooled output (timm ``num_classes=0``).

    Args:
        vectors: ``(D,)`` for every sample, or ``(B, D)`` one per sample.

    Raises:
        TypeError, ValueError: for a non-float, wrongly shaped or non-finite tensor; at scoring,
            for a width other than the embedding's.
    """

    def __init__(self, vectors: torch.Tensor) -> None:
        self.vectors = _check_vectors(vectors, "an Embedding target")

    def scores(self, adapter: ModelAdapter, output: Any) -> torch.Tensor:
        return _cosine(adapter, output, self.vectors, "Embedding")


class ReferenceImage(ScoreTarget):
    """Cosine similarity of the pooled image embedding with a reference image's.

    "Which patches make these two images similar?": the reference is embedded by the same model
    (adapter's :meth:`~attnexplain.capture.ModelAdapter.embed_images`), without gradients, each
    time the target is scored.

    Args:
        images: ``(C, H, W)`` for every sample or ``(B, C, H, W)`` one per sample, preprocessed
            like the inputs.

    Raises:
        TypeError, ValueError: for a non-float, wrongly shaped or non-finite tensor; at scoring,
            for a size or channel count the model cannot take.
    """

    def __init__(self, images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor) or not images.is_floating_point():
            raise TypeError(f"a ReferenceImage must be a float tensor, got {images!r:.80}")
        if images.dim() not in (3, 4):
            raise ValueError(
                f"a ReferenceImage must be (C, H, W) or (B, C, H, W), got {tuple(images.shape)}"
            )
        if not torch.isfinite(images).all():
            raise ValueError("a ReferenceImage contains NaN or infinite values")
        self.images = images.detach() if images.dim() == 4 else images.detach()[None]

    def scores(self, adapter: ModelAdapter, output: Any) -> torch.Tensor:
        images = self.images
        if images.shape[1] != adapter.in_channels:
            raise ValueError(
                f"the ReferenceImage has {images.shape[1]} channels but the model's patch "
                f"embedding expects {adapter.in_channels}"
            )
        adapter.check_input_size(int(images.shape[-2]), int(images.shape[-1]))
        device = adapter.patch_embedding.weight.device
        vectors = adapter.embed_images(images.to(device))
        return _cosine(adapter, output, vectors, "ReferenceImage")


def _cosine(adapter: ModelAdapter, output: Any, vectors: torch.Tensor, what: str) -> torch.Tensor:
    image = adapter.embedding(output)
    batch, width = image.shape
    if vectors.shape[-1] != width:
        raise ValueError(
            f"the {what} target has width {vectors.shape[-1]} but "
            f"{type(adapter.model).__name__}'s pooled image embedding has width {width}; "
            "compute it with the same model (e.g. ReferenceImage(image) or the adapter's "
            "embed_images)"
        )
    vectors = vectors.to(device=image.device, dtype=image.dtype)
    if vectors.dim() == 2 and vectors.shape[0] not in (1, batch):
        raise ValueError(f"the {what} target has {vectors.shape[0]} rows for a batch of {batch}")
    return (F.normalize(image, dim=-1) * F.normalize(vectors, dim=-1)).sum(dim=-1)


class Score(ScoreTarget):
    """Any score: ``function(output)`` must return one value per sample, ``(B,)``.

    ``output`` is what the model's adapter returns from its forward (a Hugging Face
    ``ModelOutput``, a logits tensor, an image–text model's image embedding) or a readout of it.

    Args:
        function: ``score(output) -> (B,)`` float tensor in the autograd graph.

    Raises:
        TypeError: for a non-callable; at scoring, for a result that is no float tensor.
        ValueError: at scoring, for a result of another shape than ``(B,)``.
    """

    def __init__(self, function: Callable[[Any], torch.Tensor]) -> None:
        if not callable(function):
            raise TypeError(f"Score needs a callable score(output) -> (B,), got {function!r}")
        self.function = function

    def scores(self, adapter: ModelAdapter, output: Any) -> torch.Tensor:
        values = self.function(output)
        name = getattr(self.function, "__name__", type(self.function).__name__)
        if not isinstance(values, torch.Tensor) or not values.is_floating_point():
            raise TypeError(
                f"the score callable {name} returned {type(values).__name__}"
                f"{'' if not isinstance(values, torch.Tensor) else f' of dtype {values.dtype}'}; "
                "it must return a float tensor with one score per sample, shape (B,)"
            )
        if values.dim() != 1:
            raise ValueError(
                f"the score callable {name} returned shape {tuple(values.shape)}; it must "
                "return one scalar per sample, shape (B,) (reduce any extra axes, e.g. "
                "logits[:, k] rather than logits)"
            )
        return values


#: Every value a ``target=`` argument accepts (see the module's table).
TargetLike = (
    int
    | str
    | Sequence[Any]
    | torch.Tensor
    | np.ndarray
    | ScoreTarget
    | Callable[[Any], torch.Tensor]
    | None
)


def _check_range(indices: Sequence[int], num_classes: int) -> None:
    bad = [index for index in indices if not 0 <= index < num_classes]
    if bad:
        raise ValueError(
            f"target {bad if len(bad) > 1 else bad[0]} out of range for a model with "
            f"{num_classes} classes (valid: 0 .. {num_classes - 1})"
        )


def _items(target: TargetLike) -> tuple[list[Any], bool]:
    """The raw targets and whether they are one per sample (else one for every sample)."""
    if target is None:
        return [_PREDICTED], False
    if isinstance(target, torch.Tensor | np.ndarray):
        array = torch.as_tensor(target)
        if array.is_floating_point() or array.is_complex() or array.dtype == torch.bool:
            raise TypeError(
                f"target must hold integer class indices, got dtype {array.dtype}; wrap an "
                "embedding vector in Embedding(...)"
            )
        values = [int(value) for value in array.reshape(-1).tolist()]
        if not values:
            raise ValueError("target is an empty tensor; pass one class per sample")
        return values, array.dim() > 0
    if isinstance(target, str | ScoreTarget) or callable(target):
        return [target], False
    if isinstance(target, Sequence):
        if not target:
            raise ValueError("target is an empty list; pass one target per sample or one for all")
        return list(target), True
    return [target], False


def _coerce(item: Any, adapter: ModelAdapter) -> ScoreTarget:
    if isinstance(item, ScoreTarget):
        return item.bind(adapter)
    if isinstance(item, bool):
        raise TypeError(f"target must be {_ACCEPTED}; got {item!r}")
    if isinstance(item, int | np.integer):
        return ClassIndex(int(item))
    if isinstance(item, str):
        return Prompt(item) if adapter.has_text_tower else Label(item).bind(adapter)
    if isinstance(item, Sequence | torch.Tensor | np.ndarray):
        raise TypeError(
            f"target item {item!r:.60} is itself a sequence: a list holds one target per "
            "sample; for a prompt ensemble use Prompt([...]), for an embedding Embedding(...)"
        )
    if callable(item):
        return Score(item)
    raise TypeError(f"target must be {_ACCEPTED}; got {item!r:.60}")


def resolve_targets(target: TargetLike, adapter: ModelAdapter) -> tuple[list[ScoreTarget], bool]:
    """Coerce ``target`` into :class:`ScoreTarget` objects for ``adapter``'s model.

    Args:
        target: any :data:`TargetLike`.
        adapter: the model's adapter (label names, whether strings are prompts).

    Returns:
        The targets, and whether they are one per sample (else one for every sample).

    Raises:
        TypeError, ValueError: for a value that is no target, an empty list, an unknown label.
    """
    items, per_sample = _items(target)
    return [_coerce(item, adapter) for item in items], per_sample


def target_scores(adapter: ModelAdapter, output: Any, target: TargetLike) -> torch.Tensor:
    """Each sample's score under ``target``, read from the model's ``output``.

    Args:
        adapter: the model's adapter.
        output: the model's output (or a readout of it), inside the autograd graph.
        target: any :data:`TargetLike` (see the module's table).

    Returns:
        ``(B,)`` scores.

    Raises:
        TypeError, ValueError: for an invalid target, a list whose length is neither 1 nor
            ``B``, a class out of range, an embedding of the wrong width, a prompt over the
            text context, a score callable returning another shape than ``(B,)``.
        UnsupportedModelError: when the output has nothing the target can read (no logits for
            a class, no text tower for a prompt, no pooled embedding for an embedding).
    """
    targets, per_sample = resolve_targets(target, adapter)
    columns: dict[ScoreTarget, int] = {}
    groups: dict[type[ScoreTarget], list[ScoreTarget]] = {}
    for item in targets:
        if item not in columns:
            group = groups.setdefault(type(item), [])
            columns[item] = len(group)
            group.append(item)
    matrices = {kind: kind.scores_of(group, adapter, output) for kind, group in groups.items()}
    batch = next(iter(matrices.values())).shape[0]
    if per_sample and len(targets) not in (1, batch):
        raise ValueError(f"target has {len(targets)} entries for a batch of {batch}")
    if len(targets) == 1:
        only = targets[0]
        return matrices[type(only)][:, columns[only]]
    return torch.stack(
        [matrices[type(item)][sample, columns[item]] for sample, item in enumerate(targets)]
    )


def class_indices(target: TargetLike, adapter: ModelAdapter, logits: torch.Tensor) -> torch.Tensor:
    """Resolve a class target (index, label name, predicted) to ``(B,)`` int64 indices.

    Args:
        target: ``None``, an int / label name, one per sample, or an integer tensor / array.
        adapter: the model's adapter (label names).
        logits: ``(B, classes)`` logits of the batch.

    Returns:
        ``(B,)`` class indices.

    Raises:
        TypeError: for a target that is not a class (prompts, embeddings and callables are
            scored by :func:`target_scores`, not resolved to indices).
        ValueError: for a wrong length or an index out of range.
    """
    targets, per_sample = resolve_targets(target, adapter)
    batch = logits.shape[0]
    if per_sample and len(targets) not in (1, batch):
        raise ValueError(f"target has {len(targets)} entries for a batch of {batch}")
    predicted = logits.argmax(dim=-1)
    indices = []
    for sample in range(batch):
        item = targets[sample if len(targets) > 1 else 0]
        if isinstance(item, _Predicted):
            indices.append(int(predicted[sample]))
        elif isinstance(item, ClassIndex):
            indices.append(item.index)
        else:
            raise TypeError(
                f"{type(item).__name__} is not a class target; score it with target_scores"
            )
    _check_range(indices, logits.shape[-1])
    return torch.tensor(indices, dtype=torch.long, device=logits.device)
