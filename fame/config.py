"""FameConfig: every knob of the FAME augmentation, with the published values as defaults."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from numbers import Integral, Real

VARIANTS = ("fame", "seed", "grid", "gauss", "none")
HUE_ENCODINGS = ("published", "angle")
BACKGROUND_SOURCES = ("inter", "intra")
PICK_MODES = ("derangement", "permutation")
BRANCHES = ("one", "both")
CAMERA_COMPENSATIONS = (False, "median", "phase")
AUTO_BETA = "auto"


def _fail(name: str, allowed: str, value: object) -> None:
    raise ValueError(f"FameConfig.{name} must be {allowed}; got {value!r}")


def _check_choice(name: str, value: object, allowed: tuple) -> None:
    # `value in allowed` would accept 0 for False and 1.0 for True, so compare types too.
    if not any(type(value) is type(choice) and value == choice for choice in allowed):
        _fail(name, f"one of {allowed}", value)


def _is_real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _is_int(value: object) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _check_unit_interval(name: str, value: object) -> None:
    if not _is_real(value) or not 0.0 <= value <= 1.0:
        _fail(name, "a number in [0, 1]", value)


@dataclass(frozen=True)
class FameConfig:
    """Settings of the foreground mask and the merge (paper Sec. 3.2 and its published code).

    beta: foreground fraction in [0, 1] (top-int(beta*H*W) pixels kept), or "auto"
        for a per-clip Otsu threshold on the soft mask clamped to [beta_min, beta_max].
    variant: "fame" (colour propagation of the seed), "seed" (top-beta of the seed
        region), "grid" (keep the grid_keep cells of a grid_cells x grid_cells grid with
        the largest seed sum; ignores beta), "gauss" (top-beta of a centred 2-D
        Gaussian), "none" (no merging; an all-ones mask).
    hue: "published" uses the angle hue_radians * 2 * pi as the published code did;
        "angle" uses hue_radians.
    background: "inter" (another clip of the batch) or "intra" (a clip of the same
        video at another timestamp, passed to augment()).
    pick: how inter-video backgrounds are drawn: "derangement" (no clip keeps its own
        background) or the published "permutation".
    branches: "one" (FAME on the query view only, published) or "both"; read by the
        pipeline, which calls augment() once per view it applies FAME to.
    fg_fraction / bg_fraction: fractions of pixels with the highest / lowest seed value
        sampled for the foreground / background colour histograms.
    bins: colour bins per axis (bins**3 in all); laplace: added to every background bin.
    blur_size_fraction / blur_sigma_fraction: Gaussian blur kernel size
        k = int(blur_size_fraction * crop) // 2 * 2 + 1 and sigma = k * blur_sigma_fraction.
    beta_min / beta_max / otsu_bins: clamp and histogram resolution of beta="auto".
    camera_compensation: False, "median" (subtract each frame pair's median difference)
        or "phase" (align each frame pair by a phase-correlation shift before differencing).
    grid_cells / grid_keep: the grid variant's cells per side and cells kept.
    gauss_sigma: standard deviation of the gauss variant, as a fraction of the frame
        height and width. With a fixed beta the binary mask is the centred ellipse holding
        int(beta*H*W) pixels whatever the sigma; the sigma matters with beta="auto".
    beta_warmup_steps: beyond the paper, a warm-up of the foreground fraction: at
        training step s < beta_warmup_steps the step's config (``at_step``) has
        beta = 1 - (1 - beta) * s / beta_warmup_steps, from 1 (nothing merged) down to
        beta; 0 (default) uses beta from the first step. Needs a numeric beta.
    """

    beta: float | str = 0.5
    variant: str = "fame"
    hue: str = "published"
    background: str = "inter"
    pick: str = "derangement"
    branches: str = "one"
    fg_fraction: float = 0.5
    bg_fraction: float = 0.1
    bins: int = 10
    laplace: float = 1.0
    blur_size_fraction: float = 0.1
    blur_sigma_fraction: float = 1.0 / 3.0
    beta_min: float = 0.3
    beta_max: float = 0.7
    otsu_bins: int = 256
    camera_compensation: bool | str = False
    grid_cells: int = 4
    grid_keep: int = 8
    gauss_sigma: float = 0.25
    beta_warmup_steps: int = 0

    def __post_init__(self) -> None:
        if self.beta != AUTO_BETA and not (_is_real(self.beta) and 0.0 <= self.beta <= 1.0):
            _fail("beta", f"a number in [0, 1] or {AUTO_BETA!r}", self.beta)
        _check_choice("variant", self.variant, VARIANTS)
        _check_choice("hue", self.hue, HUE_ENCODINGS)
        _check_choice("background", self.background, BACKGROUND_SOURCES)
        _check_choice("pick", self.pick, PICK_MODES)
        _check_choice("branches", self.branches, BRANCHES)
        _check_choice("camera_compensation", self.camera_compensation, CAMERA_COMPENSATIONS)
        for name in ("fg_fraction", "bg_fraction", "beta_min", "beta_max"):
            _check_unit_interval(name, getattr(self, name))
        if self.beta_min > self.beta_max:
            _fail("beta_min", f"<= beta_max ({self.beta_max})", self.beta_min)
        if not _is_int(self.bins) or self.bins < 2:
            _fail("bins", "an integer >= 2", self.bins)
        if not _is_int(self.otsu_bins) or self.otsu_bins < 2:
            _fail("otsu_bins", "an integer >= 2", self.otsu_bins)
        if not _is_real(self.laplace) or self.laplace < 0:
            _fail("laplace", "a number >= 0", self.laplace)
        if not _is_real(self.blur_size_fraction) or self.blur_size_fraction < 0:
            _fail("blur_size_fraction", "a number >= 0", self.blur_size_fraction)
        if not _is_real(self.blur_sigma_fraction) or self.blur_sigma_fraction <= 0:
            _fail("blur_sigma_fraction", "a number > 0", self.blur_sigma_fraction)
        if not _is_int(self.grid_cells) or self.grid_cells < 1:
            _fail("grid_cells", "an integer >= 1", self.grid_cells)
        if not _is_int(self.grid_keep) or not 0 <= self.grid_keep <= self.grid_cells**2:
            _fail("grid_keep", f"an integer in [0, grid_cells**2 = {self.grid_cells**2}]", self.grid_keep)
        if not _is_real(self.gauss_sigma) or self.gauss_sigma <= 0:
            _fail("gauss_sigma", "a number > 0", self.gauss_sigma)
        if not _is_int(self.beta_warmup_steps) or self.beta_warmup_steps < 0:
            _fail("beta_warmup_steps", "an integer >= 0", self.beta_warmup_steps)
        if self.beta_warmup_steps and self.beta == AUTO_BETA:
            _fail("beta_warmup_steps", f"0 with beta={AUTO_BETA!r} (the warm-up needs a numeric beta)",
                  self.beta_warmup_steps)

    def at_step(self, step: int) -> "FameConfig":
        """The config of training step ``step`` (0-based): beta warmed up per beta_warmup_steps."""
        if step >= self.beta_warmup_steps:
            return self
        return replace(self, beta=1.0 - (1.0 - self.beta) * max(step, 0) / self.beta_warmup_steps)

    @classmethod
    def from_options(cls, **options: object) -> "FameConfig":
        """Build a config from keyword options, naming the valid fields on an unknown one."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown FameConfig option(s) {unknown}; valid: {sorted(known)}")
        return cls(**options)
