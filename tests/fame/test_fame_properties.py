"""Properties of masks, merges, background picks and the batch augmentation (NumPy)."""

from __future__ import annotations

import colorsys
import itertools
import math
import subprocess
import sys
from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import numpy as np
import pytest
from fame_testing import iou, with_static_patches_outside_the_unit_range

import fame
from fame.colour import hue_saturation_value
from fame.mask import blur_kernel, masks_from_config, soft_mask
from fame.motion import frame_statistics
from fame.select import otsu_fraction, top_k_mask


def random_clips(batch=3, frames=4, height=24, width=20, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    clips = rng.integers(0, 256, size=(batch, frames, height, width, 3), dtype=np.uint8)
    return clips if dtype == np.uint8 else (clips / 255).astype(dtype)


# ---------------------------------------------------------------- mask counts and layout


@pytest.mark.parametrize("variant", ["fame", "seed", "gauss"])
@pytest.mark.parametrize("beta", [0.0, 0.3, 0.5, 0.7, 1.0])
def test_mask_has_exactly_int_beta_hw_ones(variant, beta):
    clips = random_clips(height=24, width=20)
    masks = fame.foreground_mask(clips, beta=beta, variant=variant)
    assert masks.shape == (3, 24, 20) and masks.dtype == np.uint8
    assert set(np.unique(masks)) <= {0, 1}
    assert (masks.sum(axis=(1, 2)) == int(beta * 24 * 20)).all()


def test_mask_count_at_published_sizes(natural_112):
    clips, _ = natural_112
    assert (fame.foreground_mask(clips, beta=0.3).sum(axis=(1, 2)) == int(0.3 * 112 * 112)).all()


@pytest.mark.parametrize(
    "shape, dtype",
    [
        ((2, 4, 8, 8), np.uint8),  # no channel axis
        ((2, 3, 4, 8, 8), np.uint8),  # NCTHW instead of NTHWC
        ((2, 4, 8, 8, 4), np.uint8),  # RGBA
        ((4, 8, 8, 3), np.uint8),  # a single clip without the batch axis
        ((2, 1, 8, 8, 3), np.uint8),  # one frame: no difference
        ((2, 4, 8, 8, 3), np.int32),  # neither uint8 nor float
    ],
)
def test_wrong_layout_raises_a_clear_error(shape, dtype):
    clips = np.zeros(shape, dtype=dtype)
    with pytest.raises(ValueError, match=r"clips"):
        fame.foreground_mask(clips)
    with pytest.raises(ValueError, match=r"clips"):
        fame.augment(clips, fame.FameConfig(), np.random.default_rng(0))


def test_error_names_the_shape():
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 8, 8\)"):
        fame.foreground_mask(np.zeros((2, 3, 4, 8, 8), dtype=np.uint8))


def test_read_only_strided_views_give_the_same_result(natural_112):
    clips, _ = natural_112
    channels_first = np.ascontiguousarray(np.moveaxis(clips, -1, 1))  # NCTHW storage
    view = np.moveaxis(channels_first, 1, -1)  # NTHWC view, not contiguous
    view.setflags(write=False)
    expected = fame.augment(clips, fame.FameConfig(), np.random.default_rng(0))
    got = fame.augment(view, fame.FameConfig(), np.random.default_rng(0))
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


