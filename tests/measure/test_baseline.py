"""The PyAV + NumPy baseline does the same work as the DALI pipeline on the same draws."""
import dataclasses

import numpy as np
import torch

from measure.baseline import crop_resize, decode_frames, pyav_pretrain_loader
from pipelines.loader import pretrain_loader
from pipelines.params import AugParams, ClipGeometry, Sharding
from tests.pipelines.conftest import coded_frames, write_vp9

CLIP = ClipGeometry(frames=4, stride=2, crop=32)
RAW_SCALE = dict(mean=(0.0, 0.0, 0.0), std=(1 / 255,) * 3)
# Decoders' YUV -> RGB conversions and the colour / blur kernels differ by a level or two.
MEAN_LEVEL_TOLERANCE = 2.0
# DALI's CPU blur rounds to uint8 after each of its two passes, the baseline once.
PIXEL_LEVEL_TOLERANCE = 3.0
WIDE_BLUR_SIGMA = (1.0, 2.0)           # pixels: every blur moves the texture by tens of levels
WIDE_BLUR_WINDOW_FRACTION = 0.25       # a 9-pixel window of the 32-pixel crop


def test_pyav_decodes_the_requested_frames(tmp_path):
    path = write_vp9(str(tmp_path / "v.webm"), coded_frames(0, 30))
    wanted = np.array([1, 3, 5, 24, 26, 29])
    frames = decode_frames(path, wanted)
    assert frames.shape == (6, 48, 64, 3)
    assert list(np.round((frames[..., 0].mean(axis=(1, 2)) - 8) / 8).astype(int)) == list(wanted)


def test_numpy_crop_flips_with_a_reversed_roi():
    clip = np.tile(np.arange(64, dtype=np.uint8)[None, None, :, None], (2, 48, 1, 3))
    plain = crop_resize(clip, np.array([0, 10]), np.array([48, 42]), 16)
    flipped = crop_resize(clip, np.array([0, 42]), np.array([48, 10]), 16)
    assert np.array_equal(plain[:, :, ::-1], flipped)
    assert plain[0, 0, 0, 0] < plain[0, 0, -1, 0]


def dali_and_baseline(videos, aug: AugParams) -> list[tuple]:
    """(query, key, DALI's, baseline's) per view of every batch of both pipelines on the same draws."""
    dali = pretrain_loader(videos, clip=CLIP, batch_size=4, shard=Sharding(seed=2), aug=aug)
    expected = [(b.query.clone(), b.key.clone(), b.index.clone()) for b in dali]
    got = list(pyav_pretrain_loader(dali.sampler, None, num_workers=0))
    assert len(got) == len(expected) > 0
    pairs = []
    for (query, key, index), (b_query, b_key, _, b_index) in zip(expected, got, strict=True):
        assert torch.equal(index, b_index) and b_query.dtype == torch.float32
        pairs += [(query, b_query), (key, b_key)]
    return pairs


def test_baseline_matches_the_dali_pipeline_colour(coded_videos, static_videos):
    aug = AugParams(blur_p=0.0, **RAW_SCALE)
    for dali, ours in dali_and_baseline(coded_videos[:4] + static_videos[:4], aug):
        assert (dali - ours).abs().mean() < MEAN_LEVEL_TOLERANCE


def test_baseline_matches_the_dali_pipeline_blur(textured_videos):
    """Every clip blurred, on a texture the blur changes everywhere: borders included, pixel by pixel."""
    aug = AugParams(jitter_p=0.0, grayscale_p=0.0, blur_p=1.0, blur_sigma=WIDE_BLUR_SIGMA,
                    blur_window_fraction=WIDE_BLUR_WINDOW_FRACTION, **RAW_SCALE)
    for dali, ours in dali_and_baseline(textured_videos, aug):
        assert (dali - ours).abs().max() <= PIXEL_LEVEL_TOLERANCE


def test_baseline_in_worker_processes(coded_videos):
    aug = dataclasses.replace(AugParams(), **RAW_SCALE)
    dali = pretrain_loader(coded_videos, clip=CLIP, batch_size=2, aug=aug)
    loader = pyav_pretrain_loader(dali.sampler, None, epochs=2, num_workers=2)
    # the workers start from a fork server: a fork would copy DALI's and CUDA's threads mid-flight
    assert loader.multiprocessing_context.get_start_method() == "forkserver"
    batches = list(loader)
    assert len(batches) == 2 * len(dali)
    assert batches[0][0].shape == (2, 3, 4, 32, 32)
