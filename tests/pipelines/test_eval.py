"""Evaluation pipelines on the CPU: uniformly spaced test clips of every video once; training clips."""
import collections
import dataclasses

import numpy as np
import torch

from pipelines.loader import ClipBatch, EvalBatch, eval_clips_loader, train_clips_loader
from pipelines.params import ClipGeometry, Runtime, Sharding
from pipelines.sampler import uniform_clip_starts
from tests.pipelines.conftest import GREEN_PER_Y, RAW_AUG, RED_PER_X, count_graph_builds, frame_numbers, video_number

FRAMES, STRIDE, CROP, CLIPS = 4, 3, 32, 3
SPAN = STRIDE * (FRAMES - 1) + 1
CLIP = ClipGeometry(FRAMES, STRIDE, CROP)
CENTRE_FRACTION = 0.5
POSITION_TOLERANCE = 0.5    # frame pixels; averaged over a row or column the codec's level errors stay far below


def eval_loader(videos, **options):
    settings = dict(batch_size=2 * CLIPS, runtime=Runtime(device="cpu"), clips_per_video=CLIPS, aug=RAW_AUG)
    settings.update(options)
    return eval_clips_loader(videos, clip=CLIP, **settings)


def test_every_video_once_with_uniformly_spaced_clips(coded_videos):
    data = eval_loader(coded_videos)
    got = list(data)
    assert len(got) == len(data) == -(-len(coded_videos) // 2)
    assert len(got[-1].video_index) == CLIPS * (len(coded_videos) % 2 or 2)    # the short last batch
    clips_of = collections.defaultdict(list)
    for batch in got:
        assert isinstance(batch, EvalBatch)
        assert batch.clips.shape[1:] == (3, FRAMES, CROP, CROP) and batch.clips.dtype == torch.float32
        assert len(batch.label) == len(batch.video_index) == len(batch.clips)
        for clip, label, video in zip(batch.clips, batch.label, batch.video_index, strict=True):
            assert video_number(clip) == int(video) and int(label) == coded_videos[int(video)].label
            clips_of[int(video)].append(frame_numbers(clip))
    assert sorted(clips_of) == list(range(len(coded_videos)))
    for video, clips in clips_of.items():
        starts = uniform_clip_starts(coded_videos[video].frames, SPAN, CLIPS)
        assert [list(c) for c in clips] == [list(s + STRIDE * np.arange(FRAMES)) for s in starts]


def test_a_second_pass_sees_the_same_clips(coded_videos, monkeypatch):
    """... from the same pipelines, which read on into the replay."""
    builds = count_graph_builds(monkeypatch, "eval_clip_graph")
    data = eval_loader(coded_videos, runtime=Runtime(pipelines=2))
    first = [b.clips.clone() for b in data]
    second = [b.clips for b in data]
    assert len(first) == len(second) == len(data) and len(data) % 2 == 1   # a pass ends part-way through the turns
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert len(builds) == 2


def test_ranks_split_the_test_videos_without_overlap(coded_videos):
    seen = []
    for rank in range(2):
        data = eval_loader(coded_videos, shard=Sharding(rank=rank, world=2))
        seen.append([int(v) for b in data for v in b.video_index[::CLIPS]])
    assert sorted(seen[0] + seen[1]) == list(range(len(coded_videos)))


def resize_positions(start: float, side: float) -> np.ndarray:
    """Frame coordinates the CROP output pixels sample when [start, start + side) is resized to CROP."""
    return start + (np.arange(CROP) + 0.5) * side / CROP - 0.5


def test_centre_crop_is_centred(static_videos):
    batch = next(iter(eval_loader(static_videos, aug=RAW_AUG, centre_fraction=CENTRE_FRACTION)))
    video = static_videos[0]
    assert int(batch.video_index[0]) == 0      # no green offset
    side = CENTRE_FRACTION * min(video.width, video.height)
    x = batch.clips[0, 0, 0].mean(dim=0).numpy() / RED_PER_X
    y = batch.clips[0, 1, 0].mean(dim=1).numpy() / GREEN_PER_Y
    for got, length in ((x, video.width), (y, video.height)):
        expected = resize_positions((length - side) / 2, side)
        assert abs(got[0] - expected[0]) < POSITION_TOLERANCE and abs(got[-1] - expected[-1]) < POSITION_TOLERANCE


def test_training_clips_one_random_clip_per_video(coded_videos):
    data = train_clips_loader(coded_videos, clip=CLIP, batch_size=4, runtime=Runtime(device="cpu"),
                              shard=Sharding(seed=3), aug=dataclasses.replace(RAW_AUG, flip_p=0.5))
    data.set_epoch(2)
    got = list(data)
    assert len(got) == len(coded_videos) // 4
    seen = [int(i) for b in got for i in b.index]
    assert len(set(seen)) == len(seen)
    for batch in got:
        assert isinstance(batch, ClipBatch) and batch.clip.shape == (4, 3, FRAMES, CROP, CROP)
        assert len(batch.index) == len(batch.label) == 4
        for clip, index in zip(batch.clip, batch.index, strict=True):
            numbers = frame_numbers(clip)
            assert video_number(clip) == int(index)
            assert list(np.diff(numbers)) == [STRIDE] * (FRAMES - 1)
            assert numbers[-1] < coded_videos[int(index)].frames
