"""Metrics for attribution maps: localisation, class-specific, faithfulness, sanity, baselines.

Metrics take maps, never models' internals, so Captum's own attribution methods are scored the
same way as attention-based ones.
"""

from attnexplain.metrics.base import Metric
from attnexplain.metrics.baselines import centre_gaussian_map, random_map
from attnexplain.metrics.class_specific import (
    ClassSensitivity,
    ClassSpecificMetric,
    Leakage,
    NegativeQueryMass,
    ObjectLocalisation,
    TargetPointingGame,
)
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
    "ClassSensitivity",
    "ClassSpecificMetric",
    "DeletionInsertion",
    "EnergyPointingGame",
    "FaithfulnessMetric",
    "Leakage",
    "LocalisationMetric",
    "MassJaccard",
    "MeanIoU",
    "Metric",
    "NegativeQueryMass",
    "ObjectLocalisation",
    "PerturbationCurves",
    "PerturbationTest",
    "PixelAccuracy",
    "PointingGame",
    "TargetPointingGame",
    "cascading_randomization",
    "centre_gaussian_map",
    "chefer_binarise",
    "default_layer_order",
    "gaussian_blur",
    "mass_threshold_mask",
    "random_map",
]
