"""The bias probe's clip conditions, class pairing and scores (studies.bias) against hand-made cases."""
import numpy as np
import pytest

from studies.bias import (background_only, bias_scores, foreground_only, median_frame, pair_across_classes,
                         swap_backgrounds)

T, H, W, SIDE = 7, 12, 16, 3


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


def test_bad_shapes_and_fills_are_named():
    clip, mask, _ = moving_square(10, 250)
    with pytest.raises(ValueError, match="masks must be"):
        background_only(clip, mask[:, :-1])
    with pytest.raises(ValueError, match="fill must be one of"):
        background_only(clip, mask, fill="inpaint")


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