# ---------------------------------------------------------------- degenerate clips


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("kind", ["static", "constant", "black"])
def test_static_and_constant_clips_give_valid_masks(kind, dtype):
    clips = random_clips(batch=2, frames=5, height=16, width=16, dtype=dtype)
    if kind == "static":
        clips[:] = clips[:, :1]
    elif kind == "constant":
        clips[:] = clips[:, :1, :1, :1]
    else:
        clips[:] = 0
    cfg = fame.FameConfig()
    soft = soft_mask(clips, cfg)
    assert np.isfinite(soft).all()
    assert (fame.foreground_mask(clips).sum(axis=(1, 2)) == 128).all()
    batch, _, height, width, _ = clips.shape
    auto = fame.FameConfig(beta="auto")
    otsu = otsu_fraction(soft.reshape(batch, height * width), auto.otsu_bins)
    fractions = np.clip(otsu, auto.beta_min, auto.beta_max)
    auto_masks = fame.foreground_mask(clips, beta="auto")
    np.testing.assert_array_equal(auto_masks.sum(axis=(1, 2)), np.floor(fractions * height * width).astype(int))
    merged, masks = fame.augment(clips, cfg, np.random.default_rng(0))
    keep = masks.astype(bool)[:, None, :, :, None]
    np.testing.assert_array_equal(merged, np.where(keep, clips, clips[::-1]))  # a batch of 2 swaps its clips


def test_constant_scores_break_ties_by_lower_index():
    masks = fame.foreground_mask(np.full((1, 3, 4, 5, 3), 7, dtype=np.uint8), beta=0.5)
    assert masks.ravel().tolist() == [1] * 10 + [0] * 10


def test_single_clip_with_two_frames():
    clips = random_clips(batch=1, frames=2, height=12, width=12)
    merged, masks = fame.augment(clips, fame.FameConfig(), np.random.default_rng(0))
    assert masks.shape == (1, 12, 12) and masks.sum() == 72
    np.testing.assert_array_equal(merged, clips)  # its own background: nothing to swap


# ---------------------------------------------------------------- uint8 and float agree


def test_uint8_and_float_inputs_give_the_same_mask(natural_112):
    clips, _ = natural_112
    from_uint8 = fame.foreground_mask(clips)
    from_float = fame.foreground_mask((clips / 255).astype(np.float32))
    agreement = [(a == b).mean() for a, b in zip(from_uint8, from_float, strict=True)]
    assert min(agreement) >= 0.99 and np.mean(agreement) >= 0.995
    from_float64 = fame.foreground_mask(clips / 255.0)
    assert min((a == b).mean() for a, b in zip(from_uint8, from_float64, strict=True)) >= 0.99


@pytest.mark.parametrize("beta", [0.5, "auto"])
def test_float_colours_outside_the_unit_range_are_clipped(beta, natural_112):
    clips = with_static_patches_outside_the_unit_range(natural_112[0])
    clipped = np.clip(clips, 0, 1)
    cfg = fame.FameConfig(beta=beta)
    np.testing.assert_array_equal(soft_mask(clips, cfg), soft_mask(clipped, cfg))
    np.testing.assert_array_equal(fame.foreground_mask(clips, beta=beta), fame.foreground_mask(clipped, beta=beta))


def test_float16_clips_accumulate_in_float32():
    clips = random_clips(batch=2, frames=32, height=8, width=8, dtype=np.float16, seed=4)
    seed, mean = frame_statistics(clips)
    seed_32, mean_32 = frame_statistics(clips.astype(np.float32))
    assert seed.dtype == mean.dtype == np.float32
    np.testing.assert_allclose(seed, seed_32, rtol=1e-6)
    np.testing.assert_allclose(mean, mean_32, rtol=1e-6)


# ---------------------------------------------------------------- merge


@pytest.mark.parametrize("dtype", [np.uint8, np.float32, np.float64])
def test_merge_takes_foreground_where_mask_is_one_and_background_elsewhere(dtype):
    clips = random_clips(batch=4, frames=3, height=10, width=9, dtype=dtype, seed=1)
    masks = (np.random.default_rng(2).random((4, 10, 9)) < 0.4).astype(np.uint8)
    index = np.array([2, 0, 3, 1])
    merged = fame.merge(clips, masks, index)
    assert merged.dtype == clips.dtype and merged.shape == clips.shape and merged is not clips
    keep = masks.astype(bool)[:, None, :, :, None]
    expected = np.where(keep, clips, clips[index])
    np.testing.assert_array_equal(merged, expected)
    arithmetic = clips * masks[:, None, :, :, None] + clips[index] * (1 - masks[:, None, :, :, None])
    np.testing.assert_array_equal(merged.astype(np.float64), arithmetic.astype(np.float64))


