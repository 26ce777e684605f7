"""The keyed sampler alone: orders, shards, clip starts, crop windows, colour draws (no DALI)."""
import math

import numpy as np
import pytest

from pipelines.params import IDENTITY_AUG, AugParams, ClipGeometry, blur_weights
from pipelines.sampler import (
    NO_BLUR_SIGMA,
    EvalClipSampler,
    PretrainSampler,
    Window,
    draw_clip_starts,
    draw_colour,
    draw_crop_window,
    epoch_order,
    equal_shard,
    split_shard,
    uniform_clip_starts,
    union_frames,
)
from pipelines.videos import VideoMeta

GEOMETRY = ClipGeometry(frames=4, stride=2, crop=32)


def make_videos(n, frames=30):
    return [VideoMeta(f"/videos/v{i}.webm", i % 3, frames, 64, 48) for i in range(n)]


def test_epoch_order_is_a_permutation_fixed_by_seed_and_epoch():
    a, b = epoch_order(50, 3, 0), epoch_order(50, 3, 0)
    assert np.array_equal(a, b) and sorted(a) == list(range(50))
    assert not np.array_equal(a, epoch_order(50, 3, 1))
    assert not np.array_equal(a, epoch_order(50, 4, 0))
    assert np.array_equal(epoch_order(5, 3, 0, shuffle=False), np.arange(5))


