"""What ``explain``'s gradient methods explain: a class (``--target``), text prompts
(``--prompt``) or a reference image (``--reference``).

A run makes one pass over the images per **query**. Without ``--prompt`` / ``--reference`` there
is one query, the class (``--target``, else each image's prediction), and outputs keep the
image's stem. Otherwise every ``--prompt`` is a query whose outputs are ``STEM_prompt-N`` (``N``
counting the prompts from 1, in the order given), and ``--reference`` one more, ``STEM_reference``;
the settings sidecar records the prompt or the reference file.
"""

from __future__ import annotations

import argparse
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnexplain.cli.errors import UsageError

#: Output suffix of the N-th prompt (from 1) and of the reference image.
PROMPT_SUFFIX = "_prompt-{}"
REFERENCE_SUFFIX = "_reference"


@dataclass(frozen=True)
class Query:
    """One thing the gradient methods explain, over every image.

    Attributes:
        suffix: appended to each image's output stem (``""`` for the class query).
        target: the library target (:class:`~attnexplain.methods.targets.Prompt` or
            :class:`~attnexplain.methods.targets.ReferenceImage`); ``None`` for the class query,
            whose per-image classes are resolved batch by batch.
        prompt: the prompt's text, for the settings and the figure.
        reference: the reference image as given, for the settings and the figure.
    """

    suffix: str = ""
    target: Any = None
    prompt: str | None = None
    reference: str | None = None

    def describe(self) -> str | None:
        """What the figure's title says the gradient methods explain (``None``: a class)."""
        if self.prompt is not None:
            return f"the prompt {self.prompt!r}"
        if self.reference is not None:
            return f"the similarity to {self.reference}"
        return None


def check_query_flags(args: argparse.Namespace) -> None:
    """Checks that need no model: ``--target`` against ``--prompt`` / ``--reference``, empty
    prompts, a reference image that is missing or unreadable.

    Raises:
        UsageError: naming the flag and the fix.
    """
    from attnexplain.cli.images import identify

    prompts = args.prompt or []
    if args.target is not None and (prompts or args.reference is not None):
        flag = "--prompt" if prompts else "--reference"
        raise UsageError(
            f"--target and {flag} both say what the gradient methods explain; pass one: "
            f"--target for a classifier's class, {flag} for an image-text model"
        )
    for number, text in enumerate(prompts, 1):
        if not text.strip():
            raise UsageError(f"--prompt number {number} is empty; pass the text to explain")
    if args.reference is not None:
        path = Path(args.reference)
        if not path.is_file():
            raise UsageError(f"--reference image not found: {path}")
        identify(path)


def build_queries(
    args: argparse.Namespace, adapter: Any, preprocess: Any, device: Any
) -> list[Query]:
    """The run's queries, checked against the loaded model.

    Args:
        args: the parsed ``explain`` arguments (``prompt``, ``reference``).
        adapter: the model's :class:`~attnexplain.capture.ModelAdapter`.
        preprocess: the model's preprocessing (for the reference image).
        device: where the model runs.

    Returns:
        One :class:`Query` per prompt, then the reference's; the class query if neither.

    Raises:
        UsageError: for ``--prompt`` on a model without a text tower.
    """
    from attnexplain.cli.images import ImageSource, open_image
    from attnexplain.methods.targets import Prompt, ReferenceImage

    prompts = args.prompt or []
    if prompts and not adapter.has_text_tower:
        raise UsageError(
            f"--prompt needs an image-text model (e.g. --model clip), but "
            f"{type(adapter.model).__name__} has no text tower; explain a class with --target"
        )
    queries = [
        Query(PROMPT_SUFFIX.format(number), Prompt(text), prompt=text)
        for number, text in enumerate(prompts, 1)
    ]
    if args.reference is not None:
        image = open_image(ImageSource(args.reference, path=Path(args.reference)))
        reference = ReferenceImage(preprocess(image)[0].to(device))
        queries.append(Query(REFERENCE_SUFFIX, reference, reference=args.reference))
    return queries or [Query()]


def label_names(model: Any) -> dict[int, str]:
    """Class index -> name from the model's config (Hugging Face) or pretrained config (timm)."""
    id2label = getattr(getattr(model, "config", None), "id2label", None)
    if id2label:
        return {int(k): str(v) for k, v in id2label.items()}
    names = (getattr(model, "pretrained_cfg", None) or {}).get("label_names")
    return dict(enumerate(names)) if names else {}


def resolve_class(text: str | None, labels: dict[int, str], classes: int) -> int | None:
    """``--target`` as a class index (checked against the model's ``classes``).

    Raises:
        UsageError: for an index out of range or a name that is not a label of the model.
    """
    if text is None:
        return None
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < classes:
            raise UsageError(
                f"--target {index}: the model has {classes} classes (0 to {classes - 1})"
            )
        return index
    by_name = {name.lower(): index for index, name in labels.items()}
    if text.lower() in by_name:
        return by_name[text.lower()]
    if not labels:
        raise UsageError(f"--target {text!r}: this model has no label names; pass a class index")
    close = difflib.get_close_matches(text, list(labels.values()), n=3)
    hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
    raise UsageError(
        f"--target {text!r} is not a label of this model{hint}; pass an index or a name"
    )
