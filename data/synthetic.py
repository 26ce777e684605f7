"""Synthetic motion videos: the built-in, background-biased benchmark.

Each video shows one textured object moving over a natural-image background.
The class is the object's motion pattern (``MOTIONS``); the object's shape,
size, colours and texture are drawn per video and carry no class information.
With ``palette = n > 0`` the look (shape, colours, texture, orientation) is
instead one of ``n`` fixed looks shared by all classes, picked per video: still
independent of the class, but no longer a per-video fingerprint, so telling
two videos apart takes their motion (or their background).
Backgrounds are crops of images shipped with scikit-image, panned slowly with
sub-pixel steps and overlaid with per-frame sensor noise.

Background bias: each class owns a pool of background images. In a split with
correlation ``c``, ``round(c * n)`` of a class's ``n`` videos take their
background from the class's own pool; the rest cycle evenly through all pools
(own pool included). ``c = 1`` makes the background a perfect class cue;
``c = 0`` makes the pool independent of the class (with ``n`` a multiple of
``num_classes``, every pool appears equally often in every class).

Layout written under ``root``::

    videos/<split>/<class>/<class>_<split>_<index>.<ext>
    trainlist.txt, testlist.txt   file lists, paths relative to root, 0-based labels
    classInd.txt                  1-based class names
    annotations.json              per video: split, label, motion, pool, background,
                                  per-frame object boxes [x0, y0, x1, y1] (pixels, x1/y1 exclusive)
    spec.json                     the spec that produced the data (data.spec.SyntheticSpec; written last: marks completion)
"""

from __future__ import annotations

import colorsys
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import skimage.color
import skimage.data
import skimage.transform

from data.filelist import Entry, read_file_list, write_class_names, write_file_list
from data.parallel import auto_workers, process_pool
from data.spec import MOTIONS, SyntheticSpec
from data.video_io import codec_setting, write_video

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
SPLITS = ("train", "test")
TRAIN_LIST = "trainlist.txt"
TEST_LIST = "testlist.txt"
CLASS_NAMES_FILE = "classInd.txt"
ANNOTATIONS_FILE = "annotations.json"
SPEC_FILE = "spec.json"
VIDEOS_DIR = "videos"
LIST_FOR_SPLIT = {"train": TRAIN_LIST, "test": TEST_LIST}

# scikit-image images that load without a download. Grayscale ones become RGB.
COLOUR_BACKGROUNDS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field",
                      "immunohistochemistry", "retina", "stereo_motorcycle")
GRAY_BACKGROUNDS = ("camera", "coins", "moon", "brick", "grass", "gravel", "clock")

GENERATED_PREFIX = "generated-"

# Generated backgrounds: smooth random colour fields, one per video; a pool is a hue
# family (pool k centred at k / num_classes on the colour wheel), so the pool stays a
# class cue while no two videos share a background.
GENERATED_HUE_SPREAD = 0.08          # hue varies by this much (fraction of the wheel) within a frame
GENERATED_HUE_JITTER = 0.04          # per-video shift of the pool's hue centre
GENERATED_BLOB_FRACTION = (0.08, 0.2)   # blob size, fraction of the canvas' shorter side
GENERATED_SATURATION = (0.3, 0.75)
GENERATED_VALUE = (0.3, 0.85)
GENERATED_DETAIL = 0.12              # fine texture amplitude (value units)
GENERATED_DETAIL_BLOB_DIVISOR = 6    # the fine texture's blobs are this many times smaller
# Smallest value range a smooth field is divided by when rescaled to 0..1 (a flat field stays flat).
FIELD_RANGE_FLOOR = 1e-6

PIXEL_MAX = 255.0

# Background crops: fraction of the largest crop that fits the image, and a cap on
# the working image size relative to the frame (keeps per-video resizing cheap).
CROP_FRACTION_RANGE = (0.35, 1.0)
WORKING_IMAGE_FRAME_RATIO = 3
BACKGROUND_GAIN_RANGE = (0.8, 1.2)
BACKGROUND_BIAS_RANGE = (-15.0, 15.0)
PAN_SPEED_FRACTION_RANGE = (0.4, 1.0)
MIRROR_PROBABILITY = 0.5

