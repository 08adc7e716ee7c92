"""Localisation metrics: how well an attribution map covers a ground-truth object mask.

Every metric here is an object with one calling convention::

    scores = metric(attributions, masks, ignore=None)   # -> (B,) float64, on the CPU

with ``attributions`` ``(B, K, H, W)`` at image resolution (``K = 1`` except for
:class:`BestHeadJaccard`), ``masks`` ``(B, H, W)`` bool and ``ignore`` ``(B, H, W)`` bool.
Ignored pixels are removed *before* any normalisation or threshold, so they neither carry mass
nor count in the score. The metrics do not know where maps come from: Captum's own methods are
scored the same way.

Degenerate inputs (empty mask, full mask, constant or all-zero map) never give NaN; each
metric's docstring states the value it returns instead.

Examples:
    >>> import torch
    >>> from attnexplain.metrics import EnergyPointingGame
    >>> masks = torch.zeros(1, 4, 4, dtype=torch.bool)
    >>> masks[0, :2] = True
    >>> EnergyPointingGame()(torch.ones(1, 1, 4, 4), masks)
    tensor([0.5000], dtype=torch.float64)
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from attnexplain.metrics.base import Category, Metric, check_maps, check_pixel_mask
from attnexplain.metrics.threshold import mass_threshold_mask


class LocalisationMetric(Metric):
    """Template for ``metric(attributions, masks, ignore=None) -> (B,)``.

    The base validates the inputs, drops ignored pixels and calls :meth:`_score` once per
    sample on the remaining pixels; a metric supplies only :meth:`_score` (and, when it needs
    the mask's geometry, :meth:`_target_masks`).

    Attributes:
        per_head: ``True`` when the metric accepts ``K > 1`` maps per sample.
    """

    category: ClassVar[Category] = "localisation"
    higher_is_better = True
    per_head: ClassVar[bool] = False

    def __call__(
        self,
        attributions: torch.Tensor,
        masks: torch.Tensor,
        ignore: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Score each sample's map against its mask.

        Args:
            attributions: ``(B, K, H, W)`` float maps; ``K = 1`` unless the metric is per-head.
            masks: ``(B, H, W)`` bool object masks.
            ignore: ``(B, H, W)`` bool pixels excluded from scoring, or ``None``.

        Returns:
            ``(B,)`` float64 scores on the CPU.

        Raises:
            TypeError: if an argument is not a tensor of the expected dtype.
            ValueError: on an empty batch, a shape mismatch, ``K != 1`` for a single-map
                metric, NaN/infinite values in ``attributions``, or a sample whose every pixel
                is ignored.
        """
        check_maps(attributions, "attributions", single=not self.per_head)
        batch, _, height, width = attributions.shape
        check_pixel_mask(masks, "masks", batch, (height, width))
        if ignore is None:
            valid = torch.ones_like(masks)
        else:
            valid = ~check_pixel_mask(ignore, "ignore", batch, (height, width))
        fully_ignored = (~valid.flatten(1).any(dim=1)).nonzero().flatten().tolist()
        if fully_ignored:
            raise ValueError(
                f"ignore covers every pixel of sample(s) {fully_ignored}; nothing left to score"
            )
        maps = attributions.detach().to("cpu", torch.float64)
        targets = self._target_masks(masks).cpu()
        valid = valid.cpu()
        scores = [self._score(maps[i][:, valid[i]], targets[i][valid[i]]) for i in range(batch)]
        return torch.tensor(scores, dtype=torch.float64)

    def _target_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """Masks the maps are scored against, ``(B, H, W)`` bool; by default the masks given."""
        return masks

    @abc.abstractmethod
    def _score(self, maps: torch.Tensor, mask: torch.Tensor) -> float:
        """One sample's score.

        Args:
            maps: ``(K, N)`` float64 values of the ``N`` scored (non-ignored) pixels.
            mask: ``(N,)`` bool ground truth of the same pixels.

        Returns:
            The score as a Python float (never NaN).
        """


def _jaccard(predicted: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Intersection over union of ``(K, N)`` predictions with an ``(N,)`` mask, ``(K,)``.

    Two empty sets agree perfectly, so an empty union gives 1.0.
    """
    intersection = (predicted & mask).sum(dim=-1).double()
    union = (predicted | mask).sum(dim=-1).double()
    return torch.where(union > 0, intersection / union.clamp_min(1), 1.0)


class _MassJaccardBase(LocalisationMetric):
    """Shared by the two DINO Jaccards: the mass threshold of every map, then IoU."""

    def __init__(self, mass: float = 0.6) -> None:
        # Checked here as well as in mass_threshold_mask so a bad value fails at construction,
        # not in the middle of a benchmark run.
        if not 0.0 < mass <= 1.0:
            raise ValueError(f"mass must be in (0, 1], got {mass}")
        self.mass = mass

    def _params(self) -> dict[str, Any]:
        return {"mass": self.mass}

    def _head_jaccards(self, maps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # The threshold wants (..., H, W); the scored pixels form one row per map.
        predicted = mass_threshold_mask(maps.clamp(min=0).unsqueeze(1), self.mass).squeeze(1)
        return _jaccard(predicted, mask)


class MassJaccard(_MassJaccardBase):
    """Jaccard index of DINO's mass-threshold mask with the object mask.

    The map is clamped at 0, the smallest set of top pixels holding ``mass`` of its total is
    kept (:func:`~attnexplain.metrics.threshold.mass_threshold_mask`), and the score is
    ``|kept ∩ mask| / |kept ∪ mask|``.

    Source: Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers"
    (ICCV), Table 4 / Fig. 4; threshold from ``facebookresearch/dino`` ``visualize_attention.py``.

    Signed maps: clamped at 0 (negative evidence carries no mass).

    Degenerate cases: a map that is all ``<= 0`` keeps no pixel, so it scores 0.0 against a
    non-empty mask and 1.0 against an empty one (two empty sets agree). On a plateau the rule
    keeps an arbitrary subset of tied pixels, so a binary map equal to the mask scores about
    ``mass``, not 1 (``mass=1.0`` keeps every positive pixel).

    Args:
        mass: fraction of the map's total mass kept, in ``(0, 1]``; DINO uses 0.6.

    Raises:
        ValueError: if ``mass`` is outside ``(0, 1]``.
    """

    name = "mass_jaccard"

    def _score(self, maps: torch.Tensor, mask: torch.Tensor) -> float:
        return float(self._head_jaccards(maps, mask)[0])


class BestHeadJaccard(_MassJaccardBase):
    """Per sample, the best head's :class:`MassJaccard`.

    Takes per-head maps ``(B, heads, H, W)`` and returns, per sample, the maximum over heads of
    the Jaccard of the head's mass-threshold mask with the object mask. ``K = 1`` is accepted
    and equals :class:`MassJaccard`.

    Source: Caron et al. 2021 (DINO), Sec. 4.2.1 / Table 4: "we report the Jaccard similarity
    ... of the best head" on PASCAL VOC12.

    Signed maps and degenerate cases: as :class:`MassJaccard`, per head.

    Args:
        mass: fraction of each head's total mass kept, in ``(0, 1]``; DINO uses 0.6.

    Raises:
        ValueError: if ``mass`` is outside ``(0, 1]``.
    """

    name = "best_head_jaccard"
    per_head: ClassVar[bool] = True

    def _score(self, maps: torch.Tensor, mask: torch.Tensor) -> float:
        return float(self._head_jaccards(maps, mask).max())


def chefer_binarise(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Chefer et al.'s segmentation of one map: min-max normalise, threshold at the mean.

    Source: ``hila-chefer/Transformer-Explainability`` ``imagenet_seg_eval.py``
    (``Res = (Res - Res.min()) / (Res.max() - Res.min()); Res_1 = Res.gt(Res.mean())``).

    Args:
        values: ``(N,)`` float map values (signed values are used as they are).

    Returns:
        ``(normalised, foreground)``: ``(N,)`` float64 in ``[0, 1]`` and ``(N,)`` bool
        (``normalised > normalised.mean()``). A constant map has no range; the reference code
        turns its ``0/0`` NaNs into 0, so it normalises to all zeros and has no foreground.
    """
    values = values.double()
    low, span = values.min(), values.max() - values.min()
    normalised = (values - low) / span if span > 0 else torch.zeros_like(values)
    return normalised, normalised > normalised.mean()


class PixelAccuracy(LocalisationMetric):
    """Fraction of pixels whose Chefer foreground/background label matches the mask.

    The map is binarised by :func:`chefer_binarise` and compared pixel by pixel with the mask.

    Source: Chefer, Gur & Wolf 2021, "Transformer Interpretability Beyond Attention
    Visualization" (CVPR), Sec. 4 (ImageNet-segmentation); ``imagenet_seg_eval.py``. The
    reference code pools pixels over the dataset; with equal image sizes and no ignored pixels
    the mean of these per-sample scores is the same number.

    Signed maps: used as they are (the min-max normalisation absorbs the sign).

    Degenerate cases: a constant map predicts background everywhere, so it scores the
    background fraction (1.0 on an empty mask, 0.0 on a full one).
    """

    name = "pixel_accuracy"

    def _score(self, maps: torch.Tensor, mask: torch.Tensor) -> float:
        _, foreground = chefer_binarise(maps[0])
        return float((foreground == mask).double().mean())


class MeanIoU(LocalisationMetric):
    """Two-class mIoU of the Chefer segmentation: mean of the foreground and background IoUs.

    Source: Chefer et al. 2021 (CVPR), Sec. 4; ``imagenet_seg_eval.py`` with
    ``batch_intersection_union(..., nclass=2)``. The reference code sums intersections and
    unions over the dataset before dividing; this metric is per sample, so its mean over a
    dataset weights images equally instead and differs slightly.

    Signed maps: used as they are (the min-max normalisation absorbs the sign).

    Degenerate cases: a class absent from both prediction and mask (empty union) is left out of
    the mean, as in mmseg's ``nanmean``; both classes cannot be absent. So a constant map (all
    background) scores 1.0 on an empty mask and 0.0 on a full one.
    """

    name = "mean_iou"

    def _score(self, maps: torch.Tensor, mask: torch.Tensor) -> float:
        _, foreground = chefer_binarise(maps[0])
        predicted = torch.stack([foreground, ~foreground])
        truth = torch.stack([mask, ~mask])
        intersection = (predicted & truth).sum(dim=1).double()
        union = (predicted | truth).sum(dim=1).double()
        present = union > 0
        return float((intersection[present] / union[present]).mean())


class AveragePrecision(LocalisationMetric):
    """Average precision of the continuous (min-max normalised) map as a mask detector.

    ``sklearn.metrics.average_precision_score(mask, normalised_map)``. Without background this
    is rank-based, so invariant to any strictly increasing transform of the map.

    Source: Chefer et al. 2021 (CVPR), Sec. 4; ``imagenet_seg_eval.py`` ``get_ap_scores``.

    Signed maps: used as they are (rank-based).

    Degenerate cases: an empty mask has no positives, AP is undefined and scored 0.0 (the
    reference code's ``np.nan_to_num``); a full mask scores 1.0; a constant map scores the
    positive fraction (sklearn's value for all-tied scores).

    Args:
        include_background: ``False`` (default): the foreground AP of the map against the mask.
            ``True``: the reference code's exact pooling, which scores the background channel
            ``1 - map`` against ``~mask`` too and computes one AP over both channels' pixels.
    """

    name = "average_precision"

    def __init__(self, include_background: bool = False) -> None:
        self.include_background = include_background

    def _params(self) -> dict[str, Any]:
        return {"include_background": self.include_background}

    def _score(self, maps: torch.Tensor, mask: torch.Tensor) -> float:
        normalised, _ = chefer_binarise(maps[0])
        if self.include_background:
            normalised = torch.cat([1.0 - normalised, normalised])
            mask = torch.cat([~mask, mask])
        if not mask.any():
            return 0.0
        # Imported here: scikit-learn costs a second at import, which every CLI start paid.
        from sklearn.metrics import average_precision_score

        # sklearn sums precision x recall steps and can land a rounding step above 1 (e.g. on a
        # mask covering the whole image); AP is at most 1 by definition.
        return min(1.0, float(average_precision_score(mask.numpy(), normalised.numpy())))


class AUROC(LocalisationMetric):
    """Area under the ROC curve of the map's values as a pixel classifier of the mask.

    ``sklearn.metrics.roc_auc_score(mask, map)``: the probability that a random object pixel
    outranks a random background pixel (ties count one half). Rank-based.

    Source: the standard pixel-level AUC of saliency evaluation (e.g. Bylinskii et al. 2019,
    "What do different evaluation metrics tell us about saliency models?", TPAMI).

    Signed maps: used as they are (rank-based).

    Degenerate cases: an empty or full mask has one class only, the AUC is undefined and scored
    0.5 (chance); a constant map scores 0.5.
    """

    name = "auroc"

    def _score(self, maps: torch.Tensor, mask: torch.Tensor) -> float:
        if mask.all() or not mask.any():
            return 0.5
        from sklearn.metrics import roc_auc_score

        return float(roc_auc_score(mask.numpy(), maps[0].numpy()))


def dilate(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """Dilate ``(B, H, W)`` bool masks by a disk of ``radius`` pixels (Euclidean), same shape."""
    if radius == 0:
        return masks
    offsets = torch.arange(-radius, radius + 1)
    disk = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= radius**2).float()
    # A pixel is in the dilation if the disk centred on it touches the mask: a correlation with
    # the disk counts the touching mask pixels (exact in float32 far beyond image sizes).
    touching = F.conv2d(masks.float().unsqueeze(1), disk[None, None], padding=radius)
    return touching.squeeze(1) > 0.5


class PointingGame(LocalisationMetric):
    """Whether the map's maximum falls on the object, up to ``tolerance`` pixels.

    A hit when the argmax pixel lies in the mask dilated by a disk of radius ``tolerance``.
    Tied maxima are all candidates and the score is the fraction of them that hit: the expected
    hit of a uniformly random tie-break, so 0/1 for a unique maximum and, for a constant map,
    the (dilated) mask's area fraction — chance, not a free hit. Ignored pixels cannot be the
    maximum, but the dilation may cross them.

    Source: Zhang et al. 2016, "Top-down Neural Attention by Excitation Backprop" (ECCV),
    Sec. 5.1, which uses ``tolerance=15``.

    Signed maps: used as they are (only the argmax matters). Rank-based.

    Degenerate cases: 0.0 on an empty mask, 1.0 on a full one.

    Args:
        tolerance: radius in pixels of the disk the mask is dilated by, ``>= 0``.

    Raises:
        TypeError: if ``tolerance`` is not an int.
        ValueError: if ``tolerance`` is negative.
    """

    name = "pointing_game"

    def __init__(self, tolerance: int = 0) -> None:
        if isinstance(tolerance, bool) or not isinstance(tolerance, int):
            raise TypeError(f"tolerance must be an int (pixels), got {type(tolerance).__name__}")
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0 pixels, got {tolerance}")
        self.tolerance = tolerance

    def _params(self) -> dict[str, Any]:
        return {"tolerance": self.tolerance}

    def _target_masks(self, masks: torch.Tensor) -> torch.Tensor:
        return dilate(masks, self.tolerance)

    def _score(self, maps: torch.Tensor, mask: torch.Tensor) -> float:
        top = maps[0] == maps[0].max()
        return float((top & mask).sum().double() / top.sum())


class EnergyPointingGame(LocalisationMetric):
    """Fraction of the map's (non-negative) energy that falls inside the mask.

    ``sum(map⁺ · mask) / sum(map⁺)`` with ``map⁺ = max(map, 0)``.

    Source: Wang et al. 2020, "Score-CAM: Score-Weighted Visual Explanations for Convolutional
    Neural Networks" (CVPR Workshops), Sec. 4.3.

    Signed maps: clamped at 0.

    Degenerate cases: a map with no positive value has no energy to place and scores 0.0; an
    empty mask scores 0.0, a full mask 1.0 (for a map with positive values).
    """

    name = "energy_pointing_game"

    def _score(self, maps: torch.Tensor, mask: torch.Tensor) -> float:
        energy = maps[0].clamp(min=0)
        total = energy.sum()
        if total == 0:
            return 0.0
        return float(energy[mask].sum() / total)
