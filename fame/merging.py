"""Merging (eq. 4), background choice and the whole-batch augmentation."""

from __future__ import annotations

import numpy as np

from fame.arrays import array_module, check_clips, to_host
from fame.config import FameConfig
from fame.mask import masks_from_config


def pick_backgrounds(n: int, rng: np.random.Generator, mode: str = "derangement") -> np.ndarray:
    """(n,) int64: index of the clip whose background each clip gets.

    "derangement": a uniformly random permutation without fixed points, drawn by
    rejection (about e tries on average). With n = 1 there is nothing to swap with, so
    [0] is returned and the clip keeps its own background (merging is then a no-op).
    "permutation": the published uniformly random permutation (fixed points allowed).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"pick_backgrounds: n must be an integer >= 0; got {n!r}")
    if mode not in ("derangement", "permutation"):
        raise ValueError(f"pick_backgrounds: mode must be 'derangement' or 'permutation'; got {mode!r}")
    identity = np.arange(n)
    if mode == "permutation" or n < 2:
        return rng.permutation(n)
    while True:
        order = rng.permutation(n)
        if not (order == identity).any():
            return order


def _unsigned_view(array):
    xp = array_module(array)
    return array.view(xp.dtype(f"u{array.dtype.itemsize}"))


def _merge_numpy(clips, select, background, index):
    """Clip by clip bit select out = bg ^ ((fg ^ bg) & m), m all ones where the mask is 1.

    Working on the values' bits as unsigned integers makes the select exact for any dtype, and
    per-clip temporaries stay in cache; on this CPU it beats numpy.where over the batch ~3x.
    """
    batch, frames, height, width, channels = clips.shape
    out = np.empty_like(clips)
    fg_bits, out_bits = _unsigned_view(clips), _unsigned_view(out)
    bg_bits = fg_bits if background is None else _unsigned_view(background)
    word = fg_bits.dtype
    all_ones = np.array(np.iinfo(word).max, dtype=word)
    scratch = np.empty((frames, height, width, channels), dtype=word)
    bits = np.empty((batch, height, width, channels), dtype=word)
    np.copyto(bits, np.where(select[:, :, :, None], all_ones, word.type(0)))
    for b in range(batch):
        source = bg_bits[index[b]] if background is None else bg_bits[b]
        np.bitwise_xor(fg_bits[b], source, out=scratch)
        scratch &= bits[b]     # the same mask for every frame
        np.bitwise_xor(source, scratch, out=out_bits[b])
    return out


def check_masks(masks, batch: int, height: int, width: int) -> None:
    """Raise a ValueError unless ``masks`` is (B, H, W) for clips of that batch and frame size."""
    if tuple(masks.shape) != (batch, height, width):
        raise ValueError(f"masks must be (B, H, W) = {(batch, height, width)}; got shape {tuple(masks.shape)}")


def merge(clips, masks, background):
    """X * M + Y * (1 - M) per clip (eq. 4), exact (a select, not arithmetic).

    clips: (B, T, H, W, 3) foreground clips; masks: (B, H, W) {0, 1} (or bool);
    background: (B,) int indices into clips (inter-video), or (B, T, H, W, 3) background
    clips of the same dtype (intra-video). Returns a new array, same dtype and device.
    """
    xp = array_module(clips)
    batch, _, height, width = check_clips(clips)
    check_masks(masks, batch, height, width)
    select = masks.astype(bool)
    background_clips, index = None, None
    if (background.ndim if hasattr(background, "ndim") else np.ndim(background)) == 1:
        index = to_host(background)
        if index.shape != (batch,) or index.dtype.kind not in "iu" or ((index < 0) | (index >= batch)).any():
            raise ValueError(f"background indices must be {batch} integers in [0, {batch}); got {index!r}")
    else:
        background_clips = background
        check_clips(background_clips, "background clips")
        if tuple(background_clips.shape) != tuple(clips.shape) or background_clips.dtype != clips.dtype:
            raise ValueError(
                f"background clips must match clips {tuple(clips.shape)} {clips.dtype}; "
                f"got {tuple(background_clips.shape)} {background_clips.dtype}"
            )
    if xp is np:
        return _merge_numpy(clips, select, background_clips, index)
    other = clips[xp.asarray(index)] if background_clips is None else background_clips
    return xp.where(select[:, None, :, :, None], clips, other)


def clear_actors(clips, masks):
    """Each clip with its foreground (masks (B, H, W), 1 = foreground) filled from its temporal
    median frame, which a moving object passes through and so mostly leaves out: the clips'
    backgrounds without their own actors. Same shape, dtype and device as ``clips``."""
    xp = array_module(clips)
    batch, _, height, width = check_clips(clips)
    check_masks(masks, batch, height, width)
    median = xp.median(clips, axis=1, keepdims=True)
    if xp.dtype(clips.dtype).kind in "iu":
        median = xp.rint(median)
    return xp.where(masks.astype(bool)[:, None, :, :, None], median.astype(clips.dtype), clips)


def keep_own_backgrounds(masks, share: float, rng: np.random.Generator):
    """``masks`` (B, H, W) with each clip kept whole (its mask all ones) with probability 1 - share,
    one draw per clip from rng; share 1 draws nothing and returns ``masks`` as they are."""
    if share >= 1.0:
        return masks
    xp = array_module(masks)
    kept = xp.asarray(rng.random(masks.shape[0]) >= share)
    return xp.where(kept[:, None, None], xp.ones_like(masks), masks)


def augment(clips, cfg: FameConfig, rng: np.random.Generator, background_clips=None):
    """The FAME augmentation of one batch of NTHWC clips: returns (merged, masks).

    Inter-video backgrounds ("inter") come from other clips of the batch, chosen by
    pick_backgrounds(B, rng, cfg.pick); intra-video backgrounds ("intra") are the given
    background_clips (same video, another timestamp). With cfg.background_fill "median" an
    inter-video background first loses its own actor (clear_actors). With cfg.share below 1
    each clip is merged with that probability (keep_own_backgrounds, after the backgrounds are
    drawn); the others get an all-ones mask and stay as they are. variant "none"
    returns the clips themselves and an all-ones mask.
    """
    xp = array_module(clips)
    batch, _, height, width = check_clips(clips)
    if not cfg.merges:          # variant or background "none": the clips as they are
        return clips, xp.ones((batch, height, width), dtype=xp.uint8)
    foreground = masks_from_config(clips, cfg)
    if cfg.background == "intra":
        if background_clips is None:
            raise ValueError("FameConfig.background='intra' needs background_clips (same video, another timestamp)")
        background = background_clips
    else:
        index = pick_backgrounds(batch, rng, cfg.pick)
        background = clear_actors(clips, foreground)[xp.asarray(index)] if cfg.background_fill == "median" else index
    masks = keep_own_backgrounds(foreground, cfg.share, rng)
    return merge(clips, masks, background), masks
