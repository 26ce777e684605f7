"""Exact top-k selection per clip and Otsu's threshold, batched over clips."""

from __future__ import annotations

import numpy as np

from fame.arrays import array_module, count_per_clip, to_host


def top_k_mask(values, k):
    """(B, N) values, k an int or (B,) ints -> (B, N) bool with exactly k[b] True per row.

    The k largest values win; among equal values the lower index wins, so the result is
    deterministic (like a stable argsort of -values, first k). Uses one partition per
    batch to find each row's k-th largest value, then resolves ties at that value by a
    cumulative count along the row.
    """
    xp = array_module(values)
    batch, size = values.shape
    counts = np.broadcast_to(np.asarray(to_host(k), dtype=np.int64), (batch,))
    if ((counts < 0) | (counts > size)).any():
        raise ValueError(f"top_k_mask: k must lie in [0, {size}]; got {counts.tolist()}")
    position = np.clip(size - counts, 0, size - 1)
    kth = np.unique(position)
    partitioned = xp.partition(values, kth.tolist() if kth.size > 1 else int(kth[0]), axis=1)
    threshold = xp.take_along_axis(partitioned, xp.asarray(position)[:, None], axis=1)
    selected = values > threshold
    ties = values == threshold
    wanted = xp.asarray(counts)[:, None] - selected.sum(axis=1, keepdims=True)
    selected |= ties & (xp.cumsum(ties, axis=1, dtype=xp.int64) <= wanted)
    return selected


def otsu_fraction(values, levels: int = 256):
    """(B, N) values in [0, 1] -> (B,) float64 fraction above each row's Otsu threshold.

    Values are binned into `levels` levels; the threshold maximises the between-class
    variance (first maximum on ties). A constant row has no between-class variance
    and yields the fraction above level 0.
    """
    xp = array_module(values)
    batch, size = values.shape
    level = xp.clip((values * levels).astype(xp.int64), 0, levels - 1)
    offsets = xp.arange(batch, dtype=xp.int64)[:, None] * levels
    hist = count_per_clip(xp, (level + offsets).ravel(), batch * levels).reshape(batch, levels)
    probability = hist / size
    centres = (xp.arange(levels, dtype=xp.float64) + 0.5) / levels
    weight_below = xp.cumsum(probability, axis=1)
    mean_below = xp.cumsum(probability * centres, axis=1)
    mean_total = mean_below[:, -1:]
    spread = weight_below * (1.0 - weight_below)
    between = (mean_total * weight_below - mean_below) ** 2 / xp.where(spread > 0, spread, 1.0)
    between = xp.where(spread > 0, between, 0.0)
    best = xp.argmax(between, axis=1)
    return 1.0 - xp.take_along_axis(weight_below, best[:, None], axis=1)[:, 0]
