"""fame.foreground_mask against a straightforward reference written from the paper and its published code.

The reference works on one clip at a time in float64, with colorsys for HSV, numpy.pad's
"reflect" mode and an explicit 2-D sum for the blur, and a stable argsort for every top-k.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest
from fame_testing import iou

import fame

SPEC_BINS = 10
SPEC_FG_FRACTION = 0.5
SPEC_BG_FRACTION = 0.1
SPEC_LAPLACE = 1.0
SPEC_EPS = 1e-8
MIN_IOU = 0.99


def reference_blur(image: np.ndarray) -> np.ndarray:
    """Gaussian blur, k = int(0.1 * crop) // 2 * 2 + 1, sigma = k / 3, torch-style reflect padding."""
    size = int(0.1 * image.shape[0]) // 2 * 2 + 1
    sigma = size / 3
    radius = size // 2
    taps = np.exp(-((np.arange(size) - radius) ** 2) / (2 * sigma**2))
    taps /= taps.sum()
    padded = np.pad(image, radius, mode="reflect")
    out = np.zeros_like(image)
    for i in range(size):
        for j in range(size):
            out += taps[i] * taps[j] * padded[i : i + image.shape[0], j : j + image.shape[1]]
    return out


def reference_normalise(image: np.ndarray) -> np.ndarray:
    image = image - image.min()
    return image / (image.max() + SPEC_EPS)


def top_indices(values: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` largest values; the lower index first among equal values."""
    return np.argsort(-values.ravel(), kind="stable")[:count]


def published_level(fraction: float) -> int:
    """fraction * 9 rounded as the published code did: round half to even of fraction * 9 + 1, minus 1."""
    return int(np.rint(fraction * (SPEC_BINS - 1) + 1)) - 1


def reference_bins(frame: np.ndarray, hue: str) -> np.ndarray:
    """(H, W) colour bin per pixel of an RGB frame in [0, 1]."""
    bins = np.zeros(frame.shape[:2], dtype=np.int64)
    for row in range(frame.shape[0]):
        for col in range(frame.shape[1]):
            red, green, blue = frame[row, col]
            hue_turns, saturation, value = colorsys.rgb_to_hsv(red, green, blue)
            saturation = (max(red, green, blue) - min(red, green, blue)) / (value + SPEC_EPS)
            angle = hue_turns * 2 * math.pi * (2 * math.pi if hue == "published" else 1.0)
            x = published_level((saturation * math.cos(angle) + 1) / 2)
            y = published_level((saturation * math.sin(angle) + 1) / 2)
            bins[row, col] = x * SPEC_BINS**2 + y * SPEC_BINS + published_level(value)
    return bins


def reference_mask(clip: np.ndarray, beta: float, hue: str = "published") -> np.ndarray:
    """(T, H, W, 3) uint8 clip -> (H, W) {0, 1} mask, following the paper and its published code
    step by step in float64."""
    frames, height, width, _ = clip.shape
    pixels = height * width
    seed = np.abs(np.diff(clip.astype(np.float64) / 255, axis=0)).sum(axis=(0, 3)) / (frames - 1)
    seed = reference_normalise(reference_blur(seed))
    bins = reference_bins(clip.sum(axis=0, dtype=np.float64) / (255 * frames), hue).ravel()
    foreground = bins[top_indices(seed, int(SPEC_FG_FRACTION * height * width))]
    background = bins[np.argsort(seed.ravel(), kind="stable")[: int(SPEC_BG_FRACTION * height * width)]]
    p_fg = np.bincount(foreground, minlength=SPEC_BINS**3) / foreground.size
    bg_counts = np.bincount(background, minlength=SPEC_BINS**3) + SPEC_LAPLACE
    p_bg = bg_counts / bg_counts.sum()
    soft = (p_fg[bins] / (p_fg[bins] + p_bg[bins])).reshape(height, width)
    soft = reference_normalise(reference_blur(soft))
    mask = np.zeros(pixels, dtype=np.uint8)
    mask[top_indices(soft, int(beta * height * width))] = 1
    return mask.reshape(height, width)


@pytest.mark.parametrize("size", [112, 224])
def test_masks_match_reference_on_natural_clips(size, natural_112, natural_224):
    clips, _ = natural_112 if size == 112 else natural_224
    masks = fame.foreground_mask(clips, beta=0.5)
    for index in range(len(clips)):
        expected = reference_mask(clips[index], 0.5)
        assert iou(masks[index], expected) >= MIN_IOU, f"clip {index} at {size}"


@pytest.mark.parametrize("beta", [0.3, 0.7])
def test_masks_match_reference_for_other_betas_and_the_angle_hue(beta, natural_112):
    clips, _ = natural_112
    masks = fame.foreground_mask(clips[:2], beta=beta, hue="angle")
    for index in range(2):
        expected = reference_mask(clips[index], beta, hue="angle")
        assert iou(masks[index], expected) >= MIN_IOU


def test_hue_encodings_give_different_masks(natural_112):
    clips, _ = natural_112
    published = fame.foreground_mask(clips, hue="published")
    angle = fame.foreground_mask(clips, hue="angle")
    assert np.mean([iou(p, a) for p, a in zip(published, angle, strict=True)]) < 0.95


def test_reference_blur_agrees_with_the_package_blur():
    from fame.mask import blur_kernel, gaussian_blur

    image = np.random.default_rng(3).random((1, 40, 56)).astype(np.float32)
    got = gaussian_blur(image, blur_kernel(40))[0]
    np.testing.assert_allclose(got, reference_blur(image[0].astype(np.float64)), atol=1e-5)
