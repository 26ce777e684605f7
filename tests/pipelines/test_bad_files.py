"""Bad videos give a clear error naming them, or a logged skip, before any decoding; never a hang."""
import os
import re

import av
import numpy as np
import pytest

from data.filelist import write_file_list
from data.index import build_index
from data.video_io import write_video
from pipelines.loader import eval_clips_loader, pretrain_loader, train_clips_loader
from pipelines.params import ClipGeometry, Sharding
from pipelines.videos import VideoMeta, videos_from_index, warn_single_clip_videos
from tests.pipelines.conftest import FPS, GOP, NVDEC_SIZE, coded_frames, write_vp9

SPAN = 7           # frames 4, stride 2
CLIP_SETTINGS = dict(clip=ClipGeometry(frames=4, stride=2, crop=32), batch_size=1)   # SPAN frames a clip
GOOD_FRAMES = 30
GOOD_VIDEOS = 3
DAMAGE_SEED = 0    # its epoch order puts the damaged video last


def corrupt(path):
    with open(path, "wb") as f:
        f.write(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())


def truncated(path):
    write_vp9(path, coded_frames(0, GOOD_FRAMES))
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 3])


def audio_only(path):
    with av.open(path, "w") as container:
        stream = container.add_stream("libopus", rate=48000)
        samples = np.zeros((1, 960), dtype=np.float32)
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
            frame.sample_rate, frame.pts = 48000, i * 960
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def too_short(path):
    write_vp9(path, coded_frames(0, SPAN - 2))


def h264(path):
    write_video(path, coded_frames(0, GOOD_FRAMES), FPS, "h264", GOP)


BAD = {"corrupt.webm": (corrupt, "corrupt|cannot open"), "truncated.webm": (truncated, "corrupt"),
       "audio.webm": (audio_only, "no video stream"), "short.webm": (too_short, "too short"),
       "h264.mp4": (h264, "codecs DALI cannot decode on the CPU")}


def dataset(root, bad_name):
    write_vp9(os.path.join(root, "good.webm"), coded_frames(1, GOOD_FRAMES))
    make, _ = BAD[bad_name]
    make(os.path.join(root, bad_name))
    list_path = os.path.join(root, "list.txt")
    write_file_list(list_path, [("good.webm", 0), (bad_name, 1)])
    return build_index(list_path, cache=False)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bad_name", sorted(BAD))
def test_bad_video_is_named_in_the_error(tmp_path, bad_name):
    index = dataset(str(tmp_path), bad_name)
    with pytest.raises(ValueError, match=bad_name) as error:
        videos_from_index(index, min_frames=SPAN, device="cpu")
    assert re.search(BAD[bad_name][1], str(error.value))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("bad_name", sorted(BAD))
def test_bad_video_is_skipped_with_a_warning(tmp_path, bad_name, caplog):
    index = dataset(str(tmp_path), bad_name)
    with caplog.at_level("WARNING"):
        videos = videos_from_index(index, min_frames=SPAN, device="cpu", skip_bad=True)
    assert [os.path.basename(v.path) for v in videos] == ["good.webm"]
    assert bad_name in caplog.text


def gpu_dataset(root):
    """A VP9 video NVDEC decodes, a VP9 video below its 128x128 minimum, and a small H.264 one
    above its 48x16 minimum."""
    write_vp9(os.path.join(root, "big.webm"), coded_frames(0, GOOD_FRAMES, NVDEC_SIZE))
    write_vp9(os.path.join(root, "small.webm"), coded_frames(1, GOOD_FRAMES))
    h264(os.path.join(root, "h264.mp4"))
    list_path = os.path.join(root, "list.txt")
    write_file_list(list_path, [("big.webm", 0), ("small.webm", 1), ("h264.mp4", 0)])
    return build_index(list_path, cache=False)


