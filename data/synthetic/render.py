"""Rendering one planned synthetic video: a slowly panned background (a crop of a shipped
image or a generated colour texture) with sensor noise, and a textured object moving by its
class's motion pattern. Frames are THWC (uint8 RGB once rendered, float32 while composed)."""

from __future__ import annotations

import colorsys
import dataclasses
from dataclasses import dataclass
from functools import cache

import numpy as np
import skimage.color
import skimage.data
import skimage.transform

from data.spec import MOTIONS, SyntheticSpec
from data.synthetic.plan import SPLITS, VideoPlan
from data.synthetic.ranges import (
    ALPHA_BOX_THRESHOLD,
    BACKGROUND_BIAS_RANGE,
    BACKGROUND_GAIN_RANGE,
    CIRCLE_PERIOD_RANGE,
    CIRCLE_RADIUS_RANGE,
    CROP_FRACTION_RANGE,
    ELLIPSE_ASPECT_RANGE,
    FIELD_RANGE_FLOOR,
    GENERATED_BLOB_FRACTION,
    GENERATED_DETAIL,
    GENERATED_DETAIL_BLOB_DIVISOR,
    GENERATED_HUE_JITTER,
    GENERATED_HUE_SPREAD,
    GENERATED_PREFIX,
    GENERATED_SATURATION,
    GENERATED_VALUE,
    LINEAR_TRAVEL_RANGE,
    MIRROR_PROBABILITY,
    PALETTE_STREAM,
    PAN_SPEED_FRACTION_RANGE,
    PIXEL_MAX,
    PULSE_AMPLITUDE_RANGE,
    PULSE_PERIOD_RANGE,
    SATURATION_RANGE,
    SECOND_HUE_OFFSET_RANGE,
    SECOND_VALUE_RANGE,
    SHADING_STRENGTH,
    SHAPES,
    TEXTURE_PERIOD_RANGE,
    TEXTURES,
    VALUE_RANGE,
    WORKING_IMAGE_FRAME_RATIO,
    ZIGZAG_AMPLITUDE_RANGE,
    ZIGZAG_PERIOD_RANGE,
    ZIGZAG_TRAVEL_RANGE,
)


@cache
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
    detail_blob = max(1.0, blob / GENERATED_DETAIL_BLOB_DIVISOR)
    detail = GENERATED_DETAIL * (_smooth_field(height, width, detail_blob, rng) - 0.5)
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
    """Render one planned video: frames (THWC uint8 RGB, ``plan.frames`` of them) and object boxes (T x 4)."""
    if plan.frames != spec.frames:
        spec = dataclasses.replace(spec, frames=plan.frames, length_spread=0)
    rng = np.random.default_rng([spec.seed, SPLITS.index(plan.split), plan.label, plan.index])
    background = render_background(spec, plan.background, rng)
    colour, alpha, boxes = render_object(spec, spec.motions[plan.label], rng)
    alpha = alpha[..., None]
    frames = background * (1 - alpha) + colour * alpha
    if spec.noise_std > 0:
        frames += spec.noise_std * rng.standard_normal(frames.shape, dtype=np.float32)
    return np.clip(np.rint(frames), 0, PIXEL_MAX).astype(np.uint8), boxes

