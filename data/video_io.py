"""Writing and reading video files with PyAV.

Frames are RGB uint8 arrays in HWC layout; a whole clip is THWC.

Codecs (``CODECS``): ``vp9`` (.webm) and ``mjpeg`` (.avi) decode on DALI's CPU
path; ``h264`` (.mp4) needs the GPU decoder. Encoders run single-threaded so
the same frames always give the same bytes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

RGB_CHANNELS = 3
# Largest denominator of the rational frame rate an fps is written as: keeps NTSC rates
# such as 29.97 exact (30000/1001).
MAX_RATE_DENOMINATOR = 1001


@dataclass(frozen=True)
class CodecSetting:
    """How one user-facing codec name is written: encoder, container extension, pixel format, options."""

    encoder: str
    extension: str
    pix_fmt: str
    options: dict = field(default_factory=dict)
    even_size: bool = False  # the encoder rejects odd widths or heights


CODECS: dict[str, CodecSetting] = {
    # Realtime VP9: fast single-pass encoding, constant quality, no hidden
    # alt-ref frames (so demuxed packets == shown frames).
    "vp9": CodecSetting("libvpx-vp9", ".webm", "yuv420p",
                        {"deadline": "realtime", "cpu-used": "8", "crf": "24", "b": "0",
                         "lag-in-frames": "0", "auto-alt-ref": "0", "row-mt": "0"}),
    "h264": CodecSetting("libx264", ".mp4", "yuv420p",
                         {"preset": "veryfast", "crf": "20", "bf": "0", "threads": "1"},
                         even_size=True),
    "mjpeg": CodecSetting("mjpeg", ".avi", "yuvj420p", {"q:v": "3"}),
}

# Codecs DALI 2.4 decodes on the CPU (everything else needs NVDEC on a GPU).
DALI_CPU_CODECS = frozenset({"vp8", "vp9", "mjpeg"})
# NVDEC's smallest frame (width, height) per codec, from the capability table of NVIDIA's Video
# Codec SDK decoder guide; DALI's GPU decoder refuses smaller videos ("Video is too small").
NVDEC_MIN_SIZE = {"h264": (48, 16), "hevc": (144, 144), "vp8": (48, 16), "vp9": (128, 128),
                  "av1": (128, 128), "mpeg4": (48, 16), "mpeg2video": (48, 16)}


def nvdec_size_problem(codec: str, width: int, height: int) -> str:
    """Why NVDEC cannot decode a ``codec`` video of this frame size ('' when it can)."""
    minimum = NVDEC_MIN_SIZE.get(codec)
    if minimum is None or (width >= minimum[0] and height >= minimum[1]):
        return ""
    return f"{codec} {width}x{height} is below NVDEC's minimum of {minimum[0]}x{minimum[1]}"


def codec_setting(codec: str) -> CodecSetting:
    """Look up a codec name, failing with the allowed names."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; allowed: {sorted(CODECS)}")
    return CODECS[codec]


class VideoWriter:
    """Encode RGB HWC uint8 frames into a file at a constant frame rate with a fixed keyframe interval.

    Use as a context manager; frames are time-stamped 0, 1, 2, ... in units of 1/fps.
    """

    def __init__(self, path: str | os.PathLike, codec: str, width: int, height: int,
                 fps: float, gop: int):
        setting = codec_setting(codec)
        if setting.even_size and (width % 2 or height % 2):
            raise ValueError(f"{path}: {codec} needs even frame sizes, got {width}x{height}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.size = (height, width)
        # bitexact: no random segment id or date in the header, so equal frames give equal files.
        self._container = av.open(str(self.path), mode="w", options={"fflags": "+bitexact"})
        rate = Fraction(fps).limit_denominator(MAX_RATE_DENOMINATOR)
        self._stream = self._container.add_stream(setting.encoder, rate=rate)
        self._stream.width = width
        self._stream.height = height
        self._stream.pix_fmt = setting.pix_fmt
        self._stream.time_base = 1 / rate
        self._stream.codec_context.gop_size = gop
        self._stream.codec_context.thread_count = 1
        self._stream.options = dict(setting.options, g=str(gop), keyint_min=str(gop))
        self._count = 0

    def write(self, frame: np.ndarray) -> None:
        if frame.shape != (*self.size, RGB_CHANNELS) or frame.dtype != np.uint8:
            raise ValueError(
                f"{self.path}: frame must be HWC uint8 {(*self.size, RGB_CHANNELS)}, "
                f"got {frame.shape} {frame.dtype}"
            )
        video_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        video_frame.pts = self._count
        self._count += 1
        for packet in self._stream.encode(video_frame):
            self._container.mux(packet)

    def close(self) -> None:
        if self._container is None:
            return
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._container = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float, codec: str, gop: int) -> None:
    """Write a THWC uint8 RGB clip to ``path``."""
    if frames.ndim != 4 or frames.shape[-1] != RGB_CHANNELS:
        raise ValueError(f"{path}: frames must be THWC with 3 channels, got shape {frames.shape}")
    _, height, width, _ = frames.shape
    with VideoWriter(path, codec, width, height, fps, gop) as writer:
        for frame in frames:
            writer.write(frame)


def read_video(path: str | os.PathLike) -> np.ndarray:
    """Decode every frame of the first video stream as a THWC uint8 RGB array."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: no video stream")
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    if not frames:
        raise ValueError(f"{path}: no frames decoded")
    return np.stack(frames)
