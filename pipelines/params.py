"""Plain settings of the input pipelines: augmentation parameters and clip geometry.

Runners map their configuration onto these frozen dataclasses; nothing here
knows about configuration files.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fame.mask import gaussian_weights

# Published normalisation of the Kinetics-trained video models (the paper's published code).
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
RGB_CHANNELS = 3
MIN_BLUR_WINDOW = 3


def _check_probability(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"AugParams.{name} must be a probability in [0, 1], got {value!r}")


def _check_range(name: str, pair: tuple, *, low: float = 0.0, high: float | None = None) -> None:
    if len(pair) != 2 or not low < pair[0] <= pair[1] or (high is not None and pair[1] > high):
        bound = f" and at most {high}" if high is not None else ""
        raise ValueError(f"AugParams.{name} must be (min, max) with {low} < min <= max{bound}, got {pair!r}")


@dataclass(frozen=True)
class AugParams:
    """Random augmentation of one view, drawn once per clip and applied to all its frames.

    crop_area / crop_aspect: random resized crop (fraction of the frame area, width/height
    ratio, torchvision's rule with 10 tries then a centre crop). flip_p: horizontal flip.
    grayscale_p: grayscale. jitter_p with brightness / contrast / saturation (factors drawn
    in [max(0, 1 - x), 1 + x]) and hue (a fraction of the colour circle in [-hue, hue]).
    blur_p with blur_sigma: Gaussian blur, sigma in pixels of the crop, over a fixed window
    of int(blur_window_fraction * crop) // 2 * 2 + 1 pixels (at least 3). mean / std: RGB
    normalisation in 0..1 units. antialias: low-pass filter when the crop is shrunk; off
    by default, as in the published pipeline (bilinear interpolation of the crop).
    """

    crop_area: tuple[float, float] = (0.2, 1.0)
    crop_aspect: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    grayscale_p: float = 0.2
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_window_fraction: float = 0.1
    mean: tuple[float, float, float] = KINETICS_MEAN
    std: tuple[float, float, float] = KINETICS_STD
    antialias: bool = False

    def blur_window(self, crop: int) -> int:
        """Odd Gaussian window width in pixels for a crop x crop clip."""
        return max(MIN_BLUR_WINDOW, int(self.blur_window_fraction * crop) // 2 * 2 + 1)

    def __post_init__(self) -> None:
        _check_range("crop_area", tuple(self.crop_area), high=1.0)
        _check_range("crop_aspect", tuple(self.crop_aspect))
        _check_range("blur_sigma", tuple(self.blur_sigma))
        for name in ("flip_p", "grayscale_p", "jitter_p", "blur_p"):
            _check_probability(name, getattr(self, name))
        for name in ("brightness", "contrast", "saturation"):
            if getattr(self, name) < 0:
                raise ValueError(f"AugParams.{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 < self.blur_window_fraction <= 1.0:
            raise ValueError(f"AugParams.blur_window_fraction must be in (0, 1], got {self.blur_window_fraction!r}")
        if not 0.0 <= self.hue <= 0.5:
            raise ValueError(f"AugParams.hue must be in [0, 0.5], got {self.hue!r}")
        if len(self.mean) != RGB_CHANNELS or len(self.std) != RGB_CHANNELS or min(self.std) <= 0:
            raise ValueError(f"AugParams.mean/std must be 3 values each, std > 0; got {self.mean!r}, {self.std!r}")


# No randomness beyond the clip position: the largest centred square of the frame (the whole
# frame only when it is square), no flip, no colour change, no blur. For tests.
IDENTITY_AUG = AugParams(crop_area=(1.0, 1.0), crop_aspect=(1.0, 1.0), flip_p=0.0, grayscale_p=0.0,
                         jitter_p=0.0, blur_p=0.0)


def blur_weights(sigma: float, window: int) -> np.ndarray:
    """(window,) float32: the normalised 1-D Gaussian of ``sigma`` pixels, centred in the window."""
    return gaussian_weights(window, sigma).astype(np.float32)


@dataclass(frozen=True)
class ClipGeometry:
    """frames per clip, temporal stride between them, square output side in pixels."""

    frames: int
    stride: int
    crop: int

    def __post_init__(self) -> None:
        if self.frames < 1 or self.stride < 1 or self.crop < 1:
            raise ValueError(f"clip frames, stride and crop must be >= 1, got {self}")

    @property
    def span(self) -> int:
        """Frames of the video one clip covers, first to last inclusive."""
        return (self.frames - 1) * self.stride + 1
