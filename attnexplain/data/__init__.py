"""Datasets with ground-truth masks; every loader yields :class:`SegmentationSample`."""

from attnexplain.data.base import SegmentationSample
from attnexplain.data.coco import COCOInstances
from attnexplain.data.imagenet_seg import ImageNetSegmentation
from attnexplain.data.objects import AnnotatedObject, ClassMasks, ObjectDataset, class_masks
from attnexplain.data.scenes import SyntheticScenes, generate_scene
from attnexplain.data.synthetic import SyntheticShapes, generate_sample
from attnexplain.data.voc import VOCSegmentation

__all__ = [
    "AnnotatedObject",
    "COCOInstances",
    "ClassMasks",
    "ImageNetSegmentation",
    "ObjectDataset",
    "SegmentationSample",
    "SyntheticScenes",
    "SyntheticShapes",
    "VOCSegmentation",
    "class_masks",
    "generate_sample",
    "generate_scene",
]
