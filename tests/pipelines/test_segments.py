"""Decoding from the keyframe before a clip: the slices of a Matroska / WebM file the decoder is
handed decode to the very frames the whole file does, and the loader's batches do not change."""
import dataclasses

import numpy as np
import pytest
import torch
from nvidia.dali import fn, pipeline_def, types

from data.filelist import write_file_list
from data.index import build_index
from data.matroska import KeyframeCuts, NotSliceable, keyframe_cuts, playable_head
from data.video_io import write_video
from pipelines.loader import pretrain_loader
from pipelines.params import ClipGeometry, Runtime, Sharding
from pipelines.segments import decoder_input, plan_slices, read_encoded
from pipelines.videos import videos_from_index

# Noise frames: every group of pictures holds more than the 4 KiB after which FFmpeg's
# Matroska muxer starts a Cluster at a keyframe, so every keyframe is a cut.
FRAMES, GOP, HEIGHT, WIDTH, FPS = 48, 8, 64, 96, 15
SHIFT = 3       # pixels the noise moves per frame: the frames differ, the decoder has work to do


def noise_frames(count: int = FRAMES, seed: int = 0) -> np.ndarray:
    base = np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    return np.stack([np.roll(base, SHIFT * t, axis=1) for t in range(count)])


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """A VP9 WebM, an MJPEG AVI and an H.264 MP4 of the same noise, indexed."""
    root = tmp_path_factory.mktemp("segments")
    frames = noise_frames()
    for name, codec in (("noise.webm", "vp9"), ("noise.avi", "mjpeg"), ("noise.mp4", "h264")):
        write_video(root / name, frames, FPS, codec, GOP)
    write_file_list(root / "list.txt", [("noise.webm", 0), ("noise.avi", 0), ("noise.mp4", 0)])
    return root, build_index(root / "list.txt")


@pipeline_def(batch_size=1, num_threads=1, device_id=None, prefetch_queue_depth=1)
def _decoder():
    encoded = fn.external_source(name="encoded", dtype=types.UINT8)
    frames = fn.external_source(name="frames", dtype=types.INT32)
    return fn.decoders.video(encoded, frames=frames, pad_mode="none", device="cpu")


@pytest.fixture(scope="module")
def decode():
    """decode(encoded bytes, frame indices) -> FHWC uint8: DALI's CPU decoder, as the graphs use it."""
    pipe = _decoder()

    def run(encoded: np.ndarray, frames: np.ndarray) -> np.ndarray:
        pipe.feed_input("encoded", [encoded])
        pipe.feed_input("frames", [np.asarray(frames, np.int32)])
        (video,) = pipe.run()
        return np.array(video[0])

    return run


def test_the_webm_is_cut_at_every_keyframe_and_the_others_not_at_all(indexed):
    _, index = indexed
    webm, avi, mp4 = index.entries
    cuts = KeyframeCuts.decode(webm.cuts, webm.frames)
    assert list(cuts.first_frames) == list(range(0, FRAMES, GOP)) == list(webm.keyframe_indices())
    assert (avi.cuts, mp4.cuts) == ("", "") and list(mp4.keyframe_indices()) == list(range(0, FRAMES, GOP))
    assert webm.container == "matroska,webm" and avi.container == "avi"


@pytest.mark.parametrize("wanted", [
    [0, 2, 4, 6],                 # the first clip: no cut needed
    [21, 23, 25, 27],             # mid-video, from the keyframe at 16
    [40, 42, 44, 46, 47],         # the last frames
    [3, 5, 30, 32],               # two clips far apart: two slices, the frames between skipped
    [9, 11, 13, 15, 17, 19],      # across a keyframe: one slice
])
def test_a_clip_decoded_from_its_keyframe_equals_the_same_frames_decoded_from_the_start(indexed, decode, wanted):
    root, index = indexed
    video = videos_from_index(index, min_frames=1, device="cpu", skip_bad=True)[0]     # the WebM
    wanted = np.asarray(wanted, np.int32)
    encoded, shifted = decoder_input(video, wanted)
    whole = read_encoded(video.path)
    if wanted[0] >= GOP:
        assert len(encoded) < len(whole)
    assert np.array_equal(decode(encoded, shifted), decode(whole, wanted))


def test_slices_run_from_the_keyframe_before_each_run_of_frames_and_skip_whole_gops_only():
    cuts = KeyframeCuts(head=100, end=1000, frames=40, offsets=np.array([100, 300, 500, 700]),
                        first_frames=np.array([0, 10, 20, 30]))
    runs, shifted = plan_slices(cuts, np.array([12, 14]))
    assert runs == [(1, 2)] and list(shifted) == [2, 4]
    runs, shifted = plan_slices(cuts, np.array([8, 12]))          # the next GOP: nothing to skip
    assert runs == [(0, 2)] and list(shifted) == [8, 12]
    runs, shifted = plan_slices(cuts, np.array([2, 4, 33, 35]))   # GOPs 10-29 skipped
    assert runs == [(0, 1), (3, 4)] and list(shifted) == [2, 4, 13, 15]


def test_a_slice_is_a_file_of_its_own(indexed):
    """The head made a slice's head and the Clusters from a keyframe: a demuxer finds the video's
    frames from that keyframe on, and no index pointing into the whole file."""
    import av
    root, _ = indexed
    data = (root / "noise.webm").read_bytes()
    cuts = keyframe_cuts(data)
    piece = playable_head(data[:cuts.head]) + data[int(cuts.offsets[2]):cuts.end]
    path = root / "piece.webm"
    path.write_bytes(piece)
    with av.open(str(path)) as container:
        keys = [packet.is_keyframe for packet in container.demux(container.streams.video[0]) if packet.size]
    assert len(keys) == FRAMES - 2 * GOP and keys[0]


def test_files_that_are_not_matroska_have_no_cuts(indexed):
    root, _ = indexed
    for name in ("noise.avi", "noise.mp4"):
        with pytest.raises(NotSliceable):
            keyframe_cuts((root / name).read_bytes())


def test_the_loader_gives_the_same_batches_from_slices_as_from_whole_files(indexed):
    _, index = indexed
    video = videos_from_index(index, min_frames=1, device="cpu", skip_bad=True)[0]     # the WebM
    assert video.cuts
    videos = [video] * 4
    whole = [dataclasses.replace(video, cuts="")] * 4
    options = dict(clip=ClipGeometry(frames=4, stride=3, crop=32), batch_size=2, runtime=Runtime(device="cpu"),
                   shard=Sharding(seed=3))
    for epoch in (0, 1):
        sliced_loader, whole_loader = pretrain_loader(videos, **options), pretrain_loader(whole, **options)
        sliced_loader.set_epoch(epoch)
        whole_loader.set_epoch(epoch)
        for sliced, plain in zip(sliced_loader, whole_loader, strict=True):
            assert torch.equal(sliced.query, plain.query) and torch.equal(sliced.key, plain.key)
