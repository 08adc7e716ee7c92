"""Datasets with ground-truth masks; every loader yields :class:`SegmentationSample`."""

from attnexplain.data.base import SegmentationSample
from attnexplain.data.coco import COCOInstances
from attnexplain.data.imagenet_seg import ImageNetSegmentation
from attnexplain.data.synthetic import SyntheticShapes, generate_sample
from attnexplain.data.voc import VOCSegmentation

__all__ = [
    "COCOInstances",
    "ImageNetSegmentation",
    "SegmentationSample",
    "SyntheticShapes",
    "VOCSegmentation",
    "generate_sample",
]