def test_merge_with_intra_video_background_clips():
    clips = random_clips(batch=2, frames=3, height=8, width=8, seed=3)
    backgrounds = random_clips(batch=2, frames=3, height=8, width=8, seed=4)
    masks = np.zeros((2, 8, 8), dtype=np.uint8)
    masks[:, :4] = 1
    merged = fame.merge(clips, masks, backgrounds)
    np.testing.assert_array_equal(merged[:, :, :4], clips[:, :, :4])
    np.testing.assert_array_equal(merged[:, :, 4:], backgrounds[:, :, 4:])


def test_merge_rejects_bad_arguments():
    clips = random_clips(batch=2, frames=3, height=8, width=8)
    masks = np.ones((2, 8, 8), dtype=np.uint8)
    with pytest.raises(ValueError, match="masks"):
        fame.merge(clips, masks[:, :4], np.array([1, 0]))
    with pytest.raises(ValueError, match="indices"):
        fame.merge(clips, masks, np.array([0, 2]))
    with pytest.raises(ValueError, match="background clips"):
        fame.merge(clips, masks, clips.astype(np.float32))


# ---------------------------------------------------------------- background picks


def test_derangement_has_no_fixed_point():
    rng = np.random.default_rng(0)
    for n in range(2, 12):
        for _ in range(50):
            order = fame.pick_backgrounds(n, rng)
            assert sorted(order.tolist()) == list(range(n))
            assert not (order == np.arange(n)).any()


def test_derangement_is_uniform():
    draws = 9000
    rng = np.random.default_rng(1)
    counts = {}
    for _ in range(draws):
        key = tuple(fame.pick_backgrounds(4, rng).tolist())
        counts[key] = counts.get(key, 0) + 1
    derangements = [p for p in itertools.permutations(range(4)) if all(p[i] != i for i in range(4))]
    assert sorted(counts) == sorted(derangements)  # all 9, nothing else
    expected = draws / len(derangements)
    chi_square = sum((c - expected) ** 2 / expected for c in counts.values())
    assert chi_square < 26.1  # 99.9% quantile of chi-square with 8 degrees of freedom


def test_permutation_mode_allows_fixed_points_and_small_n():
    rng = np.random.default_rng(2)
    assert any((fame.pick_backgrounds(3, rng, "permutation") == np.arange(3)).any() for _ in range(100))
    assert fame.pick_backgrounds(1, rng).tolist() == [0]
    assert fame.pick_backgrounds(0, rng).tolist() == []
    with pytest.raises(ValueError, match="mode"):
        fame.pick_backgrounds(3, rng, "shuffle")


# ---------------------------------------------------------------- augment and variants


def test_augment_inter_video_merges_with_a_deranged_batch():
    clips = random_clips(batch=5, frames=3, height=12, width=12, seed=5)
    merged, masks = fame.augment(clips, fame.FameConfig(), np.random.default_rng(7))
    order = fame.pick_backgrounds(5, np.random.default_rng(7))
    np.testing.assert_array_equal(merged, fame.merge(clips, masks, order))
    changed = [(merged[b] != clips[b]).any() for b in range(5)]
    assert all(changed)


def test_augment_intra_video_needs_and_uses_background_clips():
    clips = random_clips(batch=2, frames=3, height=12, width=12, seed=6)
    backgrounds = random_clips(batch=2, frames=3, height=12, width=12, seed=8)
    cfg = fame.FameConfig(background="intra")
    with pytest.raises(ValueError, match="background_clips"):
        fame.augment(clips, cfg, np.random.default_rng(0))
    merged, masks = fame.augment(clips, cfg, np.random.default_rng(0), background_clips=backgrounds)
    np.testing.assert_array_equal(merged, fame.merge(clips, masks, backgrounds))