# Motion parameters (frames or fractions of the free space in the frame).
LINEAR_TRAVEL_RANGE = (0.6, 0.95)
ZIGZAG_TRAVEL_RANGE = (0.4, 0.75)
ZIGZAG_PERIOD_RANGE = (10.0, 16.0)
ZIGZAG_AMPLITUDE_RANGE = (0.5, 0.9)
CIRCLE_RADIUS_RANGE = (0.55, 0.95)
CIRCLE_PERIOD_RANGE = (20.0, 32.0)
PULSE_AMPLITUDE_RANGE = (0.25, 0.35)
PULSE_PERIOD_RANGE = (12.0, 20.0)

# Object look.
SHAPES = ("disk", "ellipse", "box")
TEXTURES = ("flat", "stripes", "checker", "rings")
ELLIPSE_ASPECT_RANGE = (0.5, 0.8)
TEXTURE_PERIOD_RANGE = (0.2, 0.45)  # fraction of the object size
SATURATION_RANGE = (0.6, 1.0)
VALUE_RANGE = (0.65, 1.0)
SECOND_VALUE_RANGE = (0.3, 0.9)
SECOND_HUE_OFFSET_RANGE = (0.25, 0.75)  # the texture's second colour sits across the colour wheel
SHADING_STRENGTH = 0.25
ALPHA_BOX_THRESHOLD = 0.5
VIDEOS_PER_TASK = 4


# Random streams, each seeded [seed, stream id]; per-video draws use [seed, split, label, index].
# The ids are fixed: changing one changes every generated dataset.
POOL_STREAM = 8      # shuffles the background images into pools
PLAN_STREAM = 9      # assigns every video its background pool and image
PALETTE_STREAM = 97  # seeds the fixed looks of a palette apart from the per-video draws


@dataclass(frozen=True)
class VideoPlan:
    """One video to render: where it goes and which background pool/image it uses."""

    split: str
    label: int
    index: int
    pool: int
    background: str

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
    """Assign every video its class, background pool and background image (see module docstring)."""
    pools = background_pools(spec)
    rng = np.random.default_rng([spec.seed, PLAN_STREAM])
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
                plans.append(VideoPlan(split, label, index, pool, background))
    return plans


