"""The pretraining pipeline on the CPU: frame-exact clips, sharding, crops, FAME branches, augmentation."""
import dataclasses
import weakref

import numpy as np
import pytest
import torch
from nvidia.dali import Pipeline

import fame
import pipelines.loader as loader_module
from pipelines.fame_stage import FameStage
from pipelines.loader import DeviceHandOver, PretrainBatch, pretrain_loader
from pipelines.params import AugParams, ClipGeometry, Runtime, Sharding
from tests.pipelines.conftest import (
    CODED_FRAMES,
    GREEN0,
    GREEN_STEP,
    RAW_AUG,
    RED_PER_X,
    frame_numbers,
    green_codes,
    video_number,
)

FRAMES, STRIDE, CROP, BATCH = 4, 2, 32, 3
CLIP = ClipGeometry(FRAMES, STRIDE, CROP)
ALWAYS = AugParams(flip_p=0.5, grayscale_p=0.5, jitter_p=1.0, blur_p=1.0)


def loader(videos, *, batch_size=BATCH, rank=0, world=1, **options):
    settings = {"aug": RAW_AUG, **options}
    return pretrain_loader(videos, clip=CLIP, batch_size=batch_size, runtime=Runtime(device="cpu"),
                           shard=Sharding(seed=0, rank=rank, world=world), **settings)


def batches(videos, epoch=0, **options):
    data = loader(videos, **options)
    data.set_epoch(epoch)
    return list(data), data


def test_two_clips_of_the_same_video_at_the_right_frames(coded_videos):
    got, data = batches(coded_videos)
    assert len(got) == len(data) == len(coded_videos) // BATCH
    for step, batch in enumerate(got):
        plan = data.sampler.plan(0, step)
        for i in range(BATCH):
            video = int(batch.index[i])
            assert int(batch.label[i]) == coded_videos[video].label
            starts = plan["starts"][i]
            for clip, start in ((batch.query[i], starts[0]), (batch.key[i], starts[1])):
                assert video_number(clip) == video
                assert list(frame_numbers(clip)) == list(start + STRIDE * np.arange(FRAMES))
            assert starts[0] != starts[1]
            assert max(starts) + STRIDE * (FRAMES - 1) < CODED_FRAMES[video]