SQUARE, SQUARE_FRAMES, SQUARE_FRAME_SIDE = 3, 5, 16


def square_crossing_a_background(row: int, seed: int):
    """(1, T, H, W, 3) uint8: a white square moving its own side per frame along ``row`` over
    a fixed random background (so each pixel is covered in one frame at most), and that
    background (H, W, 3)."""
    side = SQUARE_FRAME_SIDE
    background = np.random.default_rng(seed).integers(0, 200, size=(side, side, 3), dtype=np.uint8)
    clip = np.repeat(background[None], SQUARE_FRAMES, axis=0)
    for t in range(SQUARE_FRAMES):
        clip[t, row:row + SQUARE, t * SQUARE:(t + 1) * SQUARE] = 255
    return clip[None], background


def has_white_pixels(frames) -> bool:
    return bool((frames == 255).all(axis=-1).any())


def test_clear_actors_fills_the_mask_with_the_temporal_median():
    clip, background = square_crossing_a_background(row=4, seed=0)
    masks = np.zeros((1, SQUARE_FRAME_SIDE, SQUARE_FRAME_SIDE), dtype=np.uint8)
    masks[0, 3:8, :] = 1   # the square's whole path, and background rows either side
    cleared = fame.clear_actors(clip, masks)
    assert cleared.dtype == clip.dtype and cleared.shape == clip.shape
    # In the mask every pixel is the background (the median of 5 frames, one of them the
    # square's); outside it the clip is untouched.
    np.testing.assert_array_equal(cleared[0, :, 3:8], np.broadcast_to(background[3:8], cleared[0, :, 3:8].shape))
    np.testing.assert_array_equal(cleared[0, :, :3], clip[0, :, :3])
    np.testing.assert_array_equal(cleared[0, :, 8:], clip[0, :, 8:])
    expected = np.where(masks.astype(bool)[:, None, :, :, None],
                        np.rint(np.median(clip.astype(np.float64), axis=1, keepdims=True)), clip)
    np.testing.assert_array_equal(cleared, expected.astype(np.uint8))
    with pytest.raises(ValueError, match="masks"):
        fame.clear_actors(clip, masks[:, :6])


def test_median_fill_leaves_one_actor_in_the_merged_clip():
    """Two clips, each a square crossing its own background: the published merge keeps the
    other clip's square; background_fill "median" shows its background there instead."""
    first, _ = square_crossing_a_background(row=1, seed=1)
    second, second_background = square_crossing_a_background(row=12, seed=2)
    clips = np.concatenate([first, second])
    cfg = fame.FameConfig(beta=0.25, variant="seed", background_fill="median")
    merged, masks = fame.augment(clips, cfg, np.random.default_rng(0))
    published, same_masks = fame.augment(clips, replace(cfg, background_fill="none"), np.random.default_rng(0))
    np.testing.assert_array_equal(masks, same_masks)
    np.testing.assert_array_equal(merged, fame.merge(clips, masks, fame.clear_actors(clips, masks)[[1, 0]]))
    second_path = slice(12, 12 + SQUARE)
    assert has_white_pixels(published[0, :, second_path])        # the published merge: two squares
    assert not has_white_pixels(merged[0, :, second_path])       # with the fill: one
    np.testing.assert_array_equal(merged[0, :, second_path],
                                  np.broadcast_to(second_background[second_path], merged[0, :, second_path].shape))


def test_median_fill_needs_inter_video_backgrounds():
    with pytest.raises(fame.fields.SettingError, match="background_fill"):
        fame.FameConfig(background="intra", background_fill="median")


@pytest.mark.parametrize("setting", [{"variant": "none"}, {"background": "none"}])
def test_no_merging_returns_the_clips_and_an_all_ones_mask(setting):
    clips = random_clips()
    merged, masks = fame.augment(clips, fame.FameConfig(**setting), np.random.default_rng(0))
    assert merged is clips and masks.dtype == np.uint8 and masks.all()