def test_videos_too_small_for_nvdec_are_named_for_the_gpu_only(tmp_path):
    index = gpu_dataset(str(tmp_path))
    with pytest.raises(ValueError, match=r"1 videos cannot be decoded by the GPU decoder \(NVDEC\): small\.webm "
                                         r"\(vp9 64x48 is below NVDEC's minimum of 128x128\); re-encode them "
                                         r"to 8-bit 4:2:0 .*--codec h264"):
        videos_from_index(index, min_frames=SPAN, device="gpu")
    with pytest.raises(ValueError, match="h264.mp4") as on_cpu:    # the CPU names the codec, not the size
        videos_from_index(index, min_frames=SPAN, device="cpu")
    assert "NVDEC" not in str(on_cpu.value)


def test_gpu_codecs_and_sizes_pass_the_check_for_the_gpu(tmp_path, caplog):
    with caplog.at_level("WARNING"):
        videos = videos_from_index(gpu_dataset(str(tmp_path)), min_frames=SPAN, device="gpu", skip_bad=True)
    assert [os.path.basename(v.path) for v in videos] == ["big.webm", "h264.mp4"]
    assert "small.webm (vp9 64x48 is below NVDEC's minimum of 128x128)" in caplog.text


def test_nothing_usable_left_is_an_error(tmp_path):
    index = dataset(str(tmp_path), "short.webm")
    with pytest.raises(ValueError, match="no usable video"):
        videos_from_index(index, min_frames=GOOD_FRAMES + 1, device="cpu", skip_bad=True)


def listed_video(name: str, frames: int) -> VideoMeta:
    """A video as an index lists it; the file is never opened."""
    return VideoMeta(f"/data/{name}", 0, frames, 64, 48)


@pytest.mark.parametrize("builder", [pretrain_loader, train_clips_loader, eval_clips_loader])
def test_every_video_shorter_than_a_clip_is_named_up_front(builder):
    videos = [listed_video("long.webm", GOOD_FRAMES), listed_video("short_a.webm", SPAN - 1),
              listed_video("short_b.webm", 2)]
    with pytest.raises(ValueError) as error:
        builder(videos, **CLIP_SETTINGS)
    message = str(error.value)
    assert f"/data/short_a.webm ({SPAN - 1} frames)" in message and "/data/short_b.webm (2 frames)" in message
    assert f"spans {SPAN} frames" in message and "long.webm" not in message


def test_only_videos_with_room_for_exactly_one_start_are_warned_about(caplog):
    videos = [listed_video("exact.webm", SPAN), listed_video("short.webm", SPAN - 1),
              listed_video("long.webm", SPAN + 1)]
    with caplog.at_level("WARNING"):
        assert warn_single_clip_videos(videos, SPAN) == 1
    assert "exact.webm" in caplog.text and "short.webm" not in caplog.text and "long.webm" not in caplog.text


@pytest.mark.timeout(60)
@pytest.mark.parametrize("damage", ["truncated", "missing"])
def test_a_file_damaged_after_indexing_fails_naming_its_own_batch(tmp_path, damage):
    """The damaged file sits in the last of several batches: the feed reads it ahead (DALI
    prefetches) while an earlier batch runs, yet the error names its batch, not that one."""
    good = [write_vp9(str(tmp_path / f"good{v}.webm"), coded_frames(v, GOOD_FRAMES)) for v in range(GOOD_VIDEOS)]
    bad = str(tmp_path / "later.webm")
    if damage == "truncated":
        truncated(bad)
    videos = [VideoMeta(path, 0, GOOD_FRAMES, 64, 48) for path in good] + [VideoMeta(bad, 1, GOOD_FRAMES, 64, 48)]
    loader = pretrain_loader(videos, **CLIP_SETTINGS, shard=Sharding(seed=DAMAGE_SEED))
    bad_step = [int(loader.sampler.batch_positions(0, step)[1][0]) for step in range(len(loader))].index(len(good))
    assert len(loader) >= 3 and bad_step == len(loader) - 1
    with pytest.raises((RuntimeError, OSError)) as error:
        for _ in loader:
            pass
    message = str(error.value)
    assert "later.webm" in message and f"epoch 0 step {bad_step} " in message
    assert "good" not in message
