"""The GPU graphs (NVDEC decoding, GPU operators, CuPy FAME stage): run where a CUDA GPU exists."""
import dataclasses

import numpy as np
import pytest
import torch

import fame
from pipelines.loader import eval_clips_loader, pretrain_loader
from pipelines.params import AugParams, ClipGeometry, Runtime
from tests.pipelines.conftest import GREEN0, GREEN_STEP, RAW_AUG, frame_numbers, video_number

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

SETTINGS = dict(clip=ClipGeometry(frames=4, stride=2, crop=32), batch_size=3)


def pretrain_batches(videos, device, **options):
    return list(pretrain_loader(videos, runtime=Runtime(device=device), **dict(SETTINGS, **options)))


def test_gpu_pretraining_batches_live_on_the_gpu_and_match_the_cpu(gpu_coded_videos):
    gpu = pretrain_batches(gpu_coded_videos, "gpu", aug=RAW_AUG)
    cpu = pretrain_batches(gpu_coded_videos, "cpu", aug=RAW_AUG)
    assert len(gpu) == len(cpu)
    for g, c in zip(gpu, cpu, strict=True):
        assert g.query.is_cuda and g.key.is_cuda and g.label.is_cuda and g.index.is_cuda
        assert g.query.shape == c.query.shape and g.query.dtype == torch.float32
        assert torch.equal(g.index.cpu(), c.index)
        for i in range(len(c.index)):
            assert list(frame_numbers(g.query[i])) == list(frame_numbers(c.query[i]))
            assert video_number(g.key[i]) == int(c.index[i])


def green_code(clips: torch.Tensor) -> torch.Tensor:
    """Per-pixel video numbers of (N, T, H, W, 3) raw coded clips."""
    return torch.round((clips[..., 1].float() - GREEN0) / GREEN_STEP)


def test_gpu_fame_stage_merges_with_cupy(gpu_coded_videos):
    cfg = fame.FameConfig(beta=0.5)
    batches = pretrain_batches(gpu_coded_videos, "gpu", aug=RAW_AUG, fame_cfg=cfg, return_masks=True)
    for batch in batches:
        assert batch.masks.is_cuda
        assert torch.all(batch.masks.sum(dim=(1, 2)) == int(0.5 * 32 * 32))
        kept = batch.masks.bool()[:, None, :, :, None].expand_as(batch.merged)
        assert torch.equal(batch.merged[kept], batch.original[kept])
        background = ~batch.masks.bool()[:, None].expand_as(batch.merged[..., 1])
        assert torch.all(green_code(batch.merged)[background] != green_code(batch.original)[background])


def test_gpu_augmentation_is_temporally_consistent(gpu_static_videos):
    aug = AugParams(grayscale_p=0.5, jitter_p=1.0, blur_p=1.0)
    batches = pretrain_batches(gpu_static_videos, "gpu", batch_size=2, aug=aug,
                               fame_cfg=fame.FameConfig(branches="both"))
    for batch in batches:
        for t in range(1, batch.query.shape[2]):
            assert torch.equal(batch.query[:, :, t], batch.query[:, :, 0])


def test_gpu_test_clips(gpu_coded_videos):
    loader = eval_clips_loader(gpu_coded_videos, clip=ClipGeometry(frames=4, stride=3, crop=32), batch_size=6,
                               runtime=Runtime(device="gpu"), clips_per_video=3, aug=dataclasses.replace(RAW_AUG))
    seen = []
    for batch in loader:
        assert batch.clips.is_cuda and batch.clips.shape[1:] == (3, 4, 32, 32)
        seen += batch.video_index[::3].tolist()
    assert sorted(seen) == list(range(len(gpu_coded_videos)))
    assert np.all(np.diff(frame_numbers(batch.clips[0])) == 3)