def test_grid_keeps_whole_cells_with_the_most_motion():
    clips = np.zeros((1, 3, 16, 16, 3), dtype=np.uint8)
    clips[0, 1, 0:4, 12:16] = 255  # motion only in the top-right cell
    masks = fame.foreground_mask(clips, variant="grid")
    assert masks.sum() == 8 * 16
    cells = masks[0].reshape(4, 4, 4, 4).transpose(0, 2, 1, 3).reshape(16, 16)
    assert set(cells.sum(axis=1).tolist()) <= {0, 16}  # every cell all in or all out
    assert masks[0, 0, 15] == 1


def test_gauss_mask_is_centred():
    masks = fame.foreground_mask(random_clips(height=31, width=31), beta=0.2, variant="gauss")
    assert masks[0, 15, 15] == 1 and masks[0, 0, 0] == 0 and masks[0, 30, 30] == 0
    assert (masks == masks[:1]).all()
    rows, cols = np.nonzero(masks[0])
    assert abs(rows.mean() - 15) < 0.5 and abs(cols.mean() - 15) < 0.5


def test_mask_finds_the_moving_object(natural_112):
    clips, boxes = natural_112
    fractions = boxes.mean(axis=(1, 2))
    chance = np.mean(fractions / (2 - fractions))  # IoU of a random mask of the box's area
    for variant, least in (("fame", 0.4), ("seed", 0.8)):
        ious = [
            iou(fame.foreground_mask(clips[i : i + 1], beta=float(fractions[i]), variant=variant)[0], boxes[i])
            for i in range(len(clips))
        ]
        assert np.mean(ious) >= max(least, 3 * chance), (variant, ious)


# ---------------------------------------------------------------- beta="auto"


def test_otsu_fraction_splits_a_bimodal_row():
    values = np.concatenate([np.full(70, 0.1), np.full(30, 0.9)])[None, :]
    assert otsu_fraction(values)[0] == pytest.approx(0.3)
    # A constant row has no between-class variance: the fraction above level 0, all or nothing.
    constant = np.stack([np.full(50, 0.4), np.zeros(50)])
    assert otsu_fraction(constant).tolist() == [1.0, 0.0]


def test_auto_beta_count_follows_otsu_and_the_clamp(natural_112):
    clips, _ = natural_112
    cfg = fame.FameConfig(beta="auto", beta_min=0.2, beta_max=0.6)
    masks = fame.foreground_mask(clips, beta="auto", beta_min=0.2, beta_max=0.6)
    pixels = 112 * 112
    fractions = np.clip(otsu_fraction(soft_mask(clips, cfg).reshape(len(clips), pixels)), 0.2, 0.6)
    np.testing.assert_array_equal(masks.sum(axis=(1, 2)), np.floor(fractions * 112 * 112).astype(int))
    assert len(set(masks.sum(axis=(1, 2)).tolist())) > 1  # adapts per clip
    clamped = fame.foreground_mask(clips, beta="auto", beta_min=0.45, beta_max=0.45)
    assert (clamped.sum(axis=(1, 2)) == int(0.45 * 112 * 112)).all()


# ---------------------------------------------------------------- camera motion


def test_phase_correlation_recovers_the_pan(panning_112):
    from fame.motion import estimate_shifts

    clips, _ = panning_112
    dy, dx = estimate_shifts(clips)
    assert (dy == 0).mean() > 0.9 and (dx == -2).mean() > 0.9  # the window moves right: content moves left