@lru_cache(maxsize=None)
def _working_background(name: str, shorter_side: int) -> np.ndarray:
    """A background image as float32 RGB HWC, shrunk so its shorter side is at most ``shorter_side``."""
    image = getattr(skimage.data, name)()
    if isinstance(image, tuple):  # stereo pairs: keep the left view
        image = image[0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    image = image[..., :3].astype(np.float32)
    factor = shorter_side / min(image.shape[:2])
    if factor < 1:
        out_shape = (round(image.shape[0] * factor), round(image.shape[1] * factor))
        image = skimage.transform.resize(image, out_shape, anti_aliasing=True, preserve_range=True)
    return image.astype(np.float32)


def render_background(spec: SyntheticSpec, name: str, rng: np.random.Generator) -> np.ndarray:
    """A slowly panning crop of a background image with brightness jitter: float32 THWC in 0..255."""
    velocity = np.zeros(2)
    if spec.pan_speed > 0:
        angle = rng.uniform(0, 2 * np.pi)
        speed = spec.pan_speed * rng.uniform(*PAN_SPEED_FRACTION_RANGE)
        velocity = speed * np.array([np.sin(angle), np.cos(angle)])  # (dy, dx) per frame
    travel = np.abs(velocity) * (spec.frames - 1)
    canvas_h = spec.height + int(np.ceil(travel[0])) + 1
    canvas_w = spec.width + int(np.ceil(travel[1])) + 1

    if name.startswith(GENERATED_PREFIX):
        pool = int(name[len(GENERATED_PREFIX):])
        canvas = generated_canvas(pool / spec.num_classes, canvas_h, canvas_w, rng)
    else:
        canvas = _image_canvas(spec, name, canvas_h, canvas_w, rng)
    if rng.random() < MIRROR_PROBABILITY:
        canvas = canvas[:, ::-1]
    canvas = canvas * rng.uniform(*BACKGROUND_GAIN_RANGE) + rng.uniform(*BACKGROUND_BIAS_RANGE)

    start = np.where(velocity < 0, travel, 0.0)
    frames = np.empty((spec.frames, spec.height, spec.width, 3), np.float32)
    for t in range(spec.frames):
        frames[t] = _subpixel_crop(canvas, start + velocity * t, spec.height, spec.width)
    return frames


def _image_canvas(spec: SyntheticSpec, name: str, canvas_h: int, canvas_w: int,
                  rng: np.random.Generator) -> np.ndarray:
    """A random crop of a shipped image, resized to the canvas: float32 HWC in 0..255."""
    image = _working_background(name, WORKING_IMAGE_FRAME_RATIO * max(spec.width, spec.height))
    largest = min(image.shape[0] / canvas_h, image.shape[1] / canvas_w)
    scale = largest * rng.uniform(*CROP_FRACTION_RANGE)
    crop_h = min(image.shape[0], max(1, round(canvas_h * scale)))
    crop_w = min(image.shape[1], max(1, round(canvas_w * scale)))
    top = int(rng.integers(0, image.shape[0] - crop_h + 1))
    left = int(rng.integers(0, image.shape[1] - crop_w + 1))
    crop = image[top:top + crop_h, left:left + crop_w]
    return skimage.transform.resize(crop, (canvas_h, canvas_w), anti_aliasing=scale > 1,
                                    preserve_range=True).astype(np.float32)


def _smooth_field(height: int, width: int, blob: float, rng: np.random.Generator) -> np.ndarray:
    """White noise on a coarse grid, upsampled bicubically and rescaled to 0..1: blobs about
    ``blob`` pixels across."""
    coarse = rng.standard_normal((max(2, round(height / blob)) + 1, max(2, round(width / blob)) + 1))
    field = skimage.transform.resize(coarse, (height, width), order=3, mode="reflect")
    return (field - field.min()) / max(float(np.ptp(field)), FIELD_RANGE_FLOOR)


def generated_canvas(hue: float, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A new smooth colour texture around ``hue`` (fraction of the wheel): float32 HWC in 0..255."""
    blob = rng.uniform(*GENERATED_BLOB_FRACTION) * min(height, width)
    centre = hue + rng.uniform(-GENERATED_HUE_JITTER, GENERATED_HUE_JITTER)
    h = (centre + GENERATED_HUE_SPREAD * (_smooth_field(height, width, blob, rng) - 0.5)) % 1.0
    s = GENERATED_SATURATION[0] + np.ptp(GENERATED_SATURATION) * _smooth_field(height, width, blob, rng)
    detail = GENERATED_DETAIL * (_smooth_field(height, width, max(1.0, blob / GENERATED_DETAIL_BLOB_DIVISOR), rng) - 0.5)
    v = np.clip(GENERATED_VALUE[0] + np.ptp(GENERATED_VALUE) * _smooth_field(height, width, blob, rng) + detail,
                0.0, 1.0)
    rgb = skimage.color.hsv2rgb(np.stack([h, s, v], axis=-1))
    return (rgb * PIXEL_MAX).astype(np.float32)


def _subpixel_crop(canvas: np.ndarray, offset: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinearly interpolated ``height x width`` window of an HWC canvas at a fractional (y, x) offset."""
    offset = np.maximum(offset, 0.0)  # guards against -1e-16 from the last step of a leftward pan
    y0, x0 = (int(v) for v in np.floor(offset))
    fy, fx = offset - np.floor(offset)
    window = canvas[y0:y0 + height + 1, x0:x0 + width + 1]
    top = window[:height, :width] * (1 - fx) + window[:height, 1:width + 1] * fx
    bottom = window[1:height + 1, :width] * (1 - fx) + window[1:height + 1, 1:width + 1] * fx
    return top * (1 - fy) + bottom * fy


def motion_trajectory(motion: str, spec: SyntheticSpec, radius: float,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Object centre (x, y) and scale per frame for a motion; ``radius`` bounds the object at scale 1.

    The whole object stays inside the frame in every frame.
    """
    t = np.arange(spec.frames, dtype=np.float64)
    last = spec.frames - 1
    width, height = spec.width, spec.height
    scale = np.ones_like(t)
    if motion == "pulse":
        amplitude = rng.uniform(*PULSE_AMPLITUDE_RANGE)
        period = rng.uniform(*PULSE_PERIOD_RANGE)
        scale = 1 + amplitude * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi))
    margin = radius * scale.max() + 1
    free_x, free_y = width - 2 * margin, height - 2 * margin
    if min(free_x, free_y) <= 0:
        raise ValueError(f"object of radius {radius:.1f} does not fit a {width}x{height} frame")

    def linear(free: float, sign: float, travel_range=LINEAR_TRAVEL_RANGE) -> np.ndarray:
        travel = rng.uniform(*travel_range) * free
        start = margin + rng.uniform(0, free - travel)
        path = start + travel * t / last
        return path if sign > 0 else 2 * margin + free - path

    def anywhere(free: float) -> np.ndarray:
        return np.full_like(t, margin + rng.uniform(0, free))

    if motion in ("right", "left"):
        x, y = linear(free_x, 1 if motion == "right" else -1), anywhere(free_y)
    elif motion in ("down", "up"):
        x, y = anywhere(free_x), linear(free_y, 1 if motion == "down" else -1)
    elif motion in ("circle_cw", "circle_ccw"):
        r = rng.uniform(*CIRCLE_RADIUS_RANGE) * min(free_x, free_y) / 2
        cx = margin + r + rng.uniform(0, free_x - 2 * r)
        cy = margin + r + rng.uniform(0, free_y - 2 * r)
        direction = 1 if motion == "circle_cw" else -1  # image y points down: +angle is clockwise
        angle = rng.uniform(0, 2 * np.pi) + direction * 2 * np.pi * t / rng.uniform(*CIRCLE_PERIOD_RANGE)
        x, y = cx + r * np.cos(angle), cy + r * np.sin(angle)
    elif motion == "zigzag":
        x = linear(free_x, rng.choice([-1, 1]), ZIGZAG_TRAVEL_RANGE)
        amplitude = rng.uniform(*ZIGZAG_AMPLITUDE_RANGE) * free_y / 2
        centre = margin + amplitude + rng.uniform(0, free_y - 2 * amplitude)
        phase = t / rng.uniform(*ZIGZAG_PERIOD_RANGE) + rng.uniform()
        triangle = 4 * np.abs(phase - np.floor(phase + 0.5)) - 1  # in [-1, 1]
        y = centre + amplitude * triangle
    elif motion == "pulse":
        x, y = anywhere(free_x), anywhere(free_y)
    else:
        raise ValueError(f"unknown motion {motion!r}; allowed: {MOTIONS}")
    return x, y, scale


def _random_colour(rng: np.random.Generator, hue: float, value_range) -> np.ndarray:
    rgb = colorsys.hsv_to_rgb(hue % 1.0, rng.uniform(*SATURATION_RANGE), rng.uniform(*value_range))
    return np.array(rgb, np.float32) * PIXEL_MAX


@dataclass(frozen=True)
class ObjectLook:
    """What an object looks like, apart from its size and motion."""

    shape: str
    texture: str
    rotation: float
    first: np.ndarray          # RGB 0..255
    second: np.ndarray
    period: float              # texture period, fraction of the object's diameter
    stripe_angle: float
    minor_aspect: float        # ellipses: minor / major axis; 1 otherwise


def draw_look(spec: SyntheticSpec, rng: np.random.Generator) -> ObjectLook:
    """A random look per video (palette 0), or one of spec.palette fixed looks picked with ``rng``."""
    look = rng
    if spec.palette > 0:
        look = np.random.default_rng([spec.seed, PALETTE_STREAM, int(rng.integers(spec.palette))])
    shape = SHAPES[look.integers(len(SHAPES))]
    texture = TEXTURES[look.integers(len(TEXTURES))]
    rotation = look.uniform(0, np.pi)
    hue = look.uniform()
    first = _random_colour(look, hue, VALUE_RANGE)
    second = _random_colour(look, hue + look.uniform(*SECOND_HUE_OFFSET_RANGE), SECOND_VALUE_RANGE)
    period = look.uniform(*TEXTURE_PERIOD_RANGE)
    stripe_angle = look.uniform(0, np.pi)
    minor_aspect = look.uniform(*ELLIPSE_ASPECT_RANGE) if shape == "ellipse" else 1.0
    return ObjectLook(shape, texture, rotation, first, second, period, stripe_angle, minor_aspect)


def render_object(spec: SyntheticSpec, motion: str, rng: np.random.Generator):
    """Render the moving object: colour (THWC float32), alpha (THW float32), boxes (T x 4 int)."""
    diameter = rng.uniform(*spec.object_size) * min(spec.width, spec.height)
    radius = diameter / 2
    cx, cy, scale = motion_trajectory(motion, spec, radius, rng)
    look = draw_look(spec, rng)
    shape, texture, rotation, first, second = look.shape, look.texture, look.rotation, look.first, look.second
    period, stripe_angle = look.period * diameter, look.stripe_angle

    ys, xs = np.mgrid[0:spec.height, 0:spec.width].astype(np.float32)
    s = scale[:, None, None].astype(np.float32)
    dx = xs[None] - cx[:, None, None].astype(np.float32)
    dy = ys[None] - cy[:, None, None].astype(np.float32)
    # Object-local, unscaled coordinates: texture moves and scales with the object.
    u = (dx * np.cos(rotation) + dy * np.sin(rotation)) / s
    v = (-dx * np.sin(rotation) + dy * np.cos(rotation)) / s
    distance = np.sqrt(u * u + v * v)

    if shape == "disk":
        sdf = distance - radius
    elif shape == "ellipse":
        minor = radius * look.minor_aspect
        sdf = (np.sqrt((u / radius) ** 2 + (v / minor) ** 2) - 1) * minor
    else:  # box: a square inscribed in the bounding circle
        half = radius / np.sqrt(2)
        qx, qy = np.abs(u) - half, np.abs(v) - half
        sdf = np.hypot(np.maximum(qx, 0), np.maximum(qy, 0)) + np.minimum(np.maximum(qx, qy), 0)
    alpha = np.clip(0.5 - sdf * s, 0.0, 1.0)  # one-pixel anti-aliased edge

    if texture == "flat":
        mix = np.zeros_like(u)
    elif texture == "stripes":
        mix = (np.sin(2 * np.pi * (u * np.cos(stripe_angle) + v * np.sin(stripe_angle)) / period) > 0)
    elif texture == "checker":
        mix = (np.floor(u / period) + np.floor(v / period)) % 2
    else:
        mix = np.sin(2 * np.pi * distance / period) > 0
    mix = mix.astype(np.float32)[..., None]
    shading = 1 - SHADING_STRENGTH * np.clip(distance / radius, 0, 1) ** 2
    colour = (first * (1 - mix) + second * mix) * shading[..., None]
    return colour, alpha, _alpha_boxes(alpha)


def _alpha_boxes(alpha: np.ndarray) -> np.ndarray:
    """Per-frame [x0, y0, x1, y1] (x1, y1 exclusive) of pixels with alpha >= threshold; zeros if none."""
    mask = alpha >= ALPHA_BOX_THRESHOLD
    cols, rows = mask.any(axis=1), mask.any(axis=2)
    boxes = np.stack([
        cols.argmax(axis=1), rows.argmax(axis=1),
        cols.shape[1] - cols[:, ::-1].argmax(axis=1), rows.shape[1] - rows[:, ::-1].argmax(axis=1),
    ], axis=1)
    boxes[~cols.any(axis=1)] = 0
    return boxes.astype(np.int64)


def render_video(spec: SyntheticSpec, plan: VideoPlan) -> tuple[np.ndarray, np.ndarray]:
    """Render one planned video: frames (THWC uint8 RGB) and object boxes (T x 4)."""
    rng = np.random.default_rng([spec.seed, SPLITS.index(plan.split), plan.label, plan.index])
    background = render_background(spec, plan.background, rng)
    colour, alpha, boxes = render_object(spec, spec.motions[plan.label], rng)
    alpha = alpha[..., None]
    frames = background * (1 - alpha) + colour * alpha
    if spec.noise_std > 0:
        frames += spec.noise_std * rng.standard_normal(frames.shape, dtype=np.float32)
    return np.clip(np.rint(frames), 0, PIXEL_MAX).astype(np.uint8), boxes


def _write_planned_video(root: str, spec: SyntheticSpec, plan: VideoPlan) -> tuple[str, dict]:
    frames, boxes = render_video(spec, plan)
    relpath = plan.relpath(spec)
    path = Path(root) / relpath
    partial = path.with_name(f".partial-{path.name}")
    write_video(partial, frames, spec.fps, spec.codec, spec.gop)
    os.replace(partial, path)
    record = {
        "split": plan.split, "label": plan.label, "motion": spec.motions[plan.label],
        "pool": plan.pool, "background": plan.background, "boxes": boxes.tolist(),
    }
    return relpath, record


def _spec_record(spec: SyntheticSpec, complete: bool) -> dict:
    return {"generator_version": GENERATOR_VERSION, "complete": complete, "spec": spec.to_dict()}


class NotSyntheticError(ValueError):
    """A directory to generate into that holds files of the dataset's layout but no spec.json:
    data of another origin, which generating would overwrite."""


def _clear_previous(root: Path) -> None:
    """Remove a previous synthetic dataset's outputs; refuse to touch a directory that is not one."""
    ours = [VIDEOS_DIR, TRAIN_LIST, TEST_LIST, CLASS_NAMES_FILE, ANNOTATIONS_FILE]
    present = [name for name in ours if (root / name).exists()]
    if present and not (root / SPEC_FILE).exists():
        raise NotSyntheticError(
            f"{root} holds {present} but no {SPEC_FILE}: not a synthetic dataset, refusing to overwrite"
        )
    if (root / VIDEOS_DIR).exists():
        shutil.rmtree(root / VIDEOS_DIR)
    for name in ours[1:] + [SPEC_FILE]:
        (root / name).unlink(missing_ok=True)
    for cache in root.glob("*.index.json"):
        cache.unlink()


def generate_dataset(root: str | os.PathLike, spec: SyntheticSpec, workers: int | None = None) -> dict:
    """Write the dataset described by ``spec`` under ``root`` (layout in the module docstring).

    ``workers`` processes render and encode (default ``auto_workers()``); the output does not depend on it.

    Returns a summary: paths of the lists, class names, video counts, background pools, seconds taken.
    """
    started = time.perf_counter()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _clear_previous(root)
    (root / SPEC_FILE).write_text(json.dumps(_spec_record(spec, complete=False), indent=2))

    plans = plan_videos(spec)
    workers = auto_workers() if workers is None else workers
    if workers > 1:
        with process_pool(workers) as pool:
            results = list(pool.map(_write_planned_video, [str(root)] * len(plans),
                                    [spec] * len(plans), plans, chunksize=VIDEOS_PER_TASK))
    else:
        results = [_write_planned_video(str(root), spec, plan) for plan in plans]

    for split in SPLITS:
        write_file_list(root / LIST_FOR_SPLIT[split],
                        [(relpath, record["label"]) for relpath, record in results
                         if record["split"] == split])
    write_class_names(root / CLASS_NAMES_FILE, spec.motions)
    annotations = {
        "box_format": "x0 y0 x1 y1 in pixels, x1 and y1 exclusive, one box per frame",
        "pools": background_pools(spec),
        "videos": dict(results),
    }
    (root / ANNOTATIONS_FILE).write_text(json.dumps(annotations, separators=(",", ":")))
    (root / SPEC_FILE).write_text(json.dumps(_spec_record(spec, complete=True), indent=2))
    seconds = time.perf_counter() - started
    log.info("wrote %d synthetic videos to %s in %.1f s", len(plans), root, seconds)
    return _summary(root, spec, seconds, generated=True)


def _summary(root: Path, spec: SyntheticSpec, seconds: float, generated: bool) -> dict:
    return {
        "root": str(root),
        "train_list": str(root / TRAIN_LIST),
        "test_list": str(root / TEST_LIST),
        "class_names": list(spec.motions),
        "videos": {split: spec.videos_per_class(split) * spec.num_classes for split in SPLITS},
        "pools": background_pools(spec),
        "seconds": seconds,
        "generated": generated,
    }


def dataset_is_current(root: str | os.PathLike, spec: SyntheticSpec) -> bool:
    """True if ``root`` holds a complete dataset made from ``spec`` with every listed video present."""
    root = Path(root)
    try:
        record = json.loads((root / SPEC_FILE).read_text())
    except (OSError, ValueError):
        return False
    if record != _spec_record(spec, complete=True):
        return False
    try:
        entries: list[Entry] = [e for split in SPLITS for e in read_file_list(root / LIST_FOR_SPLIT[split])]
    except (OSError, ValueError):
        return False
    expected = sum(spec.videos_per_class(split) for split in SPLITS) * spec.num_classes
    return len(entries) == expected and all(os.path.isfile(e.path) for e in entries)


def ensure_dataset(root: str | os.PathLike, spec: SyntheticSpec, workers: int | None = None) -> dict:
    """Generate the dataset unless ``root`` already holds a complete one made from the same spec.

    Call it from one process only (rank 0) when several share the directory. A ``root`` holding
    files of the layout but no spec.json is refused (NotSyntheticError), never overwritten.
    """
    root = Path(root)
    if dataset_is_current(root, spec):
        return _summary(root, spec, seconds=0.0, generated=False)
    return generate_dataset(root, spec, workers=workers)


def load_annotations(root: str | os.PathLike) -> dict:
    """The annotations.json of a synthetic dataset (see module docstring)."""
    path = Path(root) / ANNOTATIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no synthetic annotations at {path}")
    return json.loads(path.read_text())


def load_boxes(root: str | os.PathLike, relpath: str) -> np.ndarray:
    """Per-frame object boxes (T x 4 int64, [x0, y0, x1, y1]) of one video, by its path relative to root."""
    videos = load_annotations(root)["videos"]
    if relpath not in videos:
        raise KeyError(f"{relpath!r} is not in {Path(root) / ANNOTATIONS_FILE}")
    return np.asarray(videos[relpath]["boxes"], dtype=np.int64)
