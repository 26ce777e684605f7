"""The default install (requirements.txt): every CUDA library the GPU path loads resolves on this
machine (no GPU needed) and torch, CuPy and DALI are built for the same CUDA major.

The library list and the comparisons are runners.doctor's (`make doctor` runs the same checks).
"""
from __future__ import annotations

import os
import re

import pytest

from engine import stack

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CUDA_12_WHEELS = ("nvidia-dali-cuda120", "cupy-cuda12x")
CUDA_13_WHEELS = ("nvidia-dali-cuda130", "cupy-cuda13x")


@pytest.mark.parametrize("library", stack.CUDA_LIBRARIES, ids=lambda library: library.name)
def test_every_cuda_library_of_the_gpu_path_loads(library):
    error = stack.library_load_error(library)
    assert error == "", f"{library.name} (needed by {library.used_by}) does not load: {error}; {stack.SETUP_FIX}"


def test_torch_cupy_and_dali_share_the_cuda_major():
    majors = stack.cuda_majors()
    assert stack.majors_problem(majors) == "", stack.majors_problem(majors)
    assert set(majors.values()) == {stack.WANTED_CUDA_MAJOR}, majors


def test_majors_problem_rejects_disagreeing_majors():
    problem = stack.majors_problem({"torch": "13", "CuPy": "12", "DALI": "12"})
    assert "disagree (torch 13, CuPy 12, DALI 12)" in problem
    assert stack.majors_problem({"torch": "13", "CuPy": "13", "DALI": "13"}) == ""


def test_the_cuda_12_wheels_would_be_rejected(monkeypatch):
    """What the CUDA 12 wheels report: their wheel names and CuPy's runtime version give major 12,
    which disagrees with torch's 13 (the CUDA 12 wheels are not installed here to show it)."""
    monkeypatch.setattr(stack, "installed_wheels", lambda: sorted(CUDA_12_WHEELS))
    assert stack.dali_cuda_major() == "12" and stack.wheel_majors(stack.CUPY_WHEEL) == ["12"]
    monkeypatch.setattr(stack, "cupy_cuda_major", lambda: stack.major_of_version(12090))
    assert "disagree" in stack.majors_problem(stack.cuda_majors())


def test_the_installed_cuda_wheels_are_the_requirements():
    with open(os.path.join(ROOT, "requirements.txt")) as file:
        pinned = {name.lower() for name in re.findall(r"^([A-Za-z0-9_.-]+)==", file.read(), re.MULTILINE)}
    assert set(CUDA_13_WHEELS) <= pinned, f"requirements.txt must pin {CUDA_13_WHEELS}, pins {sorted(pinned)}"
    installed = set(stack.installed_wheels())
    assert set(CUDA_13_WHEELS) <= installed, f"run `make setup`: {CUDA_13_WHEELS} are not all installed"
    stale = installed & set(CUDA_12_WHEELS)
    assert not stale, f"CUDA 12 wheels {sorted(stale)} are installed: {stack.STALE_WHEELS_FIX}"
    assert not os.path.exists(os.path.join(ROOT, "requirements-cuda13.txt")), "one requirements file per install"
