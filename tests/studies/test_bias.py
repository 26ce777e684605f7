"""The bias probe's clip conditions, class pairing and scores (studies.bias) against hand-made cases."""
import numpy as np
import pytest

from studies.bias import (
    actor_kept,
    background_only,
    bias_scores,
    foreground_only,
    median_frame,
    pair_across_classes,
    persistent_pixels,
    swap_backgrounds,
)

T, H, W, SIDE = 7, 12, 16, 3
SLOW_WIDTH = 5     # a square this wide, a pixel a frame, covers its path's pixels in most of T frames


def moving_square(background_value: int, square_value: int, start: int = 0):
    """(1, T, H, W, 3) uint8: a SIDE x SIDE square moving 2 pixels right per frame over a background
    whose pixel (y, x) is background_value + y + x (so it is not flat), and its mask over the clip."""
    yy, xx = np.mgrid[:H, :W]
    scene = (background_value + yy + xx).astype(np.uint8)
    clip = np.repeat(scene[None, :, :, None], 3, axis=-1).repeat(T, axis=0)
    mask = np.zeros((H, W), np.uint8)
    for t in range(T):
        x0 = start + 2 * t
        clip[t, 4:4 + SIDE, x0:x0 + SIDE] = square_value
        mask[4:4 + SIDE, x0:x0 + SIDE] = 1
    return clip[None], mask[None], np.repeat(scene[:, :, None], 3, axis=-1)


def test_background_only_of_a_moving_square_is_its_scene():
    clip, mask, scene = moving_square(10, 250)
    assert np.array_equal(median_frame(clip)[0, 0], scene)       # the square covers a pixel < T/2 times
    filled = background_only(clip, mask)
    assert np.array_equal(filled[0], np.broadcast_to(scene, filled[0].shape))
    still = background_only(clip, mask, fill="median")
    assert np.array_equal(still, filled) and still.dtype == np.uint8


def test_background_fill_keeps_the_scene_outside_the_mask():
    clip, mask, _ = moving_square(10, 250)
    clip = clip.copy()
    clip[0, :, 0, 0] = np.arange(T)[:, None] * 30               # a flickering pixel outside the mask
    filled = background_only(clip, mask)
    assert np.array_equal(filled[0, :, 0, 0], clip[0, :, 0, 0])
    assert not np.array_equal(background_only(clip, mask, fill="median")[0, :, 0, 0], clip[0, :, 0, 0])


def test_foreground_only_puts_the_square_on_the_colour():
    clip, mask, _ = moving_square(10, 250)
    out = foreground_only(clip, mask, (1, 2, 3))
    inside = mask[0].astype(bool)
    assert np.array_equal(out[0][:, inside], clip[0][:, inside])
    assert (out[0][:, ~inside] == np.array([1, 2, 3], np.uint8)).all()


def test_swap_puts_one_foreground_on_the_other_scene():
    clip_a, mask_a, _ = moving_square(10, 250)
    clip_b, _, scene_b = moving_square(100, 0, start=5)
    out = swap_backgrounds(clip_a, mask_a, clip_b)
    inside = mask_a[0].astype(bool)
    assert np.array_equal(out[0][:, inside], clip_a[0][:, inside])
    assert np.array_equal(out[0][:, ~inside], clip_b[0][:, ~inside])


def slow_square(frames: int, covered_columns: int):
    """A SIDE x SLOW_WIDTH square moving 1 pixel right per frame over ``moving_square``'s scene, for
    ``frames`` frames; its per-frame boxes; and a mask over the first ``covered_columns`` columns
    of its path only (a mask that misses the rest of the actor)."""
    yy, xx = np.mgrid[:H, :W]
    scene = np.repeat((10 + yy + xx).astype(np.uint8)[:, :, None], 3, axis=-1)
    clip = np.repeat(scene[None], frames, axis=0)
    boxes = []
    for t in range(frames):
        clip[t, 4:4 + SIDE, t:t + SLOW_WIDTH] = 250
        boxes.append([t, 4, t + SLOW_WIDTH, 4 + SIDE])
    mask = np.zeros((1, H, W), np.uint8)
    mask[0, 4:4 + SIDE, :covered_columns] = 1
    return clip[None], np.asarray(boxes)[None], mask, scene