def test_camera_compensation_keeps_the_object_under_a_panning_camera(panning_112):
    clips, boxes = panning_112
    fractions = boxes.mean(axis=(1, 2))

    def mean_iou(variant, compensation):
        options = {"variant": variant, "camera_compensation": compensation}
        masks = [
            fame.foreground_mask(clips[i : i + 1], beta=float(fractions[i]), **options)[0] for i in range(len(clips))
        ]
        return np.mean([iou(m, b) for m, b in zip(masks, boxes, strict=True)])

    assert mean_iou("seed", "phase") >= max(0.75, mean_iou("seed", "none") + 0.3)
    assert mean_iou("fame", "phase") >= mean_iou("fame", "none") + 0.15
    median = fame.foreground_mask(clips, camera_compensation="median")
    assert (median.sum(axis=(1, 2)) == int(0.5 * 112 * 112)).all()


# ---------------------------------------------------------------- building blocks


def test_hsv_matches_colorsys():
    rgb = np.random.default_rng(9).random((500, 3)).astype(np.float32)
    rgb[:5] = [[0.5, 0.5, 0.5], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]]
    hue, saturation, value = hue_saturation_value(rgb)
    expected = np.array([colorsys.rgb_to_hsv(*pixel) for pixel in rgb.astype(np.float64)])
    hue_error = np.abs(hue - expected[:, 0])
    np.testing.assert_array_less(np.minimum(hue_error, 1 - hue_error), 1e-5)
    np.testing.assert_allclose(saturation, expected[:, 1], atol=1e-5)
    np.testing.assert_allclose(value, expected[:, 2], atol=1e-6)


def test_blur_kernel_follows_the_published_rule():
    # int(0.1 * crop) // 2 * 2 + 1: int(11.2) = 11 -> 11 taps at 112, int(22.4) = 22 -> 23 taps at 224.
    assert blur_kernel(112).size == 11 and blur_kernel(224).size == 23
    assert blur_kernel(224).sum() == pytest.approx(1.0)
    sigma = 23 / 3
    ratio = blur_kernel(224)[11] / blur_kernel(224)[0]
    assert ratio == pytest.approx(math.exp(11**2 / (2 * sigma**2)))


