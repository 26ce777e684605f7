"""CuPy runs the same code as NumPy: masks, merges and the augmentation agree (skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
from fame_testing import iou, with_static_patches_outside_the_unit_range

import fame
from fame.motion import frame_statistics

pytestmark = pytest.mark.gpu
MIN_IOU = 0.99


@pytest.mark.parametrize("size", [112, 224])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_cupy_masks_match_numpy(cupy, size, dtype, natural_112, natural_224):
    clips, _ = natural_112 if size == 112 else natural_224
    clips = clips if dtype == np.uint8 else (clips / 255).astype(np.float32)
    expected = fame.foreground_mask(clips)
    got = fame.foreground_mask(cupy.asarray(clips))
    assert isinstance(got, cupy.ndarray) and got.dtype == cupy.uint8
    assert (got.sum(axis=(1, 2)) == int(0.5 * size * size)).all()
    for index in range(len(clips)):
        assert iou(cupy.asnumpy(got[index]), expected[index]) >= MIN_IOU


@pytest.mark.parametrize("variant", ["seed", "grid", "gauss", "none"])
def test_cupy_variants_match_numpy(cupy, variant, natural_112):
    clips, _ = natural_112
    expected = fame.foreground_mask(clips, variant=variant)
    got = cupy.asnumpy(fame.foreground_mask(cupy.asarray(clips), variant=variant))
    assert np.mean([iou(g, e) for g, e in zip(got, expected, strict=True)]) >= MIN_IOU


@pytest.mark.parametrize(
    "options", [{"beta": "auto"}, {"camera_compensation": "phase"}, {"camera_compensation": "median"}]
)
def test_cupy_options_run_and_agree(cupy, options, panning_112):
    clips, _ = panning_112
    expected = fame.foreground_mask(clips, **options)
    got = cupy.asnumpy(fame.foreground_mask(cupy.asarray(clips), **options))
    assert np.mean([iou(g, e) for g, e in zip(got, expected, strict=True)]) >= 0.98


def test_cupy_clips_float_colours_outside_the_unit_range(cupy, natural_112):
    clips = with_static_patches_outside_the_unit_range(natural_112[0])
    expected = cupy.asnumpy(fame.foreground_mask(cupy.asarray(np.clip(clips, 0, 1))))
    np.testing.assert_array_equal(cupy.asnumpy(fame.foreground_mask(cupy.asarray(clips))), expected)


def test_cupy_float16_clips_accumulate_in_float32(cupy, natural_112):
    clips = cupy.asarray((natural_112[0] / 255).astype(np.float16))
    for got, expected in zip(frame_statistics(clips), frame_statistics(clips.astype(cupy.float32)), strict=True):
        assert got.dtype == cupy.float32
        np.testing.assert_allclose(cupy.asnumpy(got), cupy.asnumpy(expected), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_cupy_merge_is_exact(cupy, dtype):
    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, size=(4, 3, 8, 8, 3), dtype=np.uint8).astype(dtype)
    masks = (rng.random((4, 8, 8)) < 0.5).astype(np.uint8)
    index = np.array([1, 2, 3, 0])
    expected = fame.merge(clips, masks, index)
    got = fame.merge(cupy.asarray(clips), cupy.asarray(masks), index)
    assert isinstance(got, cupy.ndarray) and got.dtype == dtype
    np.testing.assert_array_equal(cupy.asnumpy(got), expected)
    intra = fame.merge(cupy.asarray(clips), cupy.asarray(masks), cupy.asarray(clips[index]))
    np.testing.assert_array_equal(cupy.asnumpy(intra), expected)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_cupy_clear_actors_matches_numpy(cupy, dtype):
    rng = np.random.default_rng(1)
    clips = rng.integers(0, 256, size=(3, 8, 8, 8, 3), dtype=np.uint8).astype(dtype)
    masks = (rng.random((3, 8, 8)) < 0.3).astype(np.uint8)
    got = fame.clear_actors(cupy.asarray(clips), cupy.asarray(masks))
    assert isinstance(got, cupy.ndarray) and got.dtype == dtype
    np.testing.assert_array_equal(cupy.asnumpy(got), fame.clear_actors(clips, masks))


def test_cupy_augment_stays_on_the_device(cupy, natural_112):
    clips, _ = natural_112
    cfg = fame.FameConfig()
    merged, masks = fame.augment(cupy.asarray(clips), cfg, np.random.default_rng(0))
    assert isinstance(merged, cupy.ndarray) and isinstance(masks, cupy.ndarray)
    merged, masks = cupy.asnumpy(merged), cupy.asnumpy(masks)
    expected, expected_masks = fame.augment(clips, cfg, np.random.default_rng(0))
    assert iou(masks.ravel(), expected_masks.ravel()) >= MIN_IOU
    # The same generator picks the same backgrounds on either device.
    backgrounds = fame.pick_backgrounds(len(clips), np.random.default_rng(0), cfg.pick)
    np.testing.assert_array_equal(merged, fame.merge(clips, masks, backgrounds))
    if np.array_equal(masks, expected_masks):
        np.testing.assert_array_equal(merged, expected)


def test_cupy_share_keeps_the_same_clips_whole(cupy):
    rng = np.random.default_rng(1)
    masks = (rng.random((8, 8, 8)) < 0.3).astype(np.uint8)
    got = fame.merging.keep_own_backgrounds(cupy.asarray(masks), 0.5, np.random.default_rng(0))
    assert isinstance(got, cupy.ndarray)
    expected = fame.merging.keep_own_backgrounds(masks, 0.5, np.random.default_rng(0))
    np.testing.assert_array_equal(cupy.asnumpy(got), expected)


@pytest.mark.parametrize("branches", ["one", "both"])
def test_pipeline_stage_runs_cupy_samples(cupy, branches, natural_112):
    """The DALI python_function adapter, fed CuPy samples as DALI's GPU backend hands them;
    the batch keys come from the host (no device input, no read back)."""
    from pipelines.fame_stage import FameStage

    clips, _ = natural_112
    cfg = fame.FameConfig(branches=branches)
    stage = FameStage(cfg, return_masks=True, synchronize_timing=True)
    query = [cupy.asarray(clip) for clip in clips]
    key = [cupy.asarray(clip[:, :, ::-1]) for clip in clips]
    asked = []
    function = stage.for_pipeline(lambda iteration: asked.append(iteration) or (7, 0))
    outputs = function(query, *([key] if stage.takes_key else []))
    assert asked == [0]
    assert len(outputs) == len(stage.output_layouts)
    merged_q, masks = outputs[0], outputs[-1]
    assert all(isinstance(a, cupy.ndarray) for a in merged_q + masks)
    assert merged_q[0].shape == clips[0].shape and masks[0].shape == clips.shape[2:4]
    expected_q, expected_masks = fame.augment(cupy.stack(query), cfg, np.random.default_rng(7),
                                              background_clips=cupy.stack(key) if stage.takes_key else None)
    np.testing.assert_array_equal(cupy.asnumpy(cupy.stack(merged_q)), cupy.asnumpy(expected_q))
    np.testing.assert_array_equal(cupy.asnumpy(cupy.stack(masks)), cupy.asnumpy(expected_masks))
    assert stage.calls == 1 and stage.clips == len(clips) * (2 if branches == "both" else 1)
