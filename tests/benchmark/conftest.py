"""Fixtures of the benchmark tests: a tiny model, and the data tests' on-disk datasets."""

import pytest
import torch

from tests.benchmark.helpers import tiny_model
from tests.data.conftest import imagenet_seg_fixture, voc_fixture  # noqa: F401


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """A random tiny ViT classifier over the synthetic data's six classes, in eval mode."""
    return tiny_model()
