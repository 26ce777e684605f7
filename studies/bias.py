"""The background-bias probe's conditions and scores: array functions, NumPy or CuPy.

A classifier that reads motion should keep its prediction when the scenery is taken
away, and follow the moving foreground when that is pasted on another class's
scenery. Per test video and clip (NTHWC, (B, T, H, W, 3), uint8 or float; masks
(B, H, W) in {0, 1}, 1 on the moving foreground, the same for every frame):

- original: the clip as it is.
- background only: the foreground region filled from a still frame of the scenery
  ("median-fill", the default: the scenery keeps its own changes, e.g. a pan, outside
  the mask), or every frame replaced by that still ("median": a still image, which
  removes the scenery's own motion too). The still is a temporal median, from which
  an actor drops out where it covers a pixel in fewer than half of the frames: the
  clip's own by default, the video's over all its test clips in the probe (a small,
  slow actor stays in one clip's median). ``actor_kept`` says, from the actor's boxes,
  how much of it a background-only clip still shows.
- foreground only: the background replaced by a constant colour.
- swap: the foreground of video i on the background of video j of another class
  (the FAME merge, eq. 4, with a derangement over classes: ``pair_across_classes``).

Scores (``bias_scores``): top-1 per condition; background reliance = background-only
top-1 / chance (1: the scenery alone says nothing; C: it says everything); for
swaps, the fractions of predictions that follow the foreground's class, the
background's class, or neither.

What each condition measures depends on the mask. A mask that misses part of the
actor leaves that part in the background-only clip and drops it from the
foreground-only one, and a swap then pastes a piece of the actor on the other
scenery: the scores mix the two sources. Masks from the synthetic data's object
boxes are exact up to the box's own background; FAME's masks hold int(beta*H*W)
pixels whatever the actor's size.
"""
from __future__ import annotations

import numpy as np

from fame.arrays import array_module, check_clips
from fame.merging import merge

CONDITIONS = ("original", "background_only", "foreground_only", "swap")
BACKGROUND_FILLS = ("median-fill", "median")
PERCENT = 100.0


def _check_masks(clips, masks) -> tuple[int, int, int, int]:
    batch, frames, height, width = check_clips(clips)
    if tuple(masks.shape) != (batch, height, width):
        raise ValueError(f"masks must be (B, H, W) = {(batch, height, width)}; got shape {tuple(masks.shape)}")
    return batch, frames, height, width


def median_frame(clips):
    """(B, 1, H, W, 3): each clip's per-pixel temporal median, in the clips' dtype."""
    xp = array_module(clips)
    check_clips(clips)
    median = xp.median(clips, axis=1, keepdims=True)
    if np.dtype(clips.dtype).kind == "u":
        median = xp.round(median)
    return median.astype(clips.dtype)


def background_only(clips, masks, fill: str = "median-fill", still=None):
    """The clips with their moving foreground removed (see the module docstring for ``fill``).
    ``still``: (B, H, W, 3) frames in the clips' dtype to fill from; default each clip's own
    temporal median. The probe passes each video's median over all its test clips: an actor
    that moves across the video drops out of it where it may stay in one clip's (a small, slow
    actor covers a pixel in more than half of a clip's frames)."""
    if fill not in BACKGROUND_FILLS:
        raise ValueError(f"background fill must be one of {BACKGROUND_FILLS}; got {fill!r}")
    xp = array_module(clips)
    batch, _, height, width = _check_masks(clips, masks)
    if still is None:
        still = median_frame(clips)
    elif tuple(still.shape) != (batch, height, width, 3):
        raise ValueError(f"still frames must be (B, H, W, 3) = {(batch, height, width, 3)}; got {tuple(still.shape)}")
    else:
        still = still[:, None].astype(clips.dtype)
    still = xp.broadcast_to(still, clips.shape)
    if fill == "median":
        return xp.ascontiguousarray(still)
    return xp.where(masks.astype(bool)[:, None, :, :, None], still, clips)


def persistent_pixels(frame_boxes, height: int, width: int) -> np.ndarray:
    """(H, W) bool: the pixels inside the boxes of at least half of the frames ((N, 4) [x0, y0, x1, y1],
    x1/y1 exclusive): where an actor with these boxes stays in the frames' median."""
    covered = np.zeros((height, width), np.int64)
    for x0, y0, x1, y1 in np.asarray(frame_boxes, dtype=np.int64):
        covered[y0:y1, x0:x1] += 1
    return 2 * covered >= len(frame_boxes)