def test_equal_shards_are_disjoint_equal_and_drop_the_remainder():
    shards = [equal_shard(11, r, 3) for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    assert set().union(*map(set, shards)) == set(range(9))
    with pytest.raises(ValueError):
        equal_shard(11, 3, 3)


def test_split_shards_cover_every_position_once():
    shards = [split_shard(11, r, 3) for r in range(3)]
    assert sorted(p for s in shards for p in s) == list(range(11))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_clip_starts_differ_when_there_is_room():
    rng = np.random.default_rng(0)
    for _ in range(200):
        starts = draw_clip_starts(rng, num_frames=9, span=7, count=2)   # 3 possible starts
        assert starts[0] != starts[1] and 0 <= starts.min() and starts.max() <= 2
    assert list(draw_clip_starts(rng, num_frames=7, span=7, count=2)) == [0, 0]
    with pytest.raises(ValueError, match="spans 7 frames but the video has 6"):
        draw_clip_starts(rng, num_frames=6, span=7, count=2)


def test_union_frames_gives_each_clip_back():
    q, k = np.array([4, 6, 8, 10]), np.array([2, 4, 6, 8])
    union, (order_q, order_k) = union_frames([q, k])
    assert list(union) == [2, 4, 6, 8, 10]           # sorted, distinct: one forward pass
    assert np.array_equal(union[order_q], q) and np.array_equal(union[order_k], k)


def test_uniform_clip_starts_span_the_video():
    assert list(uniform_clip_starts(30, 7, 3)) == [0, 12, 23]
    assert list(uniform_clip_starts(7, 7, 2)) == [0, 0]


def test_crop_windows_respect_area_aspect_and_bounds():
    rng = np.random.default_rng(1)
    area, aspect = (0.2, 1.0), (3 / 4, 4 / 3)
    for _ in range(300):
        w = draw_crop_window(rng, 64, 48, area, aspect)
        assert 0 <= w.x and w.x + w.width <= 64 and 0 <= w.y and w.y + w.height <= 48
        fraction = w.width * w.height / (64 * 48)
        assert 0.2 - 0.05 <= fraction <= 1.0
        assert 3 / 4 - 0.1 <= w.width / w.height <= 4 / 3 + 0.1


def test_crop_window_falls_back_to_a_centred_window():
    w = draw_crop_window(np.random.default_rng(0), 64, 48, (1.0, 1.0), (1.0, 1.0))
    assert (w.x, w.y, w.width, w.height) == (8.0, 0.0, 48.0, 48.0)


@pytest.mark.parametrize("width, height, window", [(64, 48, Window(8.0, 0.0, 48.0, 48.0)),
                                                   (40, 40, Window(0.0, 0.0, 40.0, 40.0))])
def test_identity_aug_crops_the_largest_centred_square(width, height, window):
    rng = np.random.default_rng(0)
    assert draw_crop_window(rng, width, height, IDENTITY_AUG.crop_area, IDENTITY_AUG.crop_aspect) == window


def test_flipped_roi_swaps_x():
    w = draw_crop_window(np.random.default_rng(0), 64, 48, (0.5, 0.5), (1.0, 1.0))
    start, end = w.roi(flip=False)
    fstart, fend = w.roi(flip=True)
    assert (fstart[0], fend[0]) == (start[0], end[0]) and (fstart[1], fend[1]) == (end[1], start[1])


def test_colour_draw_is_identity_when_nothing_is_drawn():
    aug = AugParams(jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)
    c = draw_colour(np.random.default_rng(0), aug)
    assert (c.brightness, c.contrast, c.saturation, c.hue, c.sigma) == (1.0, 1.0, 1.0, 0.0, NO_BLUR_SIGMA)
    c = draw_colour(np.random.default_rng(0), AugParams(jitter_p=1.0, grayscale_p=1.0, blur_p=1.0))
    assert c.saturation == 0.0 and 0.1 <= c.sigma <= 2.0 and 0.6 <= c.brightness <= 1.4
    assert abs(c.hue) <= 0.1 * 360


def test_colour_draw_rates_follow_the_probabilities():
    rng = np.random.default_rng(2)
    draws = [draw_colour(rng, AugParams()) for _ in range(2000)]
    assert abs(np.mean([d.saturation == 0.0 for d in draws]) - 0.2) < 0.04
    assert abs(np.mean([d.sigma != NO_BLUR_SIGMA for d in draws]) - 0.5) < 0.04
    assert abs(np.mean([d.brightness != 1.0 for d in draws]) - 0.8) < 0.04


def test_pretrain_plans_are_pure_functions_of_epoch_and_step():
    sampler = PretrainSampler(make_videos(10), GEOMETRY, AugParams(), batch_size=3, seed=5)
    assert len(sampler) == 3
    a, b = sampler.plan(1, 2), sampler.plan(1, 2)
    for name in a:
        assert len(a[name]) == len(b[name]) == sampler.batch_size, name
        assert all(np.array_equal(x, y) for x, y in zip(a[name], b[name], strict=True)), name
    assert len(set(int(s) for s in a["fame_seed"])) == 1
    assert not np.array_equal(np.stack(a["roi_start_q"]), np.stack(sampler.plan(2, 2)["roi_start_q"]))


def test_blur_weights_are_the_drawn_sigma_over_the_crop_window():
    aug = AugParams(blur_p=0.5)
    plan = PretrainSampler(make_videos(8), GEOMETRY, aug, batch_size=8, seed=3).plan(0, 0)
    window = aug.blur_window(GEOMETRY.crop)
    for view in "qk":
        assert {bool(b) for b in plan[f"blur_{view}"]} == {False, True}
        for sigma, weights in zip(plan[f"sigma_{view}"], plan[f"blur_weights_{view}"], strict=True):
            assert weights.shape == (window,) and weights.dtype == np.float32
            np.testing.assert_allclose(weights, blur_weights(float(sigma), window), rtol=1e-5)   # sigma fed as float32
    offsets = np.arange(window) - window // 2
    weights = blur_weights(1.5, window)
    assert weights.sum() == pytest.approx(1.0) and np.array_equal(weights, weights[::-1])
    np.testing.assert_allclose(weights[1:] / weights[:-1], np.exp(-(2 * offsets[:-1] + 1) / (2 * 1.5**2)), rtol=1e-5)
    assert np.array_equal(blur_weights(NO_BLUR_SIGMA, window), np.eye(window, dtype=np.float32)[window // 2])


def test_a_sample_draws_the_same_whatever_the_world_size():
    videos = make_videos(12)
    single = PretrainSampler(videos, GEOMETRY, AugParams(), batch_size=2, seed=1)
    second_rank = PretrainSampler(videos, GEOMETRY, AugParams(), batch_size=2, seed=1, rank=1, world=2)
    position = 6    # rank 1 of 2 starts at position 6; the single process reaches it at step 3
    a, b = single.plan(0, position // 2), second_rank.plan(0, 0)
    assert np.array_equal(np.stack(a["starts"]), np.stack(b["starts"]))
    assert np.array_equal(np.stack(a["roi_end_k"]), np.stack(b["roi_end_k"]))


def test_eval_sampler_visits_every_video_once_with_a_short_last_batch():
    sampler = EvalClipSampler(make_videos(7), GEOMETRY, clips_per_video=3, videos_per_batch=3)
    assert len(sampler) == math.ceil(7 / 3)
    seen = [int(i) for step in range(len(sampler)) for i in sampler.plan(0, step)["index"]]
    assert seen == list(range(7))
    plan = sampler.plan(0, 0)
    assert all(len(order) == 3 * GEOMETRY.frames for order in plan["order"])
