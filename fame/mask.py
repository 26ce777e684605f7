"""Foreground masks (eq. 2-3 and the ablation variants), batched over clips, NumPy or CuPy."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from fame.arrays import array_module, check_clips, count_per_clip, to_host
from fame.colour import colour_bins
from fame.config import AUTO_BETA, FameConfig
from fame.motion import frame_statistics
from fame.select import otsu_fraction, top_k_mask

NORMALISE_EPS = 1e-8


def blur_kernel(crop: int, size_fraction: float = 0.1, sigma_fraction: float = 1.0 / 3.0) -> np.ndarray:
    """Normalised 1-D Gaussian: size k = int(size_fraction * crop) // 2 * 2 + 1, sigma = k * sigma_fraction.

    With the published fractions this gives k = 11 at a 112 crop and k = 23 at 224, sigma = k / 3,
    as the published code computed them.
    """
    size = int(size_fraction * crop) // 2 * 2 + 1
    return gaussian_weights(size, size * sigma_fraction)


def gaussian_weights(size: int, sigma: float) -> np.ndarray:
    """(size,) float64: the normalised Gaussian of ``sigma`` samples, centred in the window."""
    offsets = np.arange(size, dtype=np.float64) - size // 2
    weights = np.exp(-(offsets**2) / (2.0 * sigma**2))
    return weights / weights.sum()


def reflect_index(index: np.ndarray, length: int) -> np.ndarray:
    """Fold indices into [0, length) by reflection about the edge samples, which are not repeated.

    This is "reflect" in the torch/kornia and numpy.pad sense (d c b | a b c d | c b a), which
    scipy.ndimage calls "mirror" (scipy's "reflect" repeats the edge sample).
    """
    if length == 1:
        return np.zeros_like(index)
    period = 2 * (length - 1)
    folded = np.mod(index, period)
    return np.where(folded >= length, period - folded, folded)


@lru_cache(maxsize=32)
def blur_matrix(length: int, weights: tuple) -> np.ndarray:
    """(length, length) float32 matrix B with (B @ x) = x convolved with `weights` under reflect padding."""
    radius = len(weights) // 2
    rows = np.repeat(np.arange(length), len(weights))
    taps = np.tile(np.arange(len(weights)), length)
    matrix = np.zeros((length, length), dtype=np.float64)
    np.add.at(matrix, (rows, reflect_index(rows + taps - radius, length)), np.asarray(weights)[taps])
    return matrix.astype(np.float32)


def gaussian_blur(maps, kernel: np.ndarray):
    """Separable blur of (B, H, W) float32 maps over H and W with reflect padding.

    Each 1-D pass is a product with a banded (reflect-folded) matrix: one BLAS call per
    axis on NumPy and CuPy alike, faster here than a direct 1-D convolution.
    """
    if kernel.size == 1:
        return maps
    xp = array_module(maps)
    _, height, width = maps.shape
    weights = tuple(kernel.tolist())
    along_rows = xp.asarray(blur_matrix(height, weights))
    along_cols = xp.asarray(blur_matrix(width, weights).T)
    return xp.matmul(along_rows, xp.matmul(maps, along_cols))


def normalise_per_clip(maps):
    """Subtract each clip's minimum, then divide by the new maximum + 1e-8 (in place)."""
    maps -= maps.min(axis=(1, 2), keepdims=True)
    maps /= maps.max(axis=(1, 2), keepdims=True) + maps.dtype.type(NORMALISE_EPS)
    return maps


def _kernel_for(height: int, width: int, cfg: FameConfig) -> np.ndarray:
    return blur_kernel(min(height, width), cfg.blur_size_fraction, cfg.blur_sigma_fraction)


def smoothed_statistics(clips, cfg: FameConfig):
    """Seed region S, blurred and min-max normalised per clip (B, H, W), and the mean frame (B, H, W, 3)."""
    _, _, height, width = check_clips(clips)
    seed, mean = frame_statistics(clips, cfg.camera_compensation)
    return normalise_per_clip(gaussian_blur(seed, _kernel_for(height, width, cfg))), mean


def soft_mask(clips, cfg: FameConfig):
    """Colour-propagated foreground likelihood M (Sec. 3.2), blurred and normalised: (B, H, W) float32."""
    seed, mean = smoothed_statistics(clips, cfg)
    return soft_mask_from(seed, mean, cfg)


def soft_mask_from(seed, mean, cfg: FameConfig):
    """M from the smoothed seed (B, H, W) and the time-mean frame (B, H, W, 3)."""
    xp = array_module(seed)
    batch, height, width = seed.shape
    pixels = height * width
    flat_seed = seed.reshape(batch, pixels)
    foreground = top_k_mask(flat_seed, pixel_count(cfg.fg_fraction, height, width))
    background = top_k_mask(-flat_seed, pixel_count(cfg.bg_fraction, height, width))

    cells = cfg.bins**3
    offsets = xp.arange(batch, dtype=xp.int64)[:, None] * cells
    flat_bins = (colour_bins(mean, cfg.bins, cfg.hue).reshape(batch, pixels) + offsets).ravel()
    fg_counts = count_per_clip(xp, flat_bins, batch * cells, weights=foreground.ravel()).reshape(batch, cells)
    bg_counts = count_per_clip(xp, flat_bins, batch * cells, weights=background.ravel()).reshape(batch, cells)
    bg_counts += cfg.laplace
    p_fg = fg_counts / xp.maximum(fg_counts.sum(axis=1, keepdims=True), 1.0)
    p_bg = bg_counts / xp.maximum(bg_counts.sum(axis=1, keepdims=True), 1.0)
    total = p_fg + p_bg
    likelihood = xp.where(total > 0, p_fg / xp.where(total > 0, total, 1.0), 0.0).astype(xp.float32)
    mask = likelihood.ravel()[flat_bins].reshape(batch, height, width)
    return normalise_per_clip(gaussian_blur(mask, _kernel_for(height, width, cfg)))


def centred_gaussian(height: int, width: int, sigma_fraction: float, xp=np):
    """(H, W) float32 Gaussian centred in the frame, sigma = sigma_fraction * (H, W), peak 1."""
    rows = (np.arange(height) - (height - 1) / 2.0) / (sigma_fraction * height)
    cols = (np.arange(width) - (width - 1) / 2.0) / (sigma_fraction * width)
    gauss = np.exp(-0.5 * (rows[:, None] ** 2 + cols[None, :] ** 2))
    return xp.asarray(gauss, dtype=xp.float32)


def grid_mask(seed, cells: int, keep: int):
    """Keep the `keep` cells of a cells x cells grid with the largest sum of S: (B, H, W) bool."""
    xp = array_module(seed)
    batch, height, width = seed.shape
    cell_of_row = (np.arange(height) * cells) // height
    cell_of_col = (np.arange(width) * cells) // width
    cell = xp.asarray((cell_of_row[:, None] * cells + cell_of_col[None, :]).ravel())
    offsets = xp.arange(batch, dtype=xp.int64)[:, None] * cells**2
    sums = count_per_clip(xp, (cell[None, :] + offsets).ravel(), batch * cells**2, weights=seed.ravel())
    kept = top_k_mask(sums.reshape(batch, cells**2), keep)
    return kept[:, cell].reshape(batch, height, width)


def pixel_count(fraction, height: int, width: int):
    """int(fraction * H * W), evaluated left to right as written in the spec (0.7 * 24 * 20 -> 335)."""
    return np.floor(np.asarray(fraction, dtype=np.float64) * height * width).astype(np.int64)


def foreground_counts(scores, height: int, width: int, cfg: FameConfig):
    """Pixels to keep per clip: int(beta * H * W), or the clamped Otsu fraction for beta="auto"."""
    batch = scores.shape[0]
    if cfg.beta == AUTO_BETA:
        fraction = np.clip(to_host(otsu_fraction(scores, cfg.otsu_bins)), cfg.beta_min, cfg.beta_max)
    else:
        fraction = np.full(batch, cfg.beta, dtype=np.float64)
    return pixel_count(fraction, height, width)


def masks_from_config(clips, cfg: FameConfig):
    """(B, T, H, W, 3) clips -> (B, H, W) uint8 {0, 1} foreground masks, constant over time."""
    xp = array_module(clips)
    batch, _, height, width = check_clips(clips)
    pixels = height * width
    if cfg.variant == "none":
        return xp.ones((batch, height, width), dtype=xp.uint8)
    if cfg.variant == "gauss":
        gauss = centred_gaussian(height, width, cfg.gauss_sigma, xp).reshape(1, pixels)
        scores = xp.broadcast_to(gauss, (batch, pixels))
    else:
        seed, mean = smoothed_statistics(clips, cfg)
        if cfg.variant == "grid":
            return grid_mask(seed, cfg.grid_cells, cfg.grid_keep).astype(xp.uint8)
        scores = seed if cfg.variant == "seed" else soft_mask_from(seed, mean, cfg)
        scores = scores.reshape(batch, pixels)
    selected = top_k_mask(scores, foreground_counts(scores, height, width, cfg))
    return selected.reshape(batch, height, width).astype(xp.uint8)


def foreground_mask(clips, beta=0.5, variant: str = "fame", hue: str = "published", **options):
    """Binary foreground masks of NTHWC clips.

    clips: (B, T, H, W, 3), uint8 0..255 or float 0..1, NumPy or CuPy; T >= 2.
    Returns (B, H, W) uint8 {0, 1} on the same device with exactly int(beta * H * W) ones
    per clip (ties: lower flat index wins). options: any other FameConfig field.
    """
    return masks_from_config(clips, FameConfig.from_options(beta=beta, variant=variant, hue=hue, **options))
