"""Seed region S (eq. 2) and the time-mean frame, from NTHWC clips (uint8 0..255 or float 0..1).

Float clips are read as 0..1: the mean frame is clipped to [0, 1] (in place, no host sync) so
that the colour statistics see only valid colours; S uses the values as given. Float clips
narrower than float32 (float16) are summed in float32.

Camera-motion compensation (beyond the paper, which names moving cameras as a limitation):
- "median": each frame pair's channel-summed difference minus its median over the frame,
  clipped at 0, so a uniform global change does not light up the whole frame;
- "phase": each frame pair is aligned by an integer shift before differencing: of the highest
  peaks of its phase correlation (Hann-windowed grey frames, xp.fft) and the zero shift, the
  one leaving the smallest mean residual; pixels whose aligned source falls outside the frame
  get no difference.
"""

from __future__ import annotations

import numpy as np

from fame.arrays import array_module

UINT8_MAX = 255.0
UINT16_MAX = 65535
PHASE_EPS = 1e-12
# Clips per block on the CPU: about this many elements per frame slice keeps temporaries in cache.
CACHE_BLOCK_ELEMENTS = 1 << 18
PHASE_CANDIDATES = 4  # phase-correlation peaks checked per frame pair, besides the zero shift


def intensity_scale(dtype) -> float:
    """Factor that maps the clip's values to [0, 1]."""
    return 1.0 / UINT8_MAX if np.dtype(dtype) == np.uint8 else 1.0


def _accumulator_dtype(xp, count: int):
    """uint16 while count uint8 values cannot overflow it, else uint32."""
    return xp.uint16 if count * UINT8_MAX <= UINT16_MAX else xp.uint32


def _float_accumulator_dtype(dtype):
    """The clips' float dtype, widened to float32 when narrower (float16 sums lose precision fast)."""
    return np.promote_types(dtype, np.float32)


def _clip_to_unit_range(mean, clips_dtype):
    """Clip the mean frame of float clips to [0, 1] in place; a uint8 clip's mean lies there already."""
    if np.dtype(clips_dtype) != np.uint8:
        xp = array_module(mean)
        xp.clip(mean, 0, 1, out=mean)
    return mean


def frame_statistics(clips, camera_compensation="none"):
    """(B, T, H, W, 3) -> seed region S (B, H, W) and time-mean frame (B, H, W, 3), float32.

    S is the channel-summed |X[t+1] - X[t]| averaged over the T-1 pairs (eq. 2); the mean
    frame is in [0, 1]. Without camera compensation both come from one pass over the clips.
    """
    if camera_compensation == "median":
        return _median_compensated_seed(clips), mean_frame(clips)
    if camera_compensation == "phase":
        return _phase_aligned_seed(clips), mean_frame(clips)
    return _plain_statistics(clips)


def seed_region(clips, camera_compensation="none"):
    """(B, T, H, W, 3) -> (B, H, W) float32 seed region S (see frame_statistics)."""
    return frame_statistics(clips, camera_compensation)[0]


def mean_frame(clips):
    """(B, T, H, W, 3) -> (B, H, W, 3) float32 time-mean frame in [0, 1]."""
    xp = array_module(clips)
    frames = clips.shape[1]
    total = clips.sum(axis=1, dtype=_accumulator_dtype(xp, frames) if clips.dtype == np.uint8 else xp.float32)
    mean = total.astype(xp.float32)
    mean /= xp.float32(frames / intensity_scale(clips.dtype))
    return _clip_to_unit_range(mean, clips.dtype)


