"""NumPy's OpenBLAS runs single-threaded inside the python stage and as before outside it."""
import numpy as np
import pytest

from pipelines.blas import openblas_thread_controls, single_threaded_blas


def test_single_threaded_blas_inside_restored_after():
    controls = openblas_thread_controls()
    if not controls:
        pytest.skip("no OpenBLAS library mapped into this process")
    before = [get() for get, _ in controls]
    with single_threaded_blas():
        assert [get() for get, _ in controls] == [1] * len(controls)
        a = np.ones((64, 64), dtype=np.float32)
        assert float((a @ a)[0, 0]) == 64.0
    assert [get() for get, _ in controls] == before
