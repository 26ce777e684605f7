"""CuPy runs the same code as NumPy: masks, merges and the augmentation agree (skipped without a GPU)."""

from __future__ import annotations

import numpy as np
import pytest
from fame_testing import iou

import fame

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
    assert np.mean([iou(g, e) for g, e in zip(got, expected)]) >= MIN_IOU


@pytest.mark.parametrize(
    "options", [{"beta": "auto"}, {"camera_compensation": "phase"}, {"camera_compensation": "median"}]
)
def test_cupy_options_run_and_agree(cupy, options, panning_112):
    clips, _ = panning_112
    expected = fame.foreground_mask(clips, **options)
    got = cupy.asnumpy(fame.foreground_mask(cupy.asarray(clips), **options))
    assert np.mean([iou(g, e) for g, e in zip(got, expected)]) >= 0.98


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


def test_cupy_augment_stays_on_the_device(cupy, natural_112):
    clips, _ = natural_112
    merged, masks = fame.augment(cupy.asarray(clips), fame.FameConfig(), np.random.default_rng(0))
    assert isinstance(merged, cupy.ndarray) and isinstance(masks, cupy.ndarray)
    expected, expected_masks = fame.augment(clips, fame.FameConfig(), np.random.default_rng(0))
    assert iou(cupy.asnumpy(masks).ravel(), expected_masks.ravel()) >= MIN_IOU


@pytest.mark.parametrize("branches", ["one", "both"])
def test_pipeline_stage_runs_cupy_samples(cupy, branches, natural_112):
    """The DALI python_function adapter, fed CuPy samples as DALI's GPU backend hands them."""
    from pipelines.fame_stage import FameStage

    clips, _ = natural_112
    cfg = fame.FameConfig(branches=branches)
    stage = FameStage(cfg, return_masks=True, synchronize_timing=True)
    query = [cupy.asarray(clip) for clip in clips]
    key = [cupy.asarray(clip[:, :, ::-1]) for clip in clips]
    seeds = [np.int64(7)] * len(clips)
    steps = [np.int64(0)] * len(clips)
    outputs = stage(query, *([key] if stage.takes_key else []), seeds, steps)
    assert len(outputs) == len(stage.output_layouts)
    merged_q, masks = outputs[0], outputs[-1]
    assert all(isinstance(a, cupy.ndarray) for a in merged_q + masks)
    assert merged_q[0].shape == clips[0].shape and masks[0].shape == clips.shape[2:4]
    expected_q, expected_masks = fame.augment(cupy.stack(query), cfg, np.random.default_rng(7),
                                              background_clips=cupy.stack(key) if stage.takes_key else None)
    np.testing.assert_array_equal(cupy.asnumpy(cupy.stack(merged_q)), cupy.asnumpy(expected_q))
    np.testing.assert_array_equal(cupy.asnumpy(cupy.stack(masks)), cupy.asnumpy(expected_masks))
    assert stage.calls == 1 and stage.clips == len(clips) * (2 if branches == "both" else 1)
