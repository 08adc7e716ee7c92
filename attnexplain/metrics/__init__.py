"""Metrics for attribution maps: localisation, faithfulness, sanity checks and baselines.

Metrics take maps, never models' internals, so Captum's own attribution methods are scored the
same way as attention-based ones.
"""

from attnexplain.metrics.base import Metric
from attnexplain.metrics.baselines import centre_gaussian_map, random_map
from attnexplain.metrics.faithfulness import (
    DeletionInsertion,
    FaithfulnessMetric,
    PerturbationCurves,
    PerturbationTest,
    gaussian_blur,
)
from attnexplain.metrics.localisation import (
    AUROC,
    AveragePrecision,
    BestHeadJaccard,
    EnergyPointingGame,
    LocalisationMetric,
    MassJaccard,
    MeanIoU,
    PixelAccuracy,
    PointingGame,
    chefer_binarise,
)
from attnexplain.metrics.sanity import cascading_randomization, default_layer_order
from attnexplain.metrics.threshold import mass_threshold_mask

__all__ = [
    "AUROC",
    "AveragePrecision",
    "BestHeadJaccard",
    "DeletionInsertion",
    "EnergyPointingGame",
    "FaithfulnessMetric",
    "LocalisationMetric",
    "MassJaccard",
    "MeanIoU",
    "Metric",
    "PerturbationCurves",
    "PerturbationTest",
    "PixelAccuracy",
    "PointingGame",
    "cascading_randomization",
    "centre_gaussian_map",
    "chefer_binarise",
    "default_layer_order",
    "gaussian_blur",
    "mass_threshold_mask",
    "random_map",
]
