"""Fixtures of the benchmark tests: the data tests' on-disk dataset fixtures, reused."""

from tests.data.conftest import imagenet_seg_fixture, voc_fixture  # noqa: F401