def _plain_statistics(clips):
    """One pass over the frames, in blocks of clips whose per-frame temporaries fit in cache on the CPU."""
    xp = array_module(clips)
    batch, frames, height, width, channels = clips.shape
    block = max(1, CACHE_BLOCK_ELEMENTS // (height * width * channels)) if xp is np else batch
    seed = xp.empty((batch, height, width), dtype=xp.float32)
    mean = xp.empty((batch, height, width, channels), dtype=xp.float32)
    scale = intensity_scale(clips.dtype)
    for start in range(0, batch, block):
        stop = min(start + block, batch)
        total_diff, total = _accumulate_frames(clips[start:stop])
        # Adding the three channel planes beats a reduction over a length-3 axis.
        part = seed[start:stop]
        part[...] = total_diff[..., 0]
        part += total_diff[..., 1]
        part += total_diff[..., 2]
        part *= xp.float32(scale / (frames - 1))
        mean[start:stop] = total
        mean[start:stop] /= xp.float32(frames / scale)  # a division keeps e.g. 2040 / 4080 exactly 0.5
    return seed, _clip_to_unit_range(mean, clips.dtype)


def _accumulate_frames(clips):
    """Sums over t of |X[t+1] - X[t]| and of X[t], per pixel and channel, in a wide enough dtype."""
    xp = array_module(clips)
    batch, frames, height, width, channels = clips.shape
    frame_shape = (batch, height, width, channels)
    if clips.dtype == np.uint8:
        # |a - b| = max(a, b) - min(a, b) is exact in uint8; sums go to wide unsigned accumulators.
        total_diff = xp.zeros(frame_shape, dtype=_accumulator_dtype(xp, frames - 1))
        total = clips[:, 0].astype(_accumulator_dtype(xp, frames))
        low = xp.empty(frame_shape, dtype=xp.uint8)
        high = xp.empty_like(low)
        for t in range(frames - 1):
            xp.maximum(clips[:, t + 1], clips[:, t], out=high)
            xp.minimum(clips[:, t + 1], clips[:, t], out=low)
            xp.subtract(high, low, out=high)
            xp.add(total_diff, high, out=total_diff)
            xp.add(total, clips[:, t + 1], out=total)
        return total_diff, total
    accumulator = _float_accumulator_dtype(clips.dtype)
    total_diff = xp.zeros(frame_shape, dtype=accumulator)
    total = clips[:, 0].astype(accumulator)
    step = xp.empty_like(total_diff)
    for t in range(frames - 1):
        xp.subtract(clips[:, t + 1], clips[:, t], out=step, dtype=accumulator)
        xp.abs(step, out=step)
        total_diff += step
        total += clips[:, t + 1]
    return total_diff, total


def _pair_differences(current, previous, scale: float):
    """Channel-summed |current - previous| in float32, intensities scaled to [0, 1]."""
    diff = current.astype(np.float32) - previous.astype(np.float32)
    return abs(diff).sum(axis=-1) * np.float32(scale)


def _median_compensated_seed(clips):
    xp = array_module(clips)
    batch, frames, height, width, _ = clips.shape
    diffs = _pair_differences(clips[:, 1:], clips[:, :-1], intensity_scale(clips.dtype))
    median = xp.median(diffs.reshape(batch, frames - 1, height * width), axis=-1)
    diffs -= median[:, :, None, None].astype(xp.float32)
    xp.maximum(diffs, 0, out=diffs)
    return diffs.mean(axis=1)


def shift_frames(frames, dy, dx):
    """Move each frame of (B, P, H, W, ...) by integer (dy, dx) of shape (B, P): out(p) = frame(p - shift).

    Returns the moved frames and a (B, P, H, W) bool mask of pixels whose source lies inside the frame.
    """
    xp = array_module(frames)
    batch, pairs, height, width = frames.shape[:4]
    rows = xp.arange(height)[None, None, :] - dy[:, :, None]
    cols = xp.arange(width)[None, None, :] - dx[:, :, None]
    inside = ((rows >= 0) & (rows < height))[:, :, :, None] & ((cols >= 0) & (cols < width))[:, :, None, :]
    rows = xp.clip(rows, 0, height - 1)[:, :, :, None]
    cols = xp.clip(cols, 0, width - 1)[:, :, None, :]
    clip_index = xp.arange(batch)[:, None, None, None]
    pair_index = xp.arange(pairs)[None, :, None, None]
    return frames[clip_index, pair_index, rows, cols], inside


def _masked_mean_residual(current, previous, dy, dx):
    """Mean |current - moved previous| over the pixels the move keeps inside: (B, P)."""
    xp = array_module(current)
    moved, inside = shift_frames(previous, dy, dx)
    residual = abs(current - moved) * inside
    return residual.sum(axis=(-2, -1)) / xp.maximum(inside.sum(axis=(-2, -1)), 1)


def estimate_shifts(clips, candidates: int = PHASE_CANDIDATES):
    """Global integer motion (dy, dx), each (B, T-1): frame t+1 ~ frame t moved by (dy, dx).

    The `candidates` highest peaks of each pair's phase correlation (Hann-windowed grey frames)
    and the zero shift are each checked by the mean absolute grey residual over the overlap;
    the smallest wins (zero on ties). The check keeps a textured moving object, which can own
    the highest peak, from being taken for the camera's motion.
    """
    xp = array_module(clips)
    batch, frames, height, width, _ = clips.shape
    grey = clips.sum(axis=-1, dtype=xp.float32)
    centred = grey - grey.mean(axis=(-2, -1), keepdims=True)
    window = xp.asarray(np.outer(np.hanning(height), np.hanning(width)), dtype=xp.float32)
    spectra = xp.fft.rfft2(centred * window)
    cross = spectra[:, 1:] * xp.conj(spectra[:, :-1])
    cross /= xp.abs(cross) + PHASE_EPS
    correlation = xp.fft.irfft2(cross, s=(height, width)).reshape(batch, frames - 1, height * width)
    count = min(candidates, height * width)
    peaks = xp.argpartition(-correlation, count - 1, axis=-1)[..., :count]
    peaks = xp.concatenate([xp.zeros_like(peaks[..., :1]), peaks], axis=-1)
    dy, dx = peaks // width, peaks % width
    dy = xp.where(dy > height // 2, dy - height, dy)
    dx = xp.where(dx > width // 2, dx - width, dx)
    residuals = xp.stack(
        [_masked_mean_residual(grey[:, 1:], grey[:, :-1], dy[..., k], dx[..., k]) for k in range(count + 1)], axis=-1
    )
    best = xp.argmin(residuals, axis=-1)[..., None]
    return xp.take_along_axis(dy, best, axis=-1)[..., 0], xp.take_along_axis(dx, best, axis=-1)[..., 0]


def _phase_aligned_seed(clips):
    dy, dx = estimate_shifts(clips)
    aligned_previous, inside = shift_frames(clips[:, :-1], dy, dx)
    diffs = _pair_differences(clips[:, 1:], aligned_previous, intensity_scale(clips.dtype))
    diffs *= inside
    return diffs.mean(axis=1)
