"""SyntheticSpec: everything that determines a synthetic dataset (data.synthetic generates it).

Kept apart from the generator, which needs PyAV and scikit-image, so that the config
schema (engine.config holds this class itself as ``data.synthetic``) loads without them.
Each field's rule is its type hint and range (fame.fields). The generator saves
``to_dict()`` as spec.json beside the data and compares it to decide on regenerating.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from fame.fields import SettingError, bounded, check_fields, fraction

# Class order: the first num_classes of these are used.
MOTIONS = ("right", "left", "circle_cw", "pulse", "down", "up", "zigzag", "circle_ccw")
MIN_FRAME_SIDE = 32
MIN_FRAMES = 2
MAX_OBJECT_SIZE = 0.6
FRAME_SIDES = ("width", "height")
UNWRITTEN_AT_DEFAULT = {"length_spread": 0}


@dataclass(frozen=True)
class SyntheticSpec:
    """Everything that determines a synthetic dataset (saved as spec.json).

    codec: data.video_io.CODECS (a test keeps the two lists equal). width / height: even
    (the encoders' 4:2:0 chroma). object_size: (min, max) object diameter, a fraction of
    the frame's shorter side. gop: keyframe interval, short since a clip is decoded from the
    keyframe before it. length_spread: every video's length is drawn uniformly in frames
    +- length_spread (0: all ``frames`` long). palette: 0 gives every video its own look;
    n > 0 one of n fixed looks shared by all classes. backgrounds: "images" (crops of shipped
    photos) or "generated" (a new colour texture per video).
    """

    num_classes: int = field(default=4, metadata=bounded(2, len(MOTIONS)))
    videos_per_class_train: int = field(default=24, metadata=bounded(1))
    videos_per_class_test: int = field(default=12, metadata=bounded(1))
    width: int = field(default=128, metadata=bounded(MIN_FRAME_SIDE))
    height: int = field(default=96, metadata=bounded(MIN_FRAME_SIDE))
    frames: int = field(default=48, metadata=bounded(MIN_FRAMES))
    fps: int = field(default=15, metadata=bounded(1))
    codec: Literal["h264", "mjpeg", "vp9"] = "vp9"
    bg_correlation_train: float = fraction(0.9)
    bg_correlation_test: float = fraction(0.0)
    noise_std: float = field(default=3.0, metadata=bounded(0.0))   # per-frame Gaussian sensor noise, 0..255 levels
    pan_speed: float = field(default=0.5, metadata=bounded(0.0))   # largest background pan, pixels per frame
    object_size: tuple[float, float] = field(default=(0.15, 0.3), metadata=bounded(0.0, MAX_OBJECT_SIZE, lo_open=True))
    gop: int = field(default=8, metadata=bounded(1))
    length_spread: int = field(default=0, metadata=bounded(0))
    palette: int = field(default=0, metadata=bounded(0))
    backgrounds: Literal["images", "generated"] = "images"
    seed: int = 0

    def __post_init__(self):
        if isinstance(self.object_size, list):     # as spec.json holds it
            object.__setattr__(self, "object_size", tuple(self.object_size))
        check_fields(self)
        name = type(self).__name__
        for side in FRAME_SIDES:
            if getattr(self, side) % 2:
                raise SettingError(name, side, f"{getattr(self, side)} is odd; expected an even integer")
        if self.frames - self.length_spread < MIN_FRAMES:
            raise SettingError(name, "length_spread", f"{self.length_spread} would leave videos shorter than "
                                                      f"{MIN_FRAMES} frames (frames {self.frames})")
        low, high = self.object_size
        if low > high:
            raise SettingError(name, "object_size", f"need [min, max] with min <= max, got {[low, high]}")

    @property
    def motions(self) -> tuple[str, ...]:
        return MOTIONS[: self.num_classes]

    def videos_per_class(self, split: str) -> int:
        return {"train": self.videos_per_class_train, "test": self.videos_per_class_test}[split]

    def bg_correlation(self, split: str) -> float:
        return {"train": self.bg_correlation_train, "test": self.bg_correlation_test}[split]

    def to_dict(self) -> dict:
        """The spec as spec.json holds it. Fields added after datasets were written are left out at
        their defaults (UNWRITTEN_AT_DEFAULT), so those datasets still match their spec."""
        values = dataclasses.asdict(self)
        values["object_size"] = list(self.object_size)
        for name, default in UNWRITTEN_AT_DEFAULT.items():
            if values[name] == default:
                del values[name]
        return values

    @classmethod
    def from_dict(cls, values: dict) -> SyntheticSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown synthetic spec keys {unknown}; allowed: {sorted(known)}")
        return cls(**values)
