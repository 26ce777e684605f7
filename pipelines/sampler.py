"""Stateless, keyed sampling: which videos, frames, crops and colour draws make each batch.

Every draw is a pure function of (seed, epoch, position): the epoch's video order comes
from ``default_rng([ORDER_KEY, seed, epoch])`` (identical on every rank), a sample's
draws from ``default_rng([SAMPLE_KEY, seed, epoch, position])`` where ``position`` is the
sample's place in that order, and a batch's FAME seed from ``[BATCH_KEY, seed, epoch,
first position]``. The loader state is therefore (seed, epoch, step, batch_size, world,
num_videos) (see pipelines.loader): a run resumed mid-epoch reproduces the remaining
batches exactly.

Sharding (pretraining, training clips): each rank takes an equal contiguous slice of
the epoch order, the remainder ``num_videos % world`` is left out for that epoch, and a
last incomplete batch is dropped, so every rank runs the same number of steps.
Test clips are not shuffled: ranks take near-equal contiguous slices of the list and the
last batch of a rank may be smaller; every video is seen once.

A plan is a dict of per-sample arrays keyed by the names of the role's feeds
(pipelines.feeds), cast to their types, plus the clip starts (STARTS, for checks); the
loader adds the encoded file bytes. Crop windows are DALI ROIs in (y, x) order, absolute
pixels of the decoded frame; a flipped view has its x coordinates swapped.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipelines.feeds import (
    FAME_SEED,
    FAME_STEP,
    FRAMES,
    INDEX,
    LABEL,
    PRETRAIN,
    TEST,
    TEST_VIEW,
    TRAIN,
    RoleFeeds,
    ViewFeeds,
)
from pipelines.params import AugParams, ClipGeometry, blur_weights
from pipelines.videos import VideoMeta

ORDER_KEY, SAMPLE_KEY, BATCH_KEY = 0, 1, 2
CROP_TRIES = 10            # random resized crop: tries before the centre-crop fallback
HUE_DEGREES = 360.0        # hue jitter is a fraction of the colour circle
NO_BLUR_SIGMA = 0.01       # a Gaussian this narrow leaves uint8 pixels unchanged
SEED_BOUND = 2**62         # FAME batch seeds are drawn in [0, SEED_BOUND)
STARTS = "starts"          # plan key of the clip starts: for checks, not a graph input


# ---------------------------------------------------------------- keys ----
def epoch_order(num_videos: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The epoch's order of video indices, the same on every rank."""
    if not shuffle:
        return np.arange(num_videos)
    return np.random.default_rng([ORDER_KEY, seed, epoch]).permutation(num_videos)


def sample_rng(seed: int, epoch: int, position: int) -> np.random.Generator:
    return np.random.default_rng([SAMPLE_KEY, seed, epoch, position])


def batch_seed(seed: int, epoch: int, first_position: int) -> int:
    """Seed of the batch-level draws (FAME backgrounds) of the batch starting at first_position."""
    return int(np.random.default_rng([BATCH_KEY, seed, epoch, first_position]).integers(SEED_BOUND))


def equal_shard(num_videos: int, rank: int, world: int) -> range:
    """Positions of the epoch order a rank reads: equal slices, remainder left out."""
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, world={world}), got {rank}")
    per_rank = num_videos // world
    return range(rank * per_rank, (rank + 1) * per_rank)


def full_batches(num_videos: int, rank: int, world: int, batch_size: int) -> int:
    """Steps per epoch of a training role: the full batches of the rank's equal shard."""
    return len(equal_shard(num_videos, rank, world)) // batch_size


def split_shard(num_videos: int, rank: int, world: int) -> range:
    """Positions a rank reads when every video must be seen: near-equal contiguous slices."""
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, world={world}), got {rank}")
    bounds = np.linspace(0, num_videos, world + 1).round().astype(int)
    return range(int(bounds[rank]), int(bounds[rank + 1]))


# ---------------------------------------------------------- temporal ----
def clip_frame_indices(start: int, geometry: ClipGeometry) -> np.ndarray:
    return start + geometry.stride * np.arange(geometry.frames, dtype=np.int64)


def draw_clip_starts(rng: np.random.Generator, num_frames: int, span: int, count: int) -> np.ndarray:
    """``count`` random clip starts in [0, num_frames - span], pairwise different while there is room.

    With fewer possible starts than ``count`` the starts repeat (a video with a single
    possible start gives all clips start 0).
    """
    room = num_frames - span + 1
    if room < 1:
        raise ValueError(f"a clip spans {span} frames but the video has {num_frames}")
    if room >= count:
        return rng.choice(room, size=count, replace=False)
    return np.resize(rng.permutation(room), count)


