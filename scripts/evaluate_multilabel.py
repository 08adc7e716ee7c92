"""The numbers of ``attnexplain/zoo/MODEL_CARD_multilabel.md`` (offline, ~1 min on CPU).

    python scripts/evaluate_multilabel.py [--images 1000]

Prints, for the embedded multi-label model on the first ``--images`` images of each test split:
mAP, macro F1, exact match and per-class AP / F1 on the multi-object scenes (also by number of
objects), and top-1 accuracy on the single-object test split next to the default model's.
"""

from __future__ import annotations

import argparse

import torch

from attnexplain.data.scenes import SyntheticScenes
from attnexplain.data.synthetic import CLASS_NAMES, SyntheticShapes
from attnexplain.zoo import load_default
from attnexplain.zoo.train import multilabel_scores


def _logits(model, preprocess, dataset, count: int) -> tuple[torch.Tensor, list]:
    samples = [dataset[i] for i in range(count)]
    logits = []
    with torch.no_grad():
        for start in range(0, count, 200):
            batch = torch.stack([s.image for s in samples[start : start + 200]])
            logits.append(model(pixel_values=preprocess(batch)).logits)
    return torch.cat(logits), samples


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model, preprocess = load_default("multilabel")

    scenes = SyntheticScenes("test", args.images, preprocess.image_size)
    logits, samples = _logits(model, preprocess, scenes, args.images)
    present = torch.zeros(len(samples), len(CLASS_NAMES))
    for row, sample in enumerate(samples):
        present[row, sample.object_labels] = 1.0
    scores = multilabel_scores(logits, present)
    print(f"multi-object test scenes ({args.images}):")
    print(f"  mAP {scores['mAP']:.4f}  macro F1 {scores['macro_f1']:.4f}  "
          f"exact match {scores['exact_match']:.4f}")  # fmt: skip
    print("  | class | AP | F1 |")
    for name in CLASS_NAMES:
        print(f"  | {name} | {scores[f'ap/{name}']:.3f} | {scores[f'f1/{name}']:.3f} |")
    counts = present.sum(dim=1)
    for count in (1, 2, 3):
        chosen = counts == count
        part = multilabel_scores(logits[chosen], present[chosen])
        print(f"  {count} object(s), {int(chosen.sum())} images: mAP {part['mAP']:.4f} "
              f"macro F1 {part['macro_f1']:.4f} exact match {part['exact_match']:.4f}")  # fmt: skip

    shapes = SyntheticShapes("test", args.images, preprocess.image_size)
    for name in ("multilabel", "default"):
        net, prep = (model, preprocess) if name == "multilabel" else load_default()
        logits, samples = _logits(net, prep, shapes, args.images)
        labels = torch.tensor([s.label for s in samples])
        accuracy = (logits.argmax(dim=1) == labels).double().mean()
        print(f"single-object test images ({args.images}), {name} model: top-1 {accuracy:.4f}")


if __name__ == "__main__":
    main()
