"""The inputs of the DALI graphs, declared once: each feed's key in the sampler's plan and its type.

Per batch a graph's external source returns the encoded file bytes and per-sample arrays
the sampler drew (pipelines.sampler). Each of them is a ``Feed``: its key in the plan and
its DALI type (the sampler casts its draws to it, the graph declares it to DALI). The
draws of one view of a clip (its frames' order among the decoded ones, its crop window,
its colour) are a ``ViewFeeds``; a role's plan is a ``RoleFeeds``: its views, in order,
between the decoded frames and the label / index, then the draws shared by the batch.

Pretraining has two views of a video, QUERY and KEY; training clips one, TRAIN_VIEW
(random crop and colour, its frames decoded in clip order); test clips one, TEST_VIEW
(all clips of the video, centre crop, no colour). Which of its role's feeds a graph
reads is chosen in pipelines.graphs, before the graph is built.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import nvidia.dali.types as types

GPU = "gpu"


@dataclass(frozen=True)
class Feed:
    """One per-sample input of a graph: its key in the sampler's plan and its DALI type."""

    name: str
    dtype: types.DALIDataType

    def array(self, value: Any) -> np.ndarray:
        """``value`` as this feed's NumPy type (what DALI is told to expect)."""
        return np.asarray(value, dtype=types.to_numpy_type(self.dtype))


ENCODED = Feed("encoded", types.UINT8)       # the file's bytes, added by the loader
FRAMES = Feed("frames", types.INT32)         # sorted distinct frame indices to decode
LABEL = Feed("label", types.INT64)
INDEX = Feed("index", types.INT64)           # position in the video list
FAME_SEED = Feed("fame_seed", types.INT64)   # per batch: FAME's background pick
FAME_STEP = Feed("fame_step", types.INT64)   # per batch: global step (FAME's beta warm-up)


@dataclass(frozen=True)
class ColourFeeds:
    """The colour draws of one view: color_twist's factors, whether to blur, and the blur in
    its two forms: sigma (fn.gaussian_blur, GPU) and its weights over the window (fn.filter, CPU)."""

    brightness: Feed
    contrast: Feed
    saturation: Feed
    hue: Feed
    blur: Feed
    sigma: Feed
    blur_weights: Feed

    @property
    def planned(self) -> tuple[Feed, ...]:
        return (self.brightness, self.contrast, self.saturation, self.hue, self.blur, self.sigma,
                self.blur_weights)

    def blur_input(self, device: str) -> Feed:
        """The form of the blur a graph on ``device`` reads."""
        return self.sigma if device == GPU else self.blur_weights

    def reads(self, device: str) -> tuple[Feed, ...]:
        """What the colour stage on ``device`` reads."""
        return (self.brightness, self.contrast, self.saturation, self.hue, self.blur, self.blur_input(device))


@dataclass(frozen=True)
class ViewFeeds:
    """The draws of one view of a clip: the order picking its frames out of the decoded ones
    (None when the decoded frames are the clip), its crop window as a DALI ROI (y, x) and its
    colour draws (None when the role has no colour stage)."""

    order: Feed | None
    roi_start: Feed
    roi_end: Feed
    colour: ColourFeeds | None

    @property
    def crop(self) -> tuple[Feed, Feed]:
        return self.roi_start, self.roi_end

    @property
    def planned(self) -> tuple[Feed, ...]:
        """Every feed of the view, in plan order."""
        order = () if self.order is None else (self.order,)
        colour = () if self.colour is None else self.colour.planned
        return (*order, *self.crop, *colour)


def _view(suffix: str, *, order: bool, colour: bool) -> ViewFeeds:
    """The feeds of a view whose plan keys end in ``suffix``."""
    def feed(name: str, dtype=types.FLOAT) -> Feed:
        return Feed(name + suffix, dtype)

    draws = None
    if colour:
        draws = ColourFeeds(feed("brightness"), feed("contrast"), feed("saturation"), feed("hue"),
                            feed("blur", types.BOOL), feed("sigma"), feed("blur_weights"))
    return ViewFeeds(feed("order", types.INT32) if order else None, feed("roi_start"), feed("roi_end"), draws)


QUERY = _view("_q", order=True, colour=True)
KEY = _view("_k", order=True, colour=True)
TRAIN_VIEW = _view("", order=False, colour=True)
TEST_VIEW = _view("", order=True, colour=False)


@dataclass(frozen=True)
class RoleFeeds:
    """The plan of one role: per sample its views' draws, and ``per_batch`` draws that every
    sample of a batch shares."""

    views: tuple[ViewFeeds, ...]
    per_batch: tuple[Feed, ...] = ()

    @property
    def planned(self) -> tuple[Feed, ...]:
        """Every feed the sampler plans, in order."""
        return (FRAMES, *(feed for view in self.views for feed in view.planned), LABEL, INDEX, *self.per_batch)


PRETRAIN = RoleFeeds((QUERY, KEY), per_batch=(FAME_SEED, FAME_STEP))
TRAIN = RoleFeeds((TRAIN_VIEW,))
TEST = RoleFeeds((TEST_VIEW,))
