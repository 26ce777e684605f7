"""What NVDEC (DALI's GPU decoder) decodes, per codec, chroma format and bit depth, named before
training; and the automatic choice between GPU and CPU decoding."""
import subprocess
import sys

import av
import numpy as np
import pytest

from data.filelist import write_file_list
from data.index import VideoRecord, build_index
from data.video_io import NVDEC_MIN_SIZE, nvdec_problem, pixel_layout, write_video
from pipelines.videos import MIN_CPU_DECODE_CORES, SMALL_VIDEO_SIZE, choose_decoder, videos_from_index

FRAMES = 16
FPS = 15
GOP = 4
SMALL = (64, 48)          # width, height: above the H.264 and MJPEG minimum, below VP9's
HEVC_SIZE = (160, 160)    # above HEVC's 144x144 minimum
MANY_CORES = MIN_CPU_DECODE_CORES
FEW_CORES = MIN_CPU_DECODE_CORES - 1


def _frames(width: int, height: int, count: int = FRAMES) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (count, height, width, 3), dtype=np.uint8)


def _encode(path, encoder: str, pix_fmt: str, size=SMALL, options=None) -> None:
    """Encode a tiny clip with any PyAV encoder and pixel format (single-threaded)."""
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream(encoder, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.codec_context.thread_count = 1
        stream.options = options or {}
        for frame in _frames(width, height):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


X264 = {"preset": "ultrafast", "threads": "1"}
ENCODE_HEVC_10BIT = f"""
import sys
import av
import numpy as np
with av.open(sys.argv[1], "w") as container:
    stream = container.add_stream("libx265", rate={FPS})
    stream.width, stream.height, stream.pix_fmt = {HEVC_SIZE[0]}, {HEVC_SIZE[1]}, "yuv420p10le"
    stream.options = {{"preset": "ultrafast", "x265-params": "pools=none:frame-threads=1:log-level=error"}}
    for value in range(0, {FRAMES * 10}, 10):
        frame = np.full(({HEVC_SIZE[1]}, {HEVC_SIZE[0]}, 3), value, np.uint8)
        for packet in stream.encode(av.VideoFrame.from_ndarray(frame, "rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
"""


def _can_encode(encoder: str, pix_fmt: str) -> bool:
    try:
        return pix_fmt in {f.name for f in av.codec.Codec(encoder, "w").video_formats}
    except Exception:  # encoder not built into this PyAV
        return False


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """One tiny file per case, by name."""
    root = tmp_path_factory.mktemp("nvdec")
    write_video(root / "h264_420.mp4", _frames(*SMALL), FPS, "h264", GOP)
    _encode(root / "h264_444.mp4", "libx264", "yuv444p", options=X264)
    _encode(root / "h264_10bit.mp4", "libx264", "yuv420p10le", options=X264)
    _encode(root / "mpeg2.mpg", "mpeg2video", "yuv420p")
    _encode(root / "mjpeg_422.avi", "mjpeg", "yuvj422p")
    write_video(root / "vp9_small.webm", _frames(*SMALL), FPS, "vp9", GOP)
    if _can_encode("libx265", "yuv420p10le"):
        # In a process of its own, as the AV1 test in test_index does for its encoder: no
        # encoder threads are left in the test process.
        subprocess.run([sys.executable, "-c", ENCODE_HEVC_10BIT, str(root / "hevc_10bit.mp4")],
                       check=True, capture_output=True, timeout=120)
    return root


def _index(tmp_path, videos, names):
    list_path = tmp_path / "list.txt"
    write_file_list(list_path, [(str(videos / name), i) for i, name in enumerate(names)])
    return build_index(list_path, cache=False)


@pytest.mark.parametrize("pix_fmt, chroma, bits", [
    ("yuv420p", "4:2:0", 8), ("yuvj420p", "4:2:0", 8), ("nv12", "4:2:0", 8), ("yuvj422p", "4:2:2", 8),
    ("yuv444p", "4:4:4", 8), ("yuv420p10le", "4:2:0", 10), ("p010le", "4:2:0", 10),
    ("yuv444p12le", "4:4:4", 12), ("gray", "4:0:0", 8), ("yuv411p", "4:1:1", 8), ("yuv440p", "4:4:0", 8),
])
def test_pixel_layout_reads_chroma_and_bit_depth(pix_fmt, chroma, bits):
    assert pixel_layout(pix_fmt) == (chroma, bits)


@pytest.mark.parametrize("pix_fmt, why", [("rgb24", "not YUV"), ("yuva420p", "alpha"), ("bogus", "unknown")])
def test_pixel_layout_refuses_what_is_not_plain_yuv(pix_fmt, why):
    with pytest.raises(ValueError, match=why):
        pixel_layout(pix_fmt)


@pytest.mark.parametrize("codec, pix_fmt, message", [
    ("h264", "yuv420p", ""),
    ("h264", "yuvj420p", ""),
    ("h264", "yuv422p", "h264 yuv422p is 4:2:2 8-bit; NVDEC decodes h264 as 4:2:0 8-bit on every GPU since "
                        "Turing; 4:2:2 and 10-bit only on Blackwell"),
    ("hevc", "yuv444p12le", ""),
    ("hevc", "yuv422p10le", "4:2:2 only on Blackwell"),
    ("vp9", "yuv420p12le", ""),
    ("vp9", "yuv444p", "vp9 yuv444p is 4:4:4 8-bit; NVDEC decodes vp9 as 4:2:0 8/10/12-bit"),
    ("vp8", "yuv420p", ""),
    ("mpeg4", "yuv420p", ""),
    ("mjpeg", "gray", ""),
    ("mjpeg", "yuvj444p", ""),
    ("mjpeg", "yuv420p10le", "mjpeg yuv420p10le is 4:2:0 10-bit"),
    ("av1", "yuv420p", "not on Turing, A100 or Hopper"),
    ("mpeg2video", "yuv420p", "codec mpeg2video is not decoded by DALI's GPU decoder"),
    ("vp9", "yuva420p", "vp9 pixel format yuva420p has an alpha channel"),
    ("vp9", "rgb48le", "vp9 pixel format rgb48le is not YUV or gray"),
    ("vp9", "", "unknown pixel format"),
])
def test_nvdec_problem_follows_the_capability_table(codec, pix_fmt, message):
    problem = nvdec_problem(codec, 640, 480, pix_fmt)
    assert (problem == "") if not message else (message in problem), problem


def test_nvdec_minimum_size_comes_before_the_format():
    assert "mpeg2video" not in NVDEC_MIN_SIZE
    assert nvdec_problem("hevc", 128, 128, "yuv444p") == "hevc 128x128 is below NVDEC's minimum of 144x144"
    assert nvdec_problem("mjpeg", 8, 8, "yuvj420p") == ""    # NVDEC's JPEG decoder has no listed minimum


def test_the_index_records_what_nvdec_needs(tmp_path, videos):
    index = _index(tmp_path, videos, ["h264_420.mp4", "h264_444.mp4", "mjpeg_422.avi", "mpeg2.mpg"])
    assert [(r.codec, r.pix_fmt) for r in index.entries] == [
        ("h264", "yuv420p"), ("h264", "yuv444p"), ("mjpeg", "yuvj422p"), ("mpeg2video", "yuv420p")]


def test_h264_420_and_mjpeg_422_pass_for_the_gpu(tmp_path, videos):
    index = _index(tmp_path, videos, ["h264_420.mp4", "mjpeg_422.avi"])
    assert index.require_ok(device="gpu") is index
    assert [v.path.rsplit("/", 1)[-1] for v in videos_from_index(index, min_frames=FRAMES, device="gpu")] == [
        "h264_420.mp4", "mjpeg_422.avi"]


def test_h264_444_is_named_for_the_gpu_by_its_chroma(tmp_path, videos):
    index = _index(tmp_path, videos, ["h264_420.mp4", "h264_444.mp4"])
    with pytest.raises(ValueError) as info:
        index.require_ok(device="gpu")
    message = str(info.value)
    assert "1 videos cannot be decoded by the GPU decoder (NVDEC): " in message
    assert "h264_444.mp4 (h264 yuv444p is 4:4:4 8-bit" in message and "h264_420.mp4" not in message
    assert "re-encode them to 8-bit 4:2:0 (`.venv/bin/python -m runners.prepare transcode --list" in message
    assert "data.decode=cpu" not in message      # H.264 has no CPU decoder in DALI


def test_h264_10bit_is_named_for_the_gpu_by_its_bit_depth(tmp_path, videos):
    index = _index(tmp_path, videos, ["h264_10bit.mp4"])
    assert index.entries[0].pix_fmt == "yuv420p10le"
    with pytest.raises(ValueError, match=r"h264_10bit\.mp4 \(h264 yuv420p10le is 4:2:0 10-bit; .*10-bit only "
                                         r"on Blackwell"):
        index.require_ok(device="gpu")


def test_hevc_10bit_passes_for_the_gpu(tmp_path, videos):
    if not (videos / "hevc_10bit.mp4").exists():
        pytest.skip("this PyAV has no 10-bit libx265 encoder")
    index = _index(tmp_path, videos, ["hevc_10bit.mp4"])
    assert [(r.codec, r.pix_fmt) for r in index.entries] == [("hevc", "yuv420p10le")]
    assert index.require_ok(device="gpu") is index


def test_mpeg2_is_named_before_training_for_both_decoders(tmp_path, videos, caplog):
    index = _index(tmp_path, videos, ["h264_420.mp4", "mpeg2.mpg"])
    with pytest.raises(ValueError, match=r"mpeg2\.mpg \(codec mpeg2video is not decoded by DALI's GPU decoder"):
        index.require_ok(device="gpu")
    with pytest.raises(ValueError) as on_cpu:
        index.require_ok(device="cpu")
    assert "(h264, mpeg2video; CPU decodes" in str(on_cpu.value)
    assert "(mpeg2video: no DALI decoder takes it)" in str(on_cpu.value)
    index = _index(tmp_path, videos, ["vp9_small.webm", "mpeg2.mpg"])
    with caplog.at_level("WARNING"):
        kept = videos_from_index(index, min_frames=1, device="cpu", skip_bad=True)
    assert [v.path.rsplit("/", 1)[-1] for v in kept] == ["vp9_small.webm"]
    assert "mpeg2.mpg (codec mpeg2video is decoded by neither DALI decoder)" in caplog.text


def test_a_cpu_decodable_list_is_offered_cpu_decoding(tmp_path, videos):
    index = _index(tmp_path, videos, ["vp9_small.webm", "mjpeg_422.avi"])
    with pytest.raises(ValueError, match=r"vp9_small\.webm \(vp9 64x48 is below NVDEC's minimum of 128x128\).*"
                                         r"or decode on the CPU with data\.decode=cpu"):
        index.require_ok(device="gpu")
    assert index.require_ok(device="cpu") is index


def _record(codec: str, size=SMALL, pix_fmt: str = "yuv420p", name: str = "v") -> VideoRecord:
    """A good index record; no file behind it."""
    width, height = size
    return VideoRecord(path=f"/data/{name}", relpath=name, label=0, codec=codec, pix_fmt=pix_fmt,
                       width=width, height=height, frames=FRAMES, ok=True)


LARGE = (SMALL_VIDEO_SIZE[0] * 2, SMALL_VIDEO_SIZE[1] * 2)


def test_auto_decode_needs_nvdec_for_gpu_only_codecs():
    records = [_record("vp9", LARGE), _record("h264", LARGE)]
    assert choose_decoder(records, MANY_CORES) == ("gpu", "h264 needs NVDEC (DALI's CPU decoder takes mjpeg, vp8, vp9)")
    decode, reason = choose_decoder([_record("hevc"), _record("h264")], MANY_CORES)
    assert decode == "gpu" and reason.startswith("h264, hevc need NVDEC")


def test_auto_decode_uses_the_cpu_when_nvdec_cannot_decode_some_video():
    records = [_record("vp9", LARGE), _record("vp9", SMALL, name="tiny.webm")]
    decode, reason = choose_decoder(records, FEW_CORES)
    assert decode == "cpu"
    assert "NVDEC cannot decode 1 of 2 videos (first: tiny.webm: vp9 64x48 is below NVDEC's minimum" in reason
    decode, reason = choose_decoder([_record("vp9", LARGE, pix_fmt="yuv444p")], FEW_CORES)
    assert decode == "cpu" and "4:4:4" in reason


def test_auto_decode_uses_the_cpu_for_small_videos_given_enough_cores():
    records = [_record("vp9", SMALL_VIDEO_SIZE)] * 2 + [_record("vp9", LARGE)]
    decode, reason = choose_decoder(records, MANY_CORES)
    assert decode == "cpu" and "small videos (median area 76800 px <= 320x240)" in reason
    assert f"{MANY_CORES} CPU cores" in reason
    decode, reason = choose_decoder(records, FEW_CORES)
    assert decode == "gpu" and f"only {FEW_CORES} CPU cores (< {MIN_CPU_DECODE_CORES})" in reason


def test_auto_decode_uses_nvdec_for_large_videos():
    records = [_record("vp9", LARGE), _record("mjpeg", LARGE, pix_fmt="yuvj422p"), _record("vp9", SMALL_VIDEO_SIZE)]
    decode, reason = choose_decoder(records, MANY_CORES)
    assert decode == "gpu" and reason.startswith("videos larger than 320x240 (median area 307200 px)")


def test_auto_decode_without_videos_defaults_to_nvdec():
    assert choose_decoder([], MANY_CORES)[0] == "gpu"
