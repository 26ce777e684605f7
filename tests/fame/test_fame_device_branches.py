"""The branches written for CuPy, exercised on the CPU by a stand-in array module that is not numpy.

fame/ takes a few different routes when the array module is not NumPy (a scatter-add histogram,
whole-batch frame statistics, a single where() merge). A proxy that forwards every attribute
to NumPy but is a different object sends the NumPy arrays down those routes, so their logic
is checked here even without a GPU; the real CuPy runs are in test_fame_gpu.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from fame_testing import with_static_patches_outside_the_unit_range

import fame
from fame import arrays, colour, mask, merging, motion, select


class NumpyStandIn:
    """Forwards attributes to numpy while failing `xp is np` checks."""

    def __getattr__(self, name):
        return getattr(np, name)


@pytest.fixture
def device_branches(monkeypatch):
    stand_in = NumpyStandIn()
    for module in (arrays, colour, mask, merging, motion, select):
        monkeypatch.setattr(module, "array_module", lambda array: stand_in)


@pytest.mark.parametrize(
    "options", [{}, {"beta": "auto"}, {"variant": "grid"}, {"variant": "gauss"}, {"camera_compensation": "phase"}]
)
def test_device_branches_give_the_numpy_masks(options, natural_112, request):
    clips, _ = natural_112
    expected = fame.foreground_mask(clips, **options)
    request.getfixturevalue("device_branches")
    np.testing.assert_array_equal(fame.foreground_mask(clips, **options), expected)


def test_device_branch_merge_and_augment(natural_112, request):
    clips, _ = natural_112
    expected, expected_masks = fame.augment(clips, fame.FameConfig(), np.random.default_rng(0))
    request.getfixturevalue("device_branches")
    merged, masks = fame.augment(clips, fame.FameConfig(), np.random.default_rng(0))
    np.testing.assert_array_equal(masks, expected_masks)
    np.testing.assert_array_equal(merged, expected)
    backgrounds = clips[::-1].copy()
    keep = masks.astype(bool)[:, None, :, :, None]
    np.testing.assert_array_equal(fame.merge(clips, masks, backgrounds), np.where(keep, clips, backgrounds))


def test_device_branch_keeps_out_of_range_colours_in_their_own_clip(natural_112, request):
    """The scatter-add (CuPy) histogram raises no error for a bin index outside the clip: it would count
    the pixel in a neighbouring clip, so float colours outside [0, 1] must be clipped first."""
    clips = with_static_patches_outside_the_unit_range(natural_112[0])
    expected = fame.foreground_mask(np.clip(clips, 0, 1))
    request.getfixturevalue("device_branches")
    np.testing.assert_array_equal(fame.foreground_mask(clips), expected)