def uniform_clip_starts(num_frames: int, span: int, count: int) -> np.ndarray:
    """``count`` clip starts spread uniformly from the first to the last possible start."""
    room = num_frames - span + 1
    if room < 1:
        raise ValueError(f"a clip spans {span} frames but the video has {num_frames}")
    return np.linspace(0, room - 1, count).round().astype(np.int64)


def union_frames(clips: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Sorted distinct frame indices of several clips, and each clip's positions in them.

    The video decoder then reads every frame once, in order: a repeated or backward frame
    index would make it seek back to a keyframe.
    """
    union, inverse = np.unique(np.concatenate(clips), return_inverse=True)
    bounds = np.cumsum([0] + [len(c) for c in clips])
    orders = [inverse[a:b].astype(np.int32) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    return union.astype(np.int32), orders


# ----------------------------------------------------------- spatial ----
@dataclass(frozen=True)
class Window:
    """A crop window in pixels of the decoded frame."""

    x: float
    y: float
    width: float
    height: float

    def roi(self, flip: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """DALI resize ROI (y, x) start and end; a flip swaps the x ends."""
        x0, x1 = self.x, self.x + self.width
        if flip:
            x0, x1 = x1, x0
        return (np.array([self.y, x0], dtype=np.float32),
                np.array([self.y + self.height, x1], dtype=np.float32))


def draw_crop_window(rng: np.random.Generator, width: int, height: int,
                     area: tuple[float, float], aspect: tuple[float, float]) -> Window:
    """Random resized crop window (torchvision's rule): area fraction and log-uniform aspect
    ratio, up to CROP_TRIES tries, then the largest centred window of a clamped aspect."""
    frame_area = width * height
    log_low, log_high = math.log(aspect[0]), math.log(aspect[1])
    for _ in range(CROP_TRIES):
        target = frame_area * rng.uniform(area[0], area[1])
        ratio = math.exp(rng.uniform(log_low, log_high))
        w = int(round(math.sqrt(target * ratio)))
        h = int(round(math.sqrt(target / ratio)))
        if 0 < w <= width and 0 < h <= height:
            return Window(float(rng.integers(0, width - w + 1)), float(rng.integers(0, height - h + 1)),
                          float(w), float(h))
    frame_ratio = width / height
    if frame_ratio < aspect[0]:
        w, h = width, int(round(width / aspect[0]))
    elif frame_ratio > aspect[1]:
        w, h = int(round(height * aspect[1])), height
    else:
        w, h = width, height
    return Window((width - w) / 2, (height - h) / 2, float(w), float(h))


def centre_window(width: int, height: int, fraction: float) -> Window:
    """The centred square of side fraction * min(width, height) (resize short side, centre crop)."""
    side = fraction * min(width, height)
    return Window((width - side) / 2, (height - side) / 2, side, side)


# ------------------------------------------------------------ colour ----
@dataclass(frozen=True)
class ColourDraw:
    """DALI color_twist and gaussian_blur arguments of one view (identity when not drawn)."""

    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    hue: float = 0.0           # degrees
    sigma: float = NO_BLUR_SIGMA

    @property
    def blur(self) -> bool:
        return self.sigma != NO_BLUR_SIGMA


def _factor(rng: np.random.Generator, strength: float) -> float:
    return float(rng.uniform(max(0.0, 1.0 - strength), 1.0 + strength))


def draw_colour(rng: np.random.Generator, aug: AugParams) -> ColourDraw:
    """Colour jitter (p=jitter_p), grayscale (p=grayscale_p, saturation 0) and blur (p=blur_p).

    Every uniform is drawn whether or not it is used, so the number of draws is fixed.
    """
    jitter = rng.random() < aug.jitter_p
    factors = (_factor(rng, aug.brightness), _factor(rng, aug.contrast), _factor(rng, aug.saturation),
               float(rng.uniform(-aug.hue, aug.hue)) * HUE_DEGREES)
    gray = rng.random() < aug.grayscale_p
    blur = rng.random() < aug.blur_p
    sigma = float(rng.uniform(*aug.blur_sigma))
    brightness, contrast, saturation, hue = factors if jitter else (1.0, 1.0, 1.0, 0.0)
    return ColourDraw(brightness, contrast, 0.0 if gray else saturation, hue,
                      sigma if blur else NO_BLUR_SIGMA)


@dataclass(frozen=True)
class ViewDraw:
    window: Window
    flip: bool
    colour: ColourDraw

    def plan(self, view: ViewFeeds, blur_window: int) -> dict[str, np.ndarray]:
        """The draws under the feeds of ``view`` (which has colour feeds); the blur as sigma and
        as its weights over ``blur_window`` pixels."""
        roi_start, roi_end = self.window.roi(self.flip)
        c, feeds = self.colour, view.colour
        values = {view.roi_start: roi_start, view.roi_end: roi_end, feeds.brightness: c.brightness,
                  feeds.contrast: c.contrast, feeds.saturation: c.saturation, feeds.hue: c.hue,
                  feeds.blur: c.blur, feeds.sigma: c.sigma, feeds.blur_weights: blur_weights(c.sigma, blur_window)}
        return {feed.name: feed.array(value) for feed, value in values.items()}


def draw_view(rng: np.random.Generator, video: VideoMeta, aug: AugParams) -> ViewDraw:
    window = draw_crop_window(rng, video.width, video.height, aug.crop_area, aug.crop_aspect)
    flip = bool(rng.random() < aug.flip_p)
    return ViewDraw(window, flip, draw_colour(rng, aug))


# ----------------------------------------------------------- samplers ----
def _collate(samples: list[dict[str, np.ndarray]], feeds: RoleFeeds) -> dict[str, list[np.ndarray]]:
    """Per-sample plans -> the batch plan: per key of ``feeds`` (and STARTS) the list over samples."""
    names = (*(feed.name for feed in feeds.planned), STARTS)
    return {name: [s[name] for s in samples] for name in names}


def _video_feeds(video_index: int, label: int) -> dict[str, np.ndarray]:
    return {LABEL.name: LABEL.array(label), INDEX.name: INDEX.array(video_index)}


class _ShardedEpochs:
    """Epoch order, this rank's share of it and the batches it makes."""

    def __init__(self, videos: Sequence[VideoMeta], *, batch_size: int, seed: int, rank: int, world: int,
                 shuffle: bool, equal_shards: bool):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.videos = list(videos)
        self.batch_size, self.seed, self.rank, self.world = batch_size, seed, rank, world
        self.shuffle = shuffle
        self._cached_epoch, self._cached_order = None, None
        shard = equal_shard if equal_shards else split_shard
        self.positions = shard(len(self.videos), rank, world)
        if equal_shards:    # drop_last: only full batches
            self.steps_per_epoch = full_batches(len(self.videos), rank, world, batch_size)
        else:               # every video once: the last batch may be smaller
            self.steps_per_epoch = math.ceil(len(self.positions) / batch_size)

    def __len__(self) -> int:
        return self.steps_per_epoch

    def batch_positions(self, epoch: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions in the epoch order, video indices) of one batch of this rank."""
        if not 0 <= step < self.steps_per_epoch:
            raise IndexError(f"step {step} outside [0, {self.steps_per_epoch}) of epoch {epoch}")
        first = self.positions.start + step * self.batch_size
        last = min(first + self.batch_size, self.positions.stop)
        positions = np.arange(first, last)
        return positions, self._order(epoch)[positions]

    def _order(self, epoch: int) -> np.ndarray:
        """The epoch order, kept for the epoch being read (a permutation per batch adds up on big lists)."""
        if self._cached_epoch != epoch:
            self._cached_order = epoch_order(len(self.videos), self.seed, epoch, self.shuffle)
            self._cached_epoch = epoch
        return self._cached_order


class _RandomViewSampler(_ShardedEpochs):
    """Shuffled equal shards; per video one clip per view of ``feeds`` at different random
    starts, each with its own random view (the training roles)."""

    feeds: RoleFeeds

    def __init__(self, videos: Sequence[VideoMeta], geometry: ClipGeometry, aug: AugParams, *,
                 batch_size: int, seed: int = 0, rank: int = 0, world: int = 1):
        super().__init__(videos, batch_size=batch_size, seed=seed, rank=rank, world=world,
                         shuffle=True, equal_shards=True)
        self.geometry, self.aug = geometry, aug
        self.blur_window = aug.blur_window(geometry.crop)

    def plan(self, epoch: int, step: int) -> dict[str, list[np.ndarray]]:
        positions, video_ids = self.batch_positions(epoch, step)
        samples = [self.sample(epoch, int(p), int(v)) for p, v in zip(positions, video_ids, strict=True)]
        self.add_batch_feeds(samples, epoch, step)
        return _collate(samples, self.feeds)

    def sample(self, epoch: int, position: int, video_index: int) -> dict[str, np.ndarray]:
        """The draws of one video: clip starts, then each view's crop, flip and colour, in view order.

        The frames of all clips are decoded once (``union_frames``); a view with an order
        feed picks its clip out of them, a single clip is the decoded frames themselves.
        """
        video = self.videos[video_index]
        rng = sample_rng(self.seed, epoch, position)
        starts = draw_clip_starts(rng, video.frames, self.geometry.span, len(self.feeds.views))
        frames, orders = union_frames([clip_frame_indices(int(s), self.geometry) for s in starts])
        plan = {FRAMES.name: FRAMES.array(frames), STARTS: starts.astype(np.int64),
                **_video_feeds(video_index, video.label)}
        for view, order in zip(self.feeds.views, orders, strict=True):
            if view.order is not None:
                plan[view.order.name] = view.order.array(order)
            plan.update(draw_view(rng, video, self.aug).plan(view, self.blur_window))
        return plan

    def add_batch_feeds(self, samples: list[dict], epoch: int, step: int) -> None:
        """Per-batch draws shared by every sample of the batch (none by default)."""


class PretrainSampler(_RandomViewSampler):
    """Two clips per video (query, key) at different random starts, each with its own view draw."""

    feeds = PRETRAIN

    def add_batch_feeds(self, samples: list[dict], epoch: int, step: int) -> None:
        seed, global_step = self.fame_keys(epoch, step)
        for s in samples:
            s[FAME_SEED.name], s[FAME_STEP.name] = FAME_SEED.array(seed), FAME_STEP.array(global_step)

    def fame_keys(self, epoch: int, step: int) -> tuple[int, int]:
        """A batch's FAME seed (its background pick) and global training step (its beta warm-up),
        on the host: what the plan's FAME_SEED / FAME_STEP hold for every sample."""
        first_position = self.positions.start + step * self.batch_size
        return batch_seed(self.seed, epoch, first_position), epoch * self.steps_per_epoch + step


class TrainClipSampler(_RandomViewSampler):
    """One random clip per video with a random view (linear probe / finetuning)."""

    feeds = TRAIN


DEFAULT_CENTRE_FRACTION = 112 / 128   # centre crop 112 of a short side resized to 128


class EvalClipSampler(_ShardedEpochs):
    """``clips_per_video`` uniformly spaced clips of every video, centre crop, list order.

    One sample is one video with all its clips (decoded in one pass); ``videos_per_batch``
    videos make a batch, the last one of a rank possibly fewer.
    """

    feeds = TEST

    def __init__(self, videos: Sequence[VideoMeta], geometry: ClipGeometry, *, clips_per_video: int,
                 videos_per_batch: int, centre_fraction: float = DEFAULT_CENTRE_FRACTION,
                 rank: int = 0, world: int = 1):
        if clips_per_video < 1:
            raise ValueError(f"clips_per_video must be >= 1, got {clips_per_video}")
        if not 0 < centre_fraction <= 1:
            raise ValueError(f"centre_fraction must be in (0, 1], got {centre_fraction}")
        super().__init__(videos, batch_size=videos_per_batch, seed=0, rank=rank, world=world,
                         shuffle=False, equal_shards=False)
        self.geometry, self.clips_per_video, self.centre_fraction = geometry, clips_per_video, centre_fraction

    def sample(self, video_index: int) -> dict[str, np.ndarray]:
        video = self.videos[video_index]
        starts = uniform_clip_starts(video.frames, self.geometry.span, self.clips_per_video)
        frames, orders = union_frames([clip_frame_indices(int(s), self.geometry) for s in starts])
        roi_start, roi_end = centre_window(video.width, video.height, self.centre_fraction).roi()
        view = TEST_VIEW
        return {FRAMES.name: FRAMES.array(frames), view.order.name: view.order.array(np.concatenate(orders)),
                view.roi_start.name: view.roi_start.array(roi_start), view.roi_end.name: view.roi_end.array(roi_end),
                STARTS: starts, **_video_feeds(video_index, video.label)}

    def plan(self, epoch: int, step: int) -> dict[str, list[np.ndarray]]:
        _, video_ids = self.batch_positions(epoch, step)
        return _collate([self.sample(int(v)) for v in video_ids], self.feeds)
