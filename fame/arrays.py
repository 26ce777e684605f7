"""Array-module plumbing: NumPy or CuPy chosen by the input, CuPy imported only when needed."""

from __future__ import annotations

import numpy as np

CLIP_LAYOUT = "NTHWC (B, T, H, W, 3)"
CHANNELS = 3
MIN_FRAMES = 2


def array_module(array):
    """numpy for NumPy arrays; cupy for CuPy arrays (cupy is imported only for those)."""
    if isinstance(array, np.ndarray):
        return np
    try:
        import cupy  # lazy: CuPy needs a GPU; importing this module must not load it
    except ImportError:
        return np
    return cupy.get_array_module(array)


def to_host(array) -> np.ndarray:
    """A NumPy copy (or view) of a NumPy or CuPy array."""
    return array.get() if hasattr(array, "get") else np.asarray(array)


def count_per_clip(xp, index, length: int, weights=None):
    """Histogram of flat bin indices (already offset by clip) into `length` bins.

    NumPy uses bincount; CuPy uses an unbuffered scatter add, which needs no device sync
    to size its output (cupy.bincount reads the maximum index back to the host).
    """
    if xp is np:
        counts = np.bincount(index, weights=weights, minlength=length)
        return counts.astype(np.float64, copy=False)
    counts = xp.zeros(length, dtype=xp.float64)
    values = xp.ones(index.shape, dtype=xp.float64) if weights is None else weights.astype(xp.float64)
    xp.add.at(counts, index, values)
    return counts


def check_clips(clips, name: str = "clips") -> tuple[int, int, int, int]:
    """Assert the NTHWC layout and dtype; return (B, T, H, W).

    Float values are read as 0..1 and not checked here (that would sync a CuPy array to the
    host); the colour statistics clip the mean frame to [0, 1] (fame.motion).
    """
    shape = tuple(getattr(clips, "shape", ()))
    if len(shape) != 5 or shape[-1] != CHANNELS:
        raise ValueError(f"{name} must be {CLIP_LAYOUT} with 3 colour channels last; got shape {shape}")
    batch, frames, height, width, _ = shape
    if frames < MIN_FRAMES:
        raise ValueError(f"{name} needs at least {MIN_FRAMES} frames (axis 1) for frame differences; got shape {shape}")
    if min(batch, height, width) < 1:
        raise ValueError(f"{name} has an empty batch or frame; got shape {shape}")
    dtype = np.dtype(clips.dtype)
    if dtype != np.uint8 and dtype.kind != "f":
        raise ValueError(f"{name} must be uint8 (0..255) or floating point (0..1); got dtype {dtype}")
    return batch, frames, height, width