def test_top_k_mask_per_row_counts_and_ties():
    values = np.array([[3.0, 1.0, 3.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    assert top_k_mask(values, 2).tolist() == [[True, False, True, False, False], [True, True, False, False, False]]
    assert top_k_mask(values, np.array([5, 0])).sum(axis=1).tolist() == [5, 0]
    with pytest.raises(ValueError, match="k must"):
        top_k_mask(values, 6)


# ---------------------------------------------------------------- packaging


def test_numpy_use_never_imports_cupy():
    script = (
        "import sys, numpy as np, fame; "
        "fame.augment(np.zeros((2, 3, 8, 8, 3), np.uint8), fame.FameConfig(), np.random.default_rng(0)); "
        "assert 'cupy' not in sys.modules"
    )
    repository = Path(fame.__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", script], check=True, cwd=repository)


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    "field, value",
    [
        ("beta", 1.5),
        ("beta", "half"),
        ("variant", "blob"),
        ("hue", "degrees"),
        ("background", "outer"),
        ("pick", "cycle"),
        ("branches", "three"),
        ("camera_compensation", "flow"),
        ("camera_compensation", True),
        ("fg_fraction", -0.1),
        ("bins", 1),
        ("laplace", -1.0),
        ("grid_keep", 17),
        ("gauss_sigma", 0.0),
        ("beta_min", 0.9),
        ("beta_warmup_epochs", -1.0),
        ("beta_warmup_epochs", "one"),
        ("steps_per_epoch", -1),
        ("steps_per_epoch", 2.5),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"FameConfig.{field}"):
        fame.FameConfig(**{field: value})


def test_config_defaults_are_the_published_values():
    cfg = fame.FameConfig()
    assert (cfg.beta, cfg.variant, cfg.hue, cfg.fg_fraction, cfg.bg_fraction, cfg.bins, cfg.laplace) == (
        0.5, "fame", "published", 0.5, 0.1, 10, 1.0,
    )
    assert cfg.pick == "derangement" and cfg.camera_compensation == "none"
    with pytest.raises(FrozenInstanceError):
        cfg.beta = 0.3
    with pytest.raises(ValueError, match="unknown FameConfig option"):
        fame.foreground_mask(random_clips(), betta=0.3)


def test_beta_warmup_falls_linearly_from_one_then_holds():
    cfg = fame.FameConfig(beta=0.3, beta_warmup_epochs=2.5, steps_per_epoch=4)
    assert cfg.beta_warmup_steps == 10
    assert [cfg.at_step(s).beta for s in (0, 5, 10, 40)] == pytest.approx([1.0, 0.65, 0.3, 0.3])
    assert cfg.at_step(10) is cfg and fame.FameConfig(beta=0.3).at_step(0).beta == 0.3
    assert fame.FameConfig(beta=0.3, beta_warmup_epochs=2.5).at_step(0).beta == 0.3   # steps unknown: no warm-up
    assert cfg.for_steps_per_epoch(8).beta_warmup_steps == 20
    with pytest.raises(ValueError, match="beta_warmup_epochs"):
        fame.FameConfig(beta="auto", beta_warmup_epochs=5)


# ---------------------------------------------------------------- share of merged clips


def test_share_one_draws_nothing_and_merges_every_clip():
    clips = random_clips(batch=6)
    published = fame.FameConfig(beta=0.3)
    merged, masks = fame.augment(clips, replace(published, share=1.0), np.random.default_rng(3))
    again, _ = fame.augment(clips, published, np.random.default_rng(3))
    np.testing.assert_array_equal(merged, again)
    assert not masks.all(axis=(1, 2)).any()


@pytest.mark.parametrize("background", ["inter", "intra"])
def test_share_keeps_the_unmerged_clips_whole(background):
    """A clip left out of the merge has an all-ones mask and comes back unchanged; the others
    are exactly the merge of their own mask."""
    clips, others = random_clips(batch=8, seed=0), random_clips(batch=8, seed=1)
    cfg = fame.FameConfig(beta=0.3, share=0.5, background=background)
    merged, masks = fame.augment(clips, cfg, np.random.default_rng(0), background_clips=others)
    whole = masks.all(axis=(1, 2))
    assert 0 < whole.sum() < 8
    np.testing.assert_array_equal(merged[whole], clips[whole])
    foreground = masks_from_config(clips, cfg)
    np.testing.assert_array_equal(masks[~whole], foreground[~whole])
    if background == "intra":
        np.testing.assert_array_equal(merged, fame.merge(clips, masks, others))


def test_share_is_the_fraction_of_clips_merged():
    clips = random_clips(batch=8)
    cfg = fame.FameConfig(beta=0.3, share=0.25)
    rng = np.random.default_rng(0)
    merged = [not masks.all() for _ in range(100)
              for masks in fame.augment(clips, cfg, rng)[1]]
    assert abs(np.mean(merged) - 0.25) < 0.05      # 800 draws: one standard deviation is 0.015


def test_share_with_the_median_fill_clears_actors_by_the_foreground_mask():
    """A background clip that is itself left whole still loses its actor by its own foreground
    mask, not by its all-ones mask (which would fill the whole frame with the median)."""
    clips = random_clips(batch=6)
    cfg = fame.FameConfig(beta=0.3, share=0.5, background_fill="median")
    merged, masks = fame.augment(clips, cfg, np.random.default_rng(1))
    index = fame.pick_backgrounds(6, np.random.default_rng(1), cfg.pick)
    cleared = fame.clear_actors(clips, masks_from_config(clips, cfg))[index]
    np.testing.assert_array_equal(merged, fame.merge(clips, masks, cleared))


def test_share_outside_the_unit_interval_is_a_setting_error():
    with pytest.raises(fame.fields.SettingError, match="share"):
        fame.FameConfig(share=1.5)
