"""Shared fixtures: one tiny synthetic dataset per test session."""

import pytest

from data.synthetic import SyntheticSpec, generate_dataset

TINY_SPEC = SyntheticSpec(
    num_classes=2, videos_per_class_train=2, videos_per_class_test=2,
    width=64, height=48, frames=24, fps=15, seed=7,
)


@pytest.fixture(scope="session")
def tiny_spec() -> SyntheticSpec:
    return TINY_SPEC


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """A generated 2-class dataset (2 train + 2 test videos per class, 64x48, 24 frames, VP9)."""
    root = tmp_path_factory.mktemp("synthetic")
    summary = generate_dataset(root, TINY_SPEC, workers=1)
    return root, summary