def test_a_slow_actor_stays_in_its_clip_s_median_and_leaves_the_video_s():
    """A square that moves a pixel a frame covers most pixels of its path in more than half of a
    short clip's frames: the clip's own median keeps it; the median of a longer stretch (the video's
    test clips, as the probe takes it) does not, and background only is then the scene."""
    clip, boxes, _, scene = slow_square(T, W)
    path = np.zeros((1, H, W), np.uint8)
    path[0, 4:4 + SIDE, :T + SLOW_WIDTH] = 1
    assert (background_only(clip, path)[0, :, 4:4 + SIDE] == 250).any()
    assert persistent_pixels(boxes[0], H, W).any()
    long_clip, long_boxes, _, _ = slow_square(W - SLOW_WIDTH + 1, W)
    video_still = median_frame(long_clip)[:, 0]
    assert np.array_equal(video_still[0], scene)
    assert not persistent_pixels(long_boxes[0], H, W).any()
    filled = background_only(clip, path, still=video_still)
    assert np.array_equal(filled[0], np.broadcast_to(scene, filled[0].shape))


def test_actor_kept_counts_what_a_partial_mask_leaves_of_the_actor():
    """A mask over the first half of the square's path: background only keeps exactly the frames'
    square pixels outside it, and actor_kept says which share of the actor that is."""
    clip, boxes, mask, scene = slow_square(T, W // 2)
    long_clip, long_boxes, _, _ = slow_square(W - SLOW_WIDTH + 1, W)
    still = median_frame(long_clip)[:, 0]
    filled = background_only(clip, mask, still=still)
    shown = (filled[0, ..., 0] == 250).sum()
    total = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in boxes[0])
    no_persistence = np.zeros((1, H, W), bool)
    assert actor_kept(mask, boxes, no_persistence)[0] == pytest.approx(shown / total)
    assert 0 < actor_kept(mask, boxes, no_persistence)[0] < 1
    assert actor_kept(np.ones_like(mask), boxes, no_persistence)[0] == 0.0
    # where the still holds the actor, a full mask keeps it too
    assert actor_kept(np.ones_like(mask), boxes, persistent_pixels(boxes[0], H, W)[None])[0] > 0
    with pytest.raises(ValueError, match="frame boxes must be"):
        actor_kept(mask, boxes[0], no_persistence)


def test_bad_shapes_and_fills_are_named():
    clip, mask, _ = moving_square(10, 250)
    with pytest.raises(ValueError, match="masks must be"):
        background_only(clip, mask[:, :-1])
    with pytest.raises(ValueError, match="fill must be one of"):
        background_only(clip, mask, fill="inpaint")
    with pytest.raises(ValueError, match="still frames must be"):
        background_only(clip, mask, still=clip[:, 0, :-1])


@pytest.mark.parametrize("labels", [[0, 0, 1, 1], [0, 1, 2, 2, 2, 2], [3, 3, 3, 3, 3, 1], [0, 0, 0, 1, 1, 2, 5, 5],
                                    list(np.random.default_rng(7).integers(0, 4, 101))])
def test_pairs_never_share_a_class(labels):
    labels = np.asarray(labels)
    for seed in range(20):
        partner = pair_across_classes(labels, np.random.default_rng(seed))
        assert partner.shape == labels.shape
        assert (labels[partner] != labels).all()
        if 2 * np.bincount(labels).max() <= len(labels):
            assert sorted(partner) == list(range(len(labels)))     # a permutation: every background used once


def test_pairs_need_two_classes():
    with pytest.raises(ValueError, match="at least two classes"):
        pair_across_classes([2, 2, 2], np.random.default_rng(0))


def test_scores_on_fabricated_predictions():
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    partner = np.array([1, 2, 3, 0, 2, 3, 0, 1])
    predictions = {"original": labels,                              # all right
                   "background_only": np.array([0, 1, 0, 0, 0, 0, 0, 0]),   # 3 of 8 right by chance
                   "foreground_only": np.array([0, 1, 2, 3, 0, 0, 0, 0]),   # 5 of 8
                   "swap": np.array([0, 1, 3, 0, 2, 3, 1, 2])}              # fg 2, bg 4, neither 2
    s = bias_scores(predictions, labels, partner, num_classes=4)
    assert s["chance"] == 25.0 and s["videos"] == 8
    assert s["top1"] == {"original": 100.0, "background_only": 37.5, "foreground_only": 62.5, "swap": 25.0}
    assert s["background_reliance"] == pytest.approx(1.5)
    assert s["swap"] == {"foreground": 25.0, "background": 50.0, "neither": 25.0}


def test_scores_refuse_a_same_class_swap_and_unknown_conditions():
    with pytest.raises(ValueError, match="its own class"):
        bias_scores({"swap": [0, 1]}, [0, 1], [0, 0], 2)
    with pytest.raises(ValueError, match="unknown conditions"):
        bias_scores({"mirror": [0, 1]}, [0, 1], [1, 0], 2)