def test_shapes_dtypes_and_normalisation(coded_videos):
    aug = dataclasses.replace(RAW_AUG, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    (batch, *_), _ = batches(coded_videos, aug=aug)
    assert isinstance(batch, PretrainBatch)
    assert batch.query.shape == batch.key.shape == (BATCH, 3, FRAMES, CROP, CROP)
    assert batch.query.dtype == torch.float32 and batch.label.dtype == batch.index.dtype == torch.int64
    raw, _ = batches(coded_videos)
    mean = torch.tensor(aug.mean).view(3, 1, 1, 1)
    std = torch.tensor(aug.std).view(3, 1, 1, 1)
    expected = (raw[0].query / 255 - mean) / std
    assert torch.allclose(batch.query, expected, atol=1e-4)


def test_ranks_read_disjoint_videos_for_the_same_number_of_steps(coded_videos):
    world = 2
    seen, lengths = [], []
    for rank in range(world):
        got, data = batches(coded_videos, epoch=1, batch_size=2, rank=rank, world=world)
        lengths.append(len(data))
        seen.append({int(i) for b in got for i in b.index})
        for b in got:
            for i in range(len(b.index)):
                assert video_number(b.query[i]) == int(b.index[i]) == video_number(b.key[i])
    assert lengths[0] == lengths[1] == (len(coded_videos) // world) // 2
    assert not seen[0] & seen[1]


def test_epochs_shuffle_differently(coded_videos):
    first, _ = batches(coded_videos, epoch=0)
    second, _ = batches(coded_videos, epoch=1)
    assert [b.index.tolist() for b in first] != [b.index.tolist() for b in second]


def test_crop_window_and_flip_follow_the_draws(static_videos):
    aug = dataclasses.replace(RAW_AUG, crop_area=(0.3, 0.6), crop_aspect=(3 / 4, 4 / 3), flip_p=0.5)
    got, data = batches(static_videos, batch_size=2, aug=aug)
    checked_flips = set()
    for step, batch in enumerate(got):
        plan = data.sampler.plan(0, step)
        for i in range(2):
            for clip, view in ((batch.query[i], "q"), (batch.key[i], "k")):
                x_start, x_end = plan[f"roi_start_{view}"][i][1], plan[f"roi_end_{view}"][i][1]
                red = clip[0, 0].mean(dim=0).numpy()          # along x, averaged over y
                pixel = (x_end - x_start) / CROP
                expected = RED_PER_X * (x_start + pixel * (np.arange(CROP) + 0.5) - 0.5)
                assert np.abs(red - expected).max() < 3 * RED_PER_X
                checked_flips.add(bool(x_start > x_end))
    assert checked_flips == {True, False}


def test_augmentation_is_temporally_consistent(static_videos):
    cfg = fame.FameConfig(branches="both")
    got, _ = batches(static_videos, batch_size=2, aug=ALWAYS, fame_cfg=cfg)
    for batch in got:
        for clips in (batch.query, batch.key):
            for t in range(1, FRAMES):
                assert torch.equal(clips[:, :, t], clips[:, :, 0])
    plain, _ = batches(static_videos, batch_size=2, aug=RAW_AUG)
    assert not torch.allclose(got[0].query, plain[0].query)       # the augmentation did something


def own_pixels(batch_clips, index):
    """Fraction of pixels per clip whose green code is the clip's own video."""
    assert len(batch_clips) == len(index) > 0
    return np.array([(green_codes(clip) == int(i)).mean() for clip, i in zip(batch_clips, index, strict=True)])


@pytest.mark.parametrize("branches", ["one", "both"])
def test_inter_video_fame_merges_the_configured_branches(coded_videos, branches):
    beta = 0.5
    cfg = fame.FameConfig(beta=beta, branches=branches)
    got, _ = batches(coded_videos, fame_cfg=cfg, return_masks=True)
    for batch in got:
        assert np.allclose(own_pixels(batch.query, batch.index), beta)
        key_own = own_pixels(batch.key, batch.index)
        assert np.allclose(key_own, beta) if branches == "both" else np.all(key_own == 1.0)
        assert batch.masks.shape == (BATCH, CROP, CROP) and batch.masks.dtype == torch.uint8
        assert torch.all(batch.masks.sum(dim=(1, 2)) == int(beta * CROP * CROP))
        kept = batch.masks.bool()[:, None, :, :, None].expand_as(batch.merged)
        assert torch.equal(batch.merged[kept], batch.original[kept])
        # the colour stage works in float: an identity twist is exact to float rounding
        assert torch.allclose(batch.merged.permute(0, 4, 1, 2, 3).float(), batch.query, atol=1e-3)


def test_beta_warmup_merges_less_at_the_first_steps(coded_videos):
    beta, warmup = 0.3, 2
    cfg = fame.FameConfig(beta=beta, beta_warmup_epochs=warmup, steps_per_epoch=1)
    got, data = batches(coded_videos, fame_cfg=cfg)
    assert len(got) > warmup
    for step, batch in enumerate(got):
        expected = cfg.at_step(step).beta
        assert np.allclose(own_pixels(batch.query, batch.index), int(expected * CROP * CROP) / CROP**2), step
    assert np.allclose(own_pixels(got[0].query, got[0].index), 1.0)


def test_intra_video_fame_takes_the_background_from_the_key(coded_videos):
    cfg = fame.FameConfig(beta=0.3, background="intra")
    got, _ = batches(coded_videos, fame_cfg=cfg, return_masks=True)
    for batch in got:
        assert np.all(own_pixels(batch.query, batch.index) == 1.0)
        background = ~batch.masks.bool()
        for i in range(BATCH):
            for t in range(FRAMES):
                query_red, key_red = batch.query[i, 0, t], batch.key[i, 0, t]
                assert torch.allclose(query_red[background[i]], key_red[background[i]])


@pytest.mark.parametrize("cfg", [None, fame.FameConfig(variant="none")])
def test_no_fame_leaves_the_query_alone(coded_videos, cfg):
    got, _ = batches(coded_videos, fame_cfg=cfg)
    assert all(np.all(own_pixels(b.query, b.index) == 1.0) for b in got)


def test_video_with_room_for_one_start_gives_two_identical_starts(coded_videos, caplog):
    span = STRIDE * (FRAMES - 1) + 1
    short = [dataclasses.replace(v, frames=span) for v in coded_videos[:BATCH]]
    with caplog.at_level("WARNING"):
        got, _ = batches(short)
    assert "room for one clip start only" in caplog.text
    for i in range(BATCH):
        assert list(frame_numbers(got[0].query[i])) == list(frame_numbers(got[0].key[i])) == [0, 2, 4, 6]


class RecordingStage(FameStage):
    """A FAME stage that records, per call, the batch keys it was given and the videos it got."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self.seen = []

    def apply(self, clips, seed, step):
        videos = [int(np.round((clip[..., 1].mean() - GREEN0) / GREEN_STEP)) for clip in clips[0]]
        self.seen.append((seed, step, videos))
        return super().apply(clips, seed, step)


def test_the_stage_gets_the_keys_of_the_batch_it_merges_with_pipelines_taking_turns_and_a_resume(coded_videos,
                                                                                              monkeypatch):
    """The keys reach the stage on the host, by call order: with prefetching pipelines taking
    turns, broken off and resumed mid-epoch, every call's keys are those the sampler planned
    for the very batch whose clips the call got, and the steps the loader served are all there."""
    settings = dict(clip=CLIP, batch_size=2, runtime=Runtime(pipelines=2, prefetch=3), shard=Sharding(), aug=RAW_AUG,
                    fame_cfg=fame.FameConfig())
    stages = []
    def recording_stage(cfg, **options):
        stages.append(RecordingStage(cfg))
        return stages[-1]
    monkeypatch.setattr(loader_module, "FameStage", recording_stage)
    first = pretrain_loader(coded_videos, **settings)
    for taken, _ in enumerate(first, start=1):
        if taken == 3:
            break
    resumed = pretrain_loader(coded_videos, **settings)
    first_stage, resumed_stage = stages
    resumed.load_state_dict(first.state_dict())           # epoch 0 step 3: the pipelines start at an odd step
    steps = len(first)
    served = 0
    for epoch in (0, 1):
        resumed.set_epoch(epoch)
        served += sum(1 for _ in resumed)
    planned = {}
    for epoch in range(3):       # the pipelines read ahead into the next epoch
        for step in range(steps):
            plan = first.sampler.plan(epoch, step)
            planned[(int(plan["fame_seed"][0]), int(plan["fame_step"][0]))] = [int(i) for i in plan["index"]]
    for stage in (first_stage, resumed_stage):
        for seed, step, videos in stage.seen:
            assert planned[(seed, step)] == videos, (seed, step)
    assert {step for _, step, _ in first_stage.seen} >= {0, 1, 2}
    assert {step for _, step, _ in resumed_stage.seen} >= set(range(3, 2 * steps)) and served == 2 * steps - 3


def test_a_shared_stage_is_not_a_python_function_by_itself():
    with pytest.raises(TypeError, match="for_pipeline"):
        FameStage(fame.FameConfig())([np.zeros((FRAMES, CROP, CROP, 3), np.uint8)])


class FakeEvent:
    """A CUDA event stand-in (no GPU here): it passes when the test says so."""

    def __init__(self):
        self.passed = self.waited = False

    def record(self, stream):
        self.stream = stream

    def query(self):
        return self.passed

    def synchronize(self):
        self.waited = self.passed = True


class Outputs:
    """Stands for one batch of DALI's outputs: the test watches whether anything still holds it."""


def test_gpu_outputs_are_held_until_torch_has_run_the_copies_of_them(monkeypatch):
    """DALI's GPU outputs are let go only once the event after their copies has passed,
    checked without waiting; closing waits for the last copy."""
    events = []
    monkeypatch.setattr(torch.cuda, "Event", lambda: events.append(FakeEvent()) or events[-1])
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: "torch's stream")
    handover = DeviceHandOver(torch.device("cuda", 0))
    batches = [Outputs() for _ in range(3)]
    alive = [weakref.ref(batch) for batch in batches]
    handover.hold(batches[0])
    handover.hold(batches[1])
    del batches[:2]
    assert [ref() is not None for ref in alive[:2]] == [True, True]
    assert events[0].stream == "torch's stream"
    events[0].passed = True
    handover.hold(batches.pop())
    assert [ref() is not None for ref in alive] == [False, True, True]
    handover.wait_all()
    assert events[-1].waited and not events[1].waited and [ref() for ref in alive] == [None, None, None]


class RanOnce(Exception):
    """Stops a pipeline run once its arguments are seen."""


def test_a_gpu_loader_runs_dali_on_torchs_current_stream(coded_videos, monkeypatch):
    """Pipeline.run(cuda_stream) orders DALI's outputs on torch's stream: no wait on the host."""
    streams = []

    def run(pipe, *stream):
        streams.append(stream)
        raise RanOnce

    monkeypatch.setattr(Pipeline, "run", run)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: f"stream of {device}")
    data = loader(coded_videos)
    data.device = torch.device("cuda", 0)
    with pytest.raises(RuntimeError, match="input pipeline"):
        next(iter(data))
    assert streams == [("stream of cuda:0",)]
