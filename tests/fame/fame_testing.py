"""Helpers for tests/fame: natural-image clips (skimage.data) with a moving textured object."""

from __future__ import annotations

from functools import cache

import numpy as np

FRAMES = 16
NOISE_LEVELS = 2  # uint8 sensor noise amplitude, so static pixels are not exact ties
OBJECT_FRACTION = 0.3  # object side as a fraction of the frame side
PAN_STEP = 2  # background pan per frame, pixels, in the camera-motion clips
OBJECT_SPEED_DIVISOR = 56  # object speed: size // 56 pixels per frame (2 at 112, 4 at 224)
PATCH = 24  # side of the static patches of out-of-range colour


@cache
def natural_image(name: str) -> np.ndarray:
    """An skimage.data RGB image as float64 in [0, 1]."""
    from skimage import data, img_as_float

    return img_as_float(getattr(data, name)())[..., :3]


@cache
def resized(name: str, height: int, width: int, top: float = 0.0, left: float = 0.0, extent: float = 1.0) -> np.ndarray:
    """A square crop of an skimage.data image (fractions of its size) resized to height x width."""
    from skimage.transform import resize

    image = natural_image(name)
    side = int(min(image.shape[:2]) * extent)
    row, col = int(top * (image.shape[0] - side)), int(left * (image.shape[1] - side))
    return resize(image[row : row + side, col : col + side], (height, width), anti_aliasing=True)


def object_path(frames: int, start, velocity):
    """Integer top-left corners of the object per frame."""
    return [(int(start[0] + velocity[0] * t), int(start[1] + velocity[1] * t)) for t in range(frames)]


def swept_box(size: int, box: int, corners) -> np.ndarray:
    """(size, size) bool union of the object boxes over time."""
    region = np.zeros((size, size), dtype=bool)
    for row, col in corners:
        region[row : row + box, col : col + box] = True
    return region


def make_natural_clip(background: str, obj: str, size: int, seed: int, frames: int = FRAMES, pan: int = 0):
    """(T, size, size, 3) uint8 clip of a natural background with a textured object moving over it.

    pan > 0 moves the camera: the background window slides `pan` pixels per frame to the right
    across a wider rendering of the background image. Returns (clip, swept object box).
    """
    rng = np.random.default_rng(seed)
    box = int(OBJECT_FRACTION * size)
    speed = max(1, size // OBJECT_SPEED_DIVISOR)
    row_travel, col_travel = speed // 2 * (frames - 1), speed * (frames - 1)
    down, right = rng.choice([-1, 1], size=2)
    start_row = int(rng.integers(0, size - box - row_travel + 1)) + (row_travel if down < 0 else 0)
    start_col = int(rng.integers(0, size - box - col_travel + 1)) + (col_travel if right < 0 else 0)
    corners = object_path(frames, (start_row, start_col), (down * (speed // 2), right * speed))
    scene = resized(background, size, size + pan * frames)
    patch = resized(obj, box, box, top=0.2, left=0.3, extent=0.5)
    clip = np.empty((frames, size, size, 3), dtype=np.float64)
    for t, (row, col) in enumerate(corners):
        clip[t] = scene[:, pan * t : pan * t + size]
        clip[t, row : row + box, col : col + box] = patch
    clip += rng.integers(-NOISE_LEVELS, NOISE_LEVELS + 1, size=clip.shape) / 255.0
    return np.clip(np.rint(clip * 255), 0, 255).astype(np.uint8), swept_box(size, box, corners)


SCENES = (("astronaut", "chelsea"), ("coffee", "astronaut"), ("chelsea", "coffee"), ("rocket", "chelsea"))


@cache
def natural_batch(size: int, pan: int = 0):
    """(B, T, size, size, 3) uint8 batch over SCENES and the (B, size, size) swept object boxes."""
    made = [make_natural_clip(bg, obj, size, seed, pan=pan) for seed, (bg, obj) in enumerate(SCENES)]
    clips, boxes = zip(*made, strict=True)
    return np.stack(clips), np.stack(boxes)


def iou(first: np.ndarray, second: np.ndarray) -> float:
    first, second = first.astype(bool), second.astype(bool)
    union = np.logical_or(first, second).sum()
    return 1.0 if union == 0 else float(np.logical_and(first, second).sum() / union)


def with_static_patches_outside_the_unit_range(clips):
    """Float copies of uint8 clips, with patches static over time at colours outside [0, 1].

    Static patches have no frame differences and the mean of their clipped frames is their
    clipped mean, so the clips give the same statistics as np.clip(clips, 0, 1) when the
    mean frame is clipped, and colour-bin indices outside [0, bins**3) when it is not.
    """
    clips = (clips / 255).astype(np.float32)
    clips[0, :, :PATCH, :PATCH] = [1.5, -0.5, 0.2]  # unclipped colour bin past the clip's last one
    clips[1, :, -PATCH:, -PATCH:] = [-0.3, 0.9, 0.1]  # unclipped colour bin before the clip's first one
    clips[2, :, :PATCH, -PATCH:] = [1.1, 1.02, -0.01]
    return clips
