"""Which videos a synthetic dataset holds: every video's split, class, index, background pool
and background image (the background bias of the package docstring), and where it is written."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data.spec import SyntheticSpec
from data.synthetic.ranges import (
    COLOUR_BACKGROUNDS,
    GENERATED_PREFIX,
    GRAY_BACKGROUNDS,
    LENGTH_STREAM,
    PLAN_STREAM,
    POOL_STREAM,
)
from data.video_io import codec_setting

SPLITS = ("train", "test")
VIDEOS_DIR = "videos"


@dataclass(frozen=True)
class VideoPlan:
    """One video to render: where it goes, which background pool/image it uses and how many frames it has."""

    split: str
    label: int
    index: int
    pool: int
    background: str
    frames: int

    def relpath(self, spec: SyntheticSpec) -> str:
        motion = spec.motions[self.label]
        name = f"{motion}_{self.split}_{self.index:03d}{codec_setting(spec.codec).extension}"
        return f"{VIDEOS_DIR}/{self.split}/{motion}/{name}"


def background_pools(spec: SyntheticSpec) -> list[list[str]]:
    """Split the background images into one pool per class, colour and gray images spread evenly
    (generated backgrounds: one hue family per pool)."""
    if spec.backgrounds == "generated":
        return [[f"{GENERATED_PREFIX}{k}"] for k in range(spec.num_classes)]
    rng = np.random.default_rng([spec.seed, POOL_STREAM])
    colour = [COLOUR_BACKGROUNDS[i] for i in rng.permutation(len(COLOUR_BACKGROUNDS))]
    gray = [GRAY_BACKGROUNDS[i] for i in rng.permutation(len(GRAY_BACKGROUNDS))]
    pools: list[list[str]] = [[] for _ in range(spec.num_classes)]
    for position, name in enumerate(colour + gray):
        pools[position % spec.num_classes].append(name)
    return pools


def plan_videos(spec: SyntheticSpec) -> list[VideoPlan]:
    """Assign every video its class, background pool and background image (see the package
    docstring), and its length: ``spec.frames``, or with ``spec.length_spread`` one drawn
    uniformly within that many frames of it (a stream of its own: the rest of the plan is the
    same with or without a spread)."""
    pools = background_pools(spec)
    rng = np.random.default_rng([spec.seed, PLAN_STREAM])
    lengths = np.random.default_rng([spec.seed, LENGTH_STREAM])
    plans = []
    for split in SPLITS:
        count = spec.videos_per_class(split)
        own = int(round(spec.bg_correlation(split) * count))
        for label in range(spec.num_classes):
            start = int(rng.integers(spec.num_classes))
            pool_ids = [label] * own + [(start + j) % spec.num_classes for j in range(count - own)]
            pool_ids = [pool_ids[i] for i in rng.permutation(count)]
            image_offsets = rng.integers(0, np.iinfo(np.int32).max, size=spec.num_classes)
            used = [0] * spec.num_classes
            for index, pool in enumerate(pool_ids):
                images = pools[pool]
                background = images[(image_offsets[pool] + used[pool]) % len(images)]
                used[pool] += 1
                frames = spec.frames
                if spec.length_spread:
                    frames += int(lengths.integers(-spec.length_spread, spec.length_spread + 1))
                plans.append(VideoPlan(split, label, index, pool, background, frames))
    return plans

