"""FameConfig: every knob of the FAME augmentation, with the published values as defaults.

Each field's rule is its type hint and range (fame.fields); the config schema
(engine.config) holds this class itself as its ``fame`` section.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Literal

from fame.fields import SettingError, bounded, check_fields, derived, fraction

AUTO_BETA = "auto"
NO_FAME = "none"    # variant or background meaning "no merging"


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
    background: "inter" (another clip of the batch), "intra" (a clip of the same
        video at another timestamp, passed to augment()) or "none" (no merging: the
        baseline; ``merges`` is False and the pipeline has no FAME stage).
    pick: how inter-video backgrounds are drawn: "derangement" (no clip keeps its own
        background) or the published "permutation".
    background_fill: beyond the paper: "none" (published) pastes the foreground onto the
        whole frame of the other clip, whose own actor stays in it; "median" first fills the
        other clip's own foreground (its mask) with that clip's temporal median frame, so
        the merged clip shows one actor, not two (small actors: docs/exploration.md).
        Inter-video backgrounds only.
    branches: "one" (FAME on the query view only, published) or "both"; read by the
        pipeline, which calls augment() once per view it applies FAME to.
    share: beyond the paper, the probability that a clip is merged (drawn per clip and
        step); the others keep their own background (an all-ones mask). 1 (published)
        merges every clip. Below 1 the pretext keeps pairs the encoder can solve from the
        start; against FAME's embedding collapse on small actors it did not help
        (docs/exploration.md).
    fg_fraction / bg_fraction: fractions of pixels with the highest / lowest seed value
        sampled for the foreground / background colour histograms.
    bins: colour bins per axis (bins**3 in all); laplace: added to every background bin.
    blur_size_fraction / blur_sigma_fraction: Gaussian blur kernel size
        k = int(blur_size_fraction * crop) // 2 * 2 + 1 and sigma = k * blur_sigma_fraction.
    beta_min / beta_max / otsu_bins: clamp and histogram resolution of beta="auto".
    camera_compensation: "none", "median" (subtract each frame pair's median difference)
        or "phase" (align each frame pair by a phase-correlation shift before differencing).
    grid_cells / grid_keep: the grid variant's cells per side and cells kept.
    gauss_sigma: standard deviation of the gauss variant, as a fraction of the frame
        height and width. With a fixed beta the binary mask is the centred ellipse holding
        int(beta*H*W) pixels whatever the sigma; the sigma matters with beta="auto".
    beta_warmup_epochs: beyond the paper, a warm-up of the foreground fraction over
        this many epochs: at training step s < beta_warmup_steps the step's config
        (``at_step``) has beta = 1 - (1 - beta) * s / beta_warmup_steps, from 1 (nothing
        merged) down to beta; 0 (default) uses beta from the first step. Needs a numeric beta.
    steps_per_epoch: derived, not a config key: the training steps of one epoch, set by
        the loader that knows them (``for_steps_per_epoch``); beta_warmup_steps is
        round(beta_warmup_epochs * steps_per_epoch), so 0 (default) means no warm-up.
    """

    beta: float | Literal["auto"] = fraction(0.5)
    variant: Literal["fame", "seed", "grid", "gauss", "none"] = "fame"
    hue: Literal["published", "angle"] = "published"
    background: Literal["inter", "intra", "none"] = "inter"
    pick: Literal["derangement", "permutation"] = "derangement"
    background_fill: Literal["none", "median"] = "none"
    branches: Literal["one", "both"] = "one"
    share: float = fraction(1.0)
    fg_fraction: float = fraction(0.5)
    bg_fraction: float = fraction(0.1)
    bins: int = field(default=10, metadata=bounded(2))
    laplace: float = field(default=1.0, metadata=bounded(0.0))
    blur_size_fraction: float = field(default=0.1, metadata=bounded(0.0))
    blur_sigma_fraction: float = field(default=1.0 / 3.0, metadata=bounded(0.0, lo_open=True))
    beta_min: float = fraction(0.3)
    beta_max: float = fraction(0.7)
    otsu_bins: int = field(default=256, metadata=bounded(2))
    camera_compensation: Literal["none", "median", "phase"] = "none"
    grid_cells: int = field(default=4, metadata=bounded(1))
    grid_keep: int = field(default=8, metadata=bounded(0))
    gauss_sigma: float = field(default=0.25, metadata=bounded(0.0, lo_open=True))
    beta_warmup_epochs: float = field(default=0.0, metadata=bounded(0.0))
    steps_per_epoch: int = field(default=0, metadata=derived(bounded(0)))

    def __post_init__(self) -> None:
        check_fields(self)
        name = type(self).__name__
        if self.beta_min > self.beta_max:
            raise SettingError(name, "beta_min",
                               f"beta_min must not exceed beta_max, got {self.beta_min} > {self.beta_max}")
        if self.grid_keep > self.grid_cells**2:
            raise SettingError(name, "grid_keep", f"{self.grid_keep} exceeds grid_cells**2 = {self.grid_cells**2}")
        if self.background_fill != NO_FAME and self.background != "inter":
            raise SettingError(name, "background_fill",
                               f"{self.background_fill!r} needs background 'inter', got {self.background!r}")
        if self.beta_warmup_epochs and self.beta == AUTO_BETA:
            raise SettingError(name, "beta_warmup_epochs",
                               f"must be 0 with beta={AUTO_BETA!r} (the warm-up needs a numeric beta)")

    @property
    def merges(self) -> bool:
        """False when variant or background is "none": no merging, no FAME stage."""
        return NO_FAME not in (self.variant, self.background)

    @property
    def beta_warmup_steps(self) -> int:
        """The warm-up in training steps: beta_warmup_epochs of steps_per_epoch steps."""
        return round(self.beta_warmup_epochs * self.steps_per_epoch)

    def for_steps_per_epoch(self, steps_per_epoch: int) -> FameConfig:
        """This config for a training run of ``steps_per_epoch`` steps an epoch (sizes the warm-up)."""
        return replace(self, steps_per_epoch=steps_per_epoch)

    def at_step(self, step: int) -> FameConfig:
        """The config of training step ``step`` (0-based): beta warmed up per beta_warmup_steps."""
        warmup = self.beta_warmup_steps
        if step >= warmup:
            return self
        return replace(self, beta=1.0 - (1.0 - self.beta) * max(step, 0) / warmup)

    @classmethod
    def from_options(cls, **options: object) -> FameConfig:
        """Build a config from keyword options, naming the valid fields on an unknown one."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown FameConfig option(s) {unknown}; valid: {sorted(known)}")
        return cls(**options)
