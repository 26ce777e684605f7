"""Colour quantisation of the time-mean frame (the colour statistics of the paper, Sec. 3.2).

HSV as in kornia.color.rgb_to_hsv (v = max, s = (max - min) / (v + eps), hue in turns of the
usual hexcone formula); each pixel maps to bins**3 cells through
x = (s cos a + 1) / 2, y = (s sin a + 1) / 2 and v, each scaled by bins - 1 and rounded.
The angle a is hue_radians * 2 * pi for hue="published" (the published code scaled the angle
twice) and hue_radians for hue="angle". Rounding follows the published code, which rounded
z * (bins - 1) + 1 half to even (torch.round) and used that 1-based level: an exact tie such
as z * 9 = 4.5 therefore goes to the odd neighbour (5), not to 4 as rint(4.5) would.
"""

from __future__ import annotations

import math

from fame.arrays import array_module

HSV_EPS = 1e-8
HUE_SECTORS = 6.0
GREEN_OFFSET = 2.0
BLUE_OFFSET = 4.0


def _choose(flag, if_true, if_false):
    """Exact select for finite floats and flag in {0., 1.}: x * 1 + y * 0 == x.

    NumPy's where() is several times slower than this arithmetic on float32 planes.
    """
    return if_true * flag + if_false * (1 - flag)


def hue_saturation_value(frame):
    """(..., 3) float RGB in [0, 1] -> hue in turns [0, 1), saturation, value (each (...))."""
    xp = array_module(frame)
    dtype = frame.dtype
    planes = xp.ascontiguousarray(xp.moveaxis(frame, -1, 0))  # contiguous planes run faster than strided channels
    red, green, blue = planes[0], planes[1], planes[2]
    value = xp.maximum(xp.maximum(red, green), blue)
    chroma = value - xp.minimum(xp.minimum(red, green), blue)
    saturation = chroma / (value + dtype.type(HSV_EPS))
    red_max = (value == red).astype(dtype)
    green_max = (value == green).astype(dtype)
    # Hexcone sector: (g - b) / c where red is the maximum, else 2 + (b - r) / c where green is, else 4 + (r - g) / c.
    numerator = _choose(red_max, green - blue, _choose(green_max, blue - red, red - green))
    offset = (1 - red_max) * (BLUE_OFFSET - (BLUE_OFFSET - GREEN_OFFSET) * green_max)
    safe_chroma = chroma + (chroma == 0)
    hue = (offset + numerator / safe_chroma) / dtype.type(HUE_SECTORS)
    hue += hue < 0  # hue modulo one turn; the sector lies in [-1, 5]
    return hue, saturation, value


def colour_bins(frame, bins: int = 10, hue: str = "published"):
    """(B, H, W, 3) float RGB in [0, 1] -> (B, H, W) int32 bin index in [0, bins**3)."""
    xp = array_module(frame)
    hue_turns, saturation, value = hue_saturation_value(frame)
    angle = hue_turns * frame.dtype.type(2 * math.pi)
    if hue == "published":
        angle *= frame.dtype.type(2 * math.pi)
    elif hue != "angle":
        raise ValueError(f"hue must be 'published' or 'angle'; got {hue!r}")
    half = frame.dtype.type(0.5)
    x = _level((saturation * xp.cos(angle) + 1) * half, bins)
    y = _level((saturation * xp.sin(angle) + 1) * half, bins)
    return (x * bins + y) * bins + _level(value, bins)


def _level(fraction, bins: int):
    """Quantise values in [0, 1] to 0 .. bins - 1 the published way: round(z * (bins - 1) + 1) - 1."""
    xp = array_module(fraction)
    one = fraction.dtype.type(1)
    return xp.rint(fraction * fraction.dtype.type(bins - 1) + one).astype(xp.int32) - 1
