"""Writing and reading video files with PyAV.

Frames are RGB uint8 arrays in HWC layout; a whole clip is THWC.

Codecs (``CODECS``): ``vp9`` (.webm) and ``mjpeg`` (.avi) decode on DALI's CPU
path; ``h264`` (.mp4) needs the GPU decoder. Encoders run single-threaded so
the same frames always give the same bytes.

``stream_fps`` and ``expected_frames`` are the stream arithmetic the index and the transcoder share:
a stream's frame rate, and how many frames its container promises.

``nvdec_problem`` says whether DALI's GPU decoder (NVDEC) takes a video, by codec,
frame size, chroma format and bit depth, so the index can name such files before training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

RGB_CHANNELS = 3
# Frames a duration-based estimate may exceed the decoded count by (rounding of
# the container duration), as a fraction of the estimate, at least one frame.
DURATION_TOLERANCE_FRACTION = 0.02
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
# Codecs DALI 2.4's GPU video decoder takes (FFmpeg's names). MPEG-2 is not among them,
# although NVDEC itself decodes it.
NVDEC_CODECS = frozenset({"h264", "hevc", "mpeg4", "vp8", "vp9", "mjpeg", "av1"})
# NVDEC's smallest frame (width, height) per codec, from the capability table of NVIDIA's Video
# Codec SDK decoder guide; DALI's GPU decoder refuses smaller videos ("Video is too small").
NVDEC_MIN_SIZE = {"h264": (48, 16), "hevc": (144, 144), "vp8": (48, 16), "vp9": (128, 128),
                  "av1": (128, 128), "mpeg4": (48, 16)}

CHROMA_400, CHROMA_420, CHROMA_422, CHROMA_444 = "4:0:0", "4:2:0", "4:2:2", "4:4:4"
BITS_8, BITS_10, BITS_12 = 8, 10, 12
# (chroma format, bit depth) pairs NVDEC decodes per codec on EVERY NVIDIA GPU since Turing,
# from the NVDEC Application Note's hardware capability table and the decoder capability matrix
# of the Video Codec SDK's NVDEC programming guide. Deliberately conservative: a given GPU can
# decode more (query it with cuvidGetDecoderCaps), e.g. Blackwell adds H.264 High10/High422 and
# HEVC 4:2:2, which this table refuses because older GPUs cannot decode them.
NVDEC_FORMATS: dict[str, frozenset[tuple[str, int]]] = {
    "h264": frozenset({(CHROMA_420, BITS_8)}),
    "hevc": frozenset((chroma, bits) for chroma in (CHROMA_420, CHROMA_444)
                      for bits in (BITS_8, BITS_10, BITS_12)),
    "vp9": frozenset((CHROMA_420, bits) for bits in (BITS_8, BITS_10, BITS_12)),
    "av1": frozenset({(CHROMA_420, BITS_8), (CHROMA_420, BITS_10)}),
    "vp8": frozenset({(CHROMA_420, BITS_8)}),
    "mpeg4": frozenset({(CHROMA_420, BITS_8)}),
    "mjpeg": frozenset((chroma, BITS_8) for chroma in (CHROMA_400, CHROMA_420, CHROMA_422, CHROMA_444)),
}
# What wider support exists on some GPUs, for the refusal messages.
NVDEC_NEWER_GPU_FORMATS = {
    "h264": "4:2:2 and 10-bit only on Blackwell GPUs",
    "hevc": "4:2:2 only on Blackwell GPUs",
}
# Codecs DALI's GPU decoder takes whose NVDEC is missing on some GPUs since Turing: the
# application note lists AV1 decoding for Ampere GA10x, Ada and Blackwell only, not for
# Turing, A100 (GA100) or Hopper (H100, H200).
NVDEC_NOT_ON_EVERY_GPU = {
    "av1": "AV1 is decoded by NVDEC on Ampere GA10x, Ada and Blackwell GPUs only, "
           "not on Turing, A100 or Hopper (H100/H200)",
}
# Chroma subsampling (horizontal, vertical factor) -> its J:a:b name.
CHROMA_BY_SUBSAMPLING = {(1, 1): CHROMA_444, (2, 1): CHROMA_422, (2, 2): CHROMA_420,
                         (1, 2): "4:4:0", (4, 1): "4:1:1", (4, 4): "4:1:0"}
# Any width or height divisible by every subsampling factor, to read the factors off a pixel format.
SUBSAMPLING_PROBE = 64


def pixel_layout(pix_fmt: str) -> tuple[str, int]:
    """Chroma format ('4:2:0', ...; '4:0:0' for gray) and bit depth of an FFmpeg pixel format.

    Full-range ('yuvj...') and semi-planar (nv12, p010) variants have their plain format's
    chroma. Raises ValueError for names FFmpeg does not know and for RGB, palette, Bayer,
    bitstream and alpha formats, which no video decoder here outputs as YUV."""
    try:
        fmt = av.VideoFormat(pix_fmt)
    except (ValueError, TypeError) as error:
        raise ValueError(f"unknown pixel format {pix_fmt!r}") from error
    if fmt.is_rgb or fmt.has_palette or fmt.is_bayer or fmt.is_bit_stream:
        raise ValueError(f"pixel format {pix_fmt} is not YUV or gray")
    if any(component.is_alpha for component in fmt.components):
        raise ValueError(f"pixel format {pix_fmt} has an alpha channel")
    bits = fmt.components[0].bits
    if len(fmt.components) == 1:
        return CHROMA_400, bits
    factors = (SUBSAMPLING_PROBE // fmt.chroma_width(SUBSAMPLING_PROBE),
               SUBSAMPLING_PROBE // fmt.chroma_height(SUBSAMPLING_PROBE))
    return CHROMA_BY_SUBSAMPLING.get(factors, f"{factors[0]}x{factors[1]}-subsampled"), bits


def nvdec_problem(codec: str, width: int, height: int, pix_fmt: str) -> str:
    """Why DALI's GPU decoder (NVDEC) cannot decode this video ('' when it can): a codec it does
    not take, a frame below NVDEC's minimum for the codec, or a chroma format or bit depth that
    not every NVDEC since Turing decodes for that codec (see ``NVDEC_FORMATS``)."""
    if codec not in NVDEC_CODECS:
        return f"codec {codec} is not decoded by DALI's GPU decoder (it takes {', '.join(sorted(NVDEC_CODECS))})"
    minimum = NVDEC_MIN_SIZE.get(codec)
    if minimum is not None and (width < minimum[0] or height < minimum[1]):
        return f"{codec} {width}x{height} is below NVDEC's minimum of {minimum[0]}x{minimum[1]}"
    if codec in NVDEC_NOT_ON_EVERY_GPU:
        return NVDEC_NOT_ON_EVERY_GPU[codec]
    return _nvdec_format_problem(codec, pix_fmt)


def describe_formats(formats: frozenset[tuple[str, int]]) -> str:
    """(chroma, bits) pairs as text, bit depths grouped per chroma format: '4:2:0 8/10-bit, 4:4:4 8-bit'."""
    depths: dict[str, list[int]] = {}
    for chroma, bits in sorted(formats):
        depths.setdefault(chroma, []).append(bits)
    return ", ".join(f"{chroma} {'/'.join(map(str, bits))}-bit" for chroma, bits in depths.items())


def _nvdec_format_problem(codec: str, pix_fmt: str) -> str:
    """Why NVDEC cannot decode ``codec`` in this pixel format ('' when it can)."""
    if not pix_fmt:
        return f"{codec} video of unknown pixel format: NVDEC support cannot be checked"
    try:
        chroma, bits = pixel_layout(pix_fmt)
    except ValueError as error:
        return f"{codec} {error}: not one NVDEC decodes"
    allowed = NVDEC_FORMATS[codec]
    if (chroma, bits) in allowed:
        return ""
    accepted = describe_formats(allowed)
    newer = f"; {NVDEC_NEWER_GPU_FORMATS[codec]}" if codec in NVDEC_NEWER_GPU_FORMATS else ""
    return (f"{codec} {pix_fmt} is {chroma} {bits}-bit; NVDEC decodes {codec} as {accepted} "
            f"on every GPU since Turing{newer}")


def stream_fps(stream) -> float:
    """A video stream's frame rate (average, else guessed, else base rate); 0.0 when none is known."""
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def expected_frames(container, stream, fps: float) -> tuple[int, int]:
    """Frames the container promises and how many of them may be missing without calling it corrupt
    (0, 0 when it promises nothing)."""
    if stream.frames and stream.frames > 0:
        return int(stream.frames), 0
    single_stream = len(container.streams) == 1
    if single_stream and container.duration and fps > 0:
        estimate = int(round(container.duration / av.time_base * fps))
        return estimate, max(1, int(round(DURATION_TOLERANCE_FRACTION * estimate)))
    return 0, 0


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

    def __enter__(self) -> VideoWriter:
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
