"""Fixtures for tests/fame: natural-image clips with a moving object, and the CuPy skip."""

from __future__ import annotations

import pytest
from fame_testing import PAN_STEP, natural_batch


@pytest.fixture(scope="session")
def natural_112():
    return natural_batch(112)


@pytest.fixture(scope="session")
def natural_224():
    return natural_batch(224)


@pytest.fixture(scope="session")
def panning_112():
    return natural_batch(112, pan=PAN_STEP)


@pytest.fixture
def cupy():
    """The cupy module when a CUDA device is usable; skips the test otherwise."""
    try:
        import cupy
    except ImportError:
        pytest.skip("cupy is not installed")
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("no CUDA device")
    except Exception as error:  # no driver or runtime mismatch: no usable GPU
        pytest.skip(f"no usable CUDA device ({type(error).__name__})")
    return cupy
