"""A failing DALI pipeline is blamed on the videos that changed since indexing, or on itself."""
import os

import numpy as np
import pytest
from nvidia.dali import Pipeline

import fame
from pipelines.fame_stage import FameStage
from pipelines.forensics import DALI_MESSAGE_CHARS, RECHECK_HINT, dali_message
from pipelines.loader import pretrain_loader
from pipelines.params import ClipGeometry
from pipelines.videos import VideoMeta
from tests.pipelines.conftest import HEIGHT, WIDTH, coded_frames, write_vp9

FRAMES = 30
INTACT = 2
SETTINGS = dict(clip=ClipGeometry(frames=4, stride=2, crop=32), batch_size=INTACT + 1)   # one batch of every video
DOCTOR = "make doctor"
# What DALI raises for a CUDA failure: boilerplate, the definition's traceback, the message, a C++ trace.
CUDA_FAILURE = """Critical error in pipeline:
Error in MIXED operator `nvidia.dali.fn.decoders.video`,
which was used in the pipeline definition with the following traceback:

  File "/work/main/pipelines/graphs.py", line 130, in _decode
    video = fn.decoders.video(feeds[ENCODED], frames=feeds["frames"], device="mixed")

encountered:

CUDA runtime API error cudaErrorInsufficientDriver (35):
CUDA driver version is insufficient for CUDA runtime version
C++ context: [/opt/dali/dali/core/cuda_error_handling.h:213]
Stacktrace (2 entries):
[frame 0]: /usr/lib/python3/site-packages/nvidia/dali/libdali.so(+0x1a2b3c) [0x7f00001a2b3c]
[frame 1]: /usr/lib/python3/site-packages/nvidia/dali/libdali.so(+0x4d5e6f) [0x7f00004d5e6f]

Current pipeline object is no longer valid."""


def videos_on_disk(root) -> list[VideoMeta]:
    """INTACT videos and one to be damaged, each listed as the index would list it."""
    names = [f"intact{v}.webm" for v in range(INTACT)] + ["damaged.webm"]
    paths = [write_vp9(os.path.join(root, name), coded_frames(v, FRAMES)) for v, name in enumerate(names)]
    return [VideoMeta(path, 0, FRAMES, WIDTH, HEIGHT) for path in paths]


def failure_of(loader) -> str:
    with pytest.raises(RuntimeError) as error:
        for _ in loader:
            pass
    return str(error.value)


@pytest.mark.timeout(60)
def test_a_video_overwritten_after_the_loader_was_built_is_named_as_bad(tmp_path):
    videos = videos_on_disk(tmp_path)
    loader = pretrain_loader(videos, **SETTINGS)
    damaged = videos[-1].path
    size = os.path.getsize(damaged)
    with open(damaged, "wb") as f:
        f.write(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes())
    message = failure_of(loader)
    assert "damaged.webm (cannot open" in message and "no longer read as indexed" in message
    assert RECHECK_HINT in message and "epoch 0 step 0" in message and "DALI said: " in message
    assert "intact" not in message and DOCTOR not in message


def test_a_cuda_failure_with_intact_videos_blames_the_pipeline_with_dalis_message(coded_videos, monkeypatch):
    def failing_run(self, *args, **kwargs):
        raise RuntimeError(CUDA_FAILURE)

    monkeypatch.setattr(Pipeline, "run", failing_run)
    message = failure_of(pretrain_loader(coded_videos, **SETTINGS))
    assert "the input pipeline itself failed at epoch 0 step 0, not its videos" in message
    assert DOCTOR in message and RECHECK_HINT not in message
    assert ("DALI said: Error in MIXED operator `nvidia.dali.fn.decoders.video`, CUDA runtime API error "
            "cudaErrorInsufficientDriver (35): CUDA driver version is insufficient for CUDA runtime version") in message
    assert "[frame" not in message and "Stacktrace" not in message and "graphs.py" not in message
    assert "C++ context" not in message and "Critical error" not in message


def test_an_operator_error_with_intact_videos_blames_the_pipeline(coded_videos, monkeypatch):
    def exploding(self, clips, seed, step):
        raise ValueError("the FAME stage exploded")

    monkeypatch.setattr(FameStage, "apply", exploding)
    message = failure_of(pretrain_loader(coded_videos, **SETTINGS, fame_cfg=fame.FameConfig()))
    assert "itself failed" in message and DOCTOR in message
    assert "the FAME stage exploded" in message and RECHECK_HINT not in message


def test_dali_messages_are_capped_and_never_empty():
    assert len(dali_message(RuntimeError("x" * (2 * DALI_MESSAGE_CHARS)))) < DALI_MESSAGE_CHARS + 10
    assert dali_message(RuntimeError()) == "RuntimeError without a message"
    assert dali_message(RuntimeError("plain words")) == "plain words"
