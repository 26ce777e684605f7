"""FAME: foreground-background merging of video clips (CVPR 2022, Sec. 3.2), NumPy or CuPy.

Layouts
- clips: NTHWC, (B, T, H, W, 3), uint8 in 0..255 or floating point in 0..1 (the colour
  statistics clip float values outside that range), T >= 2, NumPy or CuPy (every result
  stays on the input's device; CuPy is imported only when a CuPy array comes in, so the
  package imports on machines without a GPU).
- masks: (B, H, W) uint8 in {0, 1}, one mask per clip, constant over time.

API
- foreground_mask(clips, beta=0.5, variant="fame", hue="published", **options) -> masks
  with exactly int(beta*H*W) ones per clip (ties: lower flat index wins); options are any
  other FameConfig field.
- merge(clips, masks, background) -> clips * M + background * (1 - M); background is (B,)
  indices into clips (inter-video) or (B, T, H, W, 3) clips (intra-video). Exact select,
  same dtype and device.
- pick_backgrounds(n, rng, mode="derangement"|"permutation") -> (n,) indices.
- clear_actors(clips, masks) -> the clips with their foreground filled from their temporal
  median frame (the backgrounds of fame.background_fill="median").
- augment(clips, cfg, rng, background_clips=None) -> (merged, masks): the whole batch
  augmentation (the pipeline's python_function stage calls this).
- FameConfig: frozen dataclass of every knob, published values as defaults; each field's
  rule is its type hint and range (fame.fields, shared with the other settings classes).

The steps, constants and choices follow the paper and its published code: seed region of adjacent-frame
differences, Gaussian blur (k = int(0.1*crop)//2*2+1, sigma = k/3, reflect padding),
10x10x10 colour bins of the time-mean HSV frame, foreground histogram from the top 50% of
the seed, background histogram from the bottom 10% with +1 per bin, soft mask
P(x|F) / (P(x|F) + P(x|B)), blurred, normalised, top-beta. Beyond the paper:
beta="auto" (per-clip Otsu threshold, clamped), camera-motion compensation and a background
clip without its own actor (background_fill="median").
"""

from fame.config import FameConfig
from fame.mask import foreground_mask
from fame.merging import augment, clear_actors, merge, pick_backgrounds

__all__ = ["FameConfig", "augment", "clear_actors", "foreground_mask", "merge", "pick_backgrounds"]
