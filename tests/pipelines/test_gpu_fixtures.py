"""The GPU tests' videos (lossy VP9 at a size NVDEC takes) keep what those tests read from them,
checked here on the CPU so that a GPU test failing on them points at the pipeline."""
import numpy as np

from data.video_io import read_video
from tests.pipelines.conftest import GPU_VP9, GREEN0, GREEN_STEP, NVDEC_SIZE, RED0, RED_STEP

MAX_CODING_ERROR = 3       # levels: the RGB <-> YUV round trip alone moves values this far


def test_gpu_videos_are_lossy_vp9_at_nvdec_size():
    assert "lossless" not in GPU_VP9 and int(GPU_VP9["crf"]) > 0


def test_gpu_coded_videos_keep_their_frame_and_video_numbers(gpu_coded_videos):
    for number, video in enumerate(gpu_coded_videos):
        frames = read_video(video.path).astype(np.float32)
        assert frames.shape[1:3] == NVDEC_SIZE
        red = frames[..., 0].mean(axis=(1, 2))
        assert np.array_equal(np.round((red - RED0) / RED_STEP), np.arange(len(frames)))
        green = np.round((frames[..., 1] - GREEN0) / GREEN_STEP)
        assert np.all(green == number)
        assert np.abs(red - (RED0 + RED_STEP * np.arange(len(frames)))).max() <= MAX_CODING_ERROR


def test_gpu_static_videos_decode_to_identical_frames(gpu_static_videos):
    for video in gpu_static_videos:
        frames = read_video(video.path)
        assert np.all(frames == frames[:1])