def actor_kept(masks, frame_boxes, persistent) -> np.ndarray:
    """(B,) the share of the actor a background-only clip still shows, from the actor's boxes:
    ``frame_boxes`` (B, T, 4) per frame of each clip, ``masks`` (B, H, W) the masks the clip was
    filled through, ``persistent`` (B, H, W) bool where the fill's still frame holds the actor
    (``persistent_pixels`` of the frames it was made from). The actor stays where its box lies
    outside the mask, and inside it where the still holds it."""
    masks = np.asarray(masks).astype(bool)
    frame_boxes = np.asarray(frame_boxes, dtype=np.int64)
    if frame_boxes.ndim != 3 or frame_boxes.shape[0] != masks.shape[0] or frame_boxes.shape[2] != 4:
        raise ValueError(f"frame boxes must be (B, T, 4) with B = {masks.shape[0]}; got {frame_boxes.shape}")
    shows = ~masks | np.asarray(persistent, dtype=bool)
    kept = np.zeros(len(masks))
    for clip, boxes in enumerate(frame_boxes):
        inside = [(shows[clip, y0:y1, x0:x1].sum(), (y1 - y0) * (x1 - x0)) for x0, y0, x1, y1 in boxes]
        kept[clip] = sum(k for k, _ in inside) / max(sum(area for _, area in inside), 1)
    return kept


def foreground_only(clips, masks, colour):
    """The clips' foreground on a constant background of ``colour`` (3 values in the clips' range)."""
    xp = array_module(clips)
    _check_masks(clips, masks)
    fill = xp.asarray(colour, dtype=clips.dtype).reshape(1, 1, 1, 1, 3)
    return xp.where(masks.astype(bool)[:, None, :, :, None], clips, fill)


def swap_backgrounds(clips, masks, background_clips):
    """The foreground of each clip on the background of the matching clip of ``background_clips``."""
    return merge(clips, masks, background_clips)


def pair_across_classes(labels, rng: np.random.Generator) -> np.ndarray:
    """(V,) int64: for every video the index of a video of another class.

    A permutation where possible: the videos are shuffled, ordered by class (the classes
    in random order), and each takes the video m places further round, m the largest
    class's size; two videos m apart can share a class only if it holds more than m of
    them. Where one class holds more than half the videos no such permutation exists, and
    its videos draw partners from the other classes with repetition.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D; got shape {labels.shape}")
    classes, counts = np.unique(labels, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"swaps need videos of at least two classes; got class(es) {classes.tolist()}")
    n, largest = len(labels), int(counts.max())
    if 2 * largest <= n:
        class_rank = dict(zip(classes.tolist(), rng.permutation(len(classes)).tolist(), strict=True))
        shuffled = rng.permutation(n)
        order = shuffled[np.argsort([class_rank[c] for c in labels[shuffled]], kind="stable")]
        partner = np.empty(n, dtype=np.int64)
        partner[order] = order[(np.arange(n) + largest) % n]
        return partner
    partner = np.empty(n, dtype=np.int64)
    for i, label in enumerate(labels):
        others = np.flatnonzero(labels != label)
        partner[i] = others[rng.integers(len(others))]
    return partner


def bias_scores(predictions: dict, labels, partner_labels, num_classes: int) -> dict:
    """Scores of per-video predicted classes for each condition (dict of (V,) integer arrays).

    labels: (V,) each video's class; partner_labels: (V,) the class of the video whose
    background its swap wears. Returns top-1 (%) per condition, chance (%), background
    reliance (background-only top-1 / chance), and for swaps the % of predictions that
    follow the foreground's class, the background's class, or neither.
    """
    labels = np.asarray(labels, dtype=np.int64)
    partner_labels = np.asarray(partner_labels, dtype=np.int64)
    if labels.shape != partner_labels.shape or labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels and partner labels must be the same non-empty 1-D shape; got "
                         f"{labels.shape} and {partner_labels.shape}")
    if (labels == partner_labels).any():
        raise ValueError("a swap pairs a video with a background of its own class")
    unknown = sorted(set(predictions) - set(CONDITIONS))
    if unknown:
        raise ValueError(f"unknown conditions {unknown}; known: {CONDITIONS}")
    chance = PERCENT / num_classes
    scores = {"videos": int(labels.size), "chance": chance, "top1": {}}
    for condition, predicted in predictions.items():
        predicted = np.asarray(predicted, dtype=np.int64)
        if predicted.shape != labels.shape:
            raise ValueError(f"{condition}: {predicted.shape} predictions for {labels.shape} videos")
        scores["top1"][condition] = PERCENT * float((predicted == labels).mean())
    if "background_only" in scores["top1"]:
        scores["background_reliance"] = scores["top1"]["background_only"] / chance
    if "swap" in predictions:
        predicted = np.asarray(predictions["swap"], dtype=np.int64)
        follows_fg, follows_bg = predicted == labels, predicted == partner_labels
        scores["swap"] = {"foreground": PERCENT * float(follows_fg.mean()),
                          "background": PERCENT * float(follows_bg.mean()),
                          "neither": PERCENT * float((~follows_fg & ~follows_bg).mean())}
    return scores
