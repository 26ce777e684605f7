"""Plain settings of the input pipelines: augmentation parameters and clip geometry.

AugParams is also the config schema's ``aug`` section (engine.config holds it
itself); its field types and ranges are its rules (fame.fields).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from fame.fields import SettingError, bounded, check_fields, fraction
from fame.mask import gaussian_weights

# Published normalisation of the Kinetics-trained video models (the paper's published code).
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)
RGB_CHANNELS = 3
MIN_BLUR_WINDOW = 3
PAIR_FIELDS = ("crop_area", "crop_aspect", "blur_sigma")   # (min, max) pairs
NO_COLOUR = {"grayscale_p": 0.0, "jitter_p": 0.0, "blur_p": 0.0}


@dataclass(frozen=True)
class AugParams:
    """Random augmentation of one view, drawn once per clip and applied to all its frames.

    crop_area / crop_aspect: random resized crop (fraction of the frame area, width/height
    ratio, torchvision's rule with 10 tries then a centre crop). flip_p: horizontal flip.
    jitter_p with brightness / contrast / saturation (factors drawn in [max(0, 1 - x), 1 + x])
    and hue (a fraction of the colour circle in [-hue, hue]); then grayscale_p: grayscale, in
    MoCo v2's order.
    blur_p with blur_sigma: Gaussian blur, sigma in pixels of the crop, over a fixed window
    of int(blur_window_fraction * crop) // 2 * 2 + 1 pixels (at least 3). mean / std: RGB
    normalisation in 0..1 units. antialias: low-pass filter when the crop is shrunk; off
    by default, as in the published pipeline (bilinear interpolation of the crop).
    Pairs are (min, max) with min <= max.
    """

    crop_area: tuple[float, float] = field(default=(0.2, 1.0), metadata=bounded(0.0, 1.0, lo_open=True))
    crop_aspect: tuple[float, float] = field(default=(3 / 4, 4 / 3), metadata=bounded(0.0, lo_open=True))
    flip_p: float = fraction(0.5)
    jitter_p: float = fraction(0.8)
    brightness: float = field(default=0.4, metadata=bounded(0.0))
    contrast: float = field(default=0.4, metadata=bounded(0.0))
    saturation: float = field(default=0.4, metadata=bounded(0.0))
    hue: float = field(default=0.1, metadata=bounded(0.0, 0.5))
    grayscale_p: float = fraction(0.2)
    blur_p: float = fraction(0.5)
    blur_sigma: tuple[float, float] = field(default=(0.1, 2.0), metadata=bounded(0.0, lo_open=True))
    blur_window_fraction: float = field(default=0.1, metadata=bounded(0.0, 1.0, lo_open=True))
    mean: tuple[float, float, float] = KINETICS_MEAN
    std: tuple[float, float, float] = field(default=KINETICS_STD, metadata=bounded(0.0, lo_open=True))
    antialias: bool = False

    def __post_init__(self) -> None:
        check_fields(self)
        for name in PAIR_FIELDS:
            low, high = getattr(self, name)
            if low > high:
                raise SettingError(type(self).__name__, name, f"need (min, max) with min <= max, got {[low, high]}")

    def blur_window(self, crop: int) -> int:
        """Odd Gaussian window width in pixels for a crop x crop clip."""
        return max(MIN_BLUR_WINDOW, int(self.blur_window_fraction * crop) // 2 * 2 + 1)

    def without_colour(self) -> AugParams:
        """These crop, flip and normalisation settings with no grayscale, colour jitter or blur."""
        return replace(self, **NO_COLOUR)


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


PIPELINE_DEVICES = ("cpu", "gpu")    # where a graph's operators run
DECODERS = ("cpu", "gpu")            # where its videos are decoded: DALI's CPU decoder or NVDEC


@dataclass(frozen=True)
class Runtime:
    """Where and how a loader's DALI pipelines run.

    device: "cpu" (every operator on the CPU, no GPU) or "gpu" (everything after the decoder
    on GPU ``device_id``). decode: where the videos are decoded, "cpu" | "gpu" (NVDEC), None
    for ``device`` itself; GPU decoding needs a GPU graph. num_threads: DALI threads per
    pipeline; prefetch: batches each pipeline makes ahead; pipelines: copies of the graph
    taking turns by step.
    """

    device: str = "cpu"
    decode: str | None = None
    device_id: int = 0
    num_threads: int = 2
    prefetch: int = 2
    pipelines: int = 1

    def __post_init__(self) -> None:
        if self.device not in PIPELINE_DEVICES:
            raise ValueError(f"pipeline device must be one of {PIPELINE_DEVICES}, got {self.device!r}")
        if self.decoder not in DECODERS:
            raise ValueError(f"decode device must be one of {DECODERS}, got {self.decode!r}")
        if self.device == "cpu" and self.decoder == "gpu":
            raise ValueError("decode 'gpu' (NVDEC, config key 'data.decode') needs pipeline device 'gpu'; "
                             "a CPU pipeline decodes on the CPU: use decode 'cpu'")
        if self.pipelines < 1:
            raise ValueError(f"pipelines must be >= 1, got {self.pipelines}")

    @property
    def decoder(self) -> str:
        """Where the videos are decoded: ``decode``, or ``device`` when it is None."""
        return self.device if self.decode is None else self.decode


@dataclass(frozen=True)
class Sharding:
    """Which draws and which slice of every epoch a process reads: the sampling seed, this
    process's rank and the number of processes (pipelines.sampler)."""

    seed: int = 0
    rank: int = 0
    world: int = 1
