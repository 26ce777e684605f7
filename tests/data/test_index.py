import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from data.filelist import read_file_list, write_file_list
from data.index import INDEX_VERSION, build_index, index_path_for
from data.video_io import write_video

FRAMES = 12
HEIGHT, WIDTH = 32, 48
AUDIO_RATE = 48000
AUDIO_FRAME = 960


def _frames(count=FRAMES, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, HEIGHT, WIDTH, 3), dtype=np.uint8)


def _write_audio_only(path):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libopus", rate=AUDIO_RATE)
        for i in range(5):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 2 * AUDIO_FRAME), np.int16),
                                               format="s16", layout="stereo")
            frame.sample_rate, frame.pts = AUDIO_RATE, i * AUDIO_FRAME
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    """One good video per codec and every kind of bad file the index must name."""
    root = tmp_path_factory.mktemp("index_videos")
    write_video(root / "good.webm", _frames(), 15, "vp9", 4)
    write_video(root / "good.avi", _frames(), 15, "mjpeg", 4)
    write_video(root / "good.mp4", _frames(), 15, "h264", 4)
    write_video(root / "short.webm", _frames(3), 15, "vp9", 4)
    data = (root / "good.webm").read_bytes()
    (root / "truncated.webm").write_bytes(data[: len(data) // 2])
    avi = (root / "good.avi").read_bytes()
    (root / "truncated.avi").write_bytes(avi[: len(avi) // 2])
    (root / "truncated.mp4").write_bytes((root / "good.mp4").read_bytes()[:2000])
    (root / "zero.webm").write_bytes(b"")
    (root / "noise.mp4").write_bytes(np.random.default_rng(1).bytes(4000))
    _write_audio_only(root / "audio.webm")
    return root


def _index_for(tmp_path, video_dir, names, **kwargs):
    list_path = tmp_path / "list.txt"
    write_file_list(list_path, [(os.path.relpath(video_dir / n, tmp_path), i) for i, n in enumerate(names)])
    return list_path, build_index(list_path, **kwargs)


def test_good_videos_are_probed(tmp_path, video_dir):
    _, index = _index_for(tmp_path, video_dir, ["good.webm", "good.avi", "good.mp4"])
    assert index.bad() == []
    by_codec = {r.codec: r for r in index.entries}
    assert set(by_codec) == {"vp9", "mjpeg", "h264"}
    for record in index.entries:
        assert (record.frames, record.width, record.height, record.fps) == (FRAMES, WIDTH, HEIGHT, 15.0)
        assert record.has_video and record.ok and record.reason == ""
    assert [r.label for r in index.entries] == [0, 1, 2]


@pytest.mark.parametrize("name, reason", [
    ("missing.webm", "missing"),
    ("zero.webm", "empty file"),
    ("audio.webm", "no video stream"),
    ("noise.mp4", "cannot open: "),
    ("truncated.mp4", "cannot open: "),
    ("truncated.webm", "corrupt: decoded "),
    ("truncated.avi", "corrupt: decoded "),
])
def test_bad_videos_get_a_reason(tmp_path, video_dir, name, reason):
    _, index = _index_for(tmp_path, video_dir, [name, "good.webm"])
    bad = index.bad()
    assert [r.relpath.split("/")[-1] for r in bad] == [name]
    assert bad[0].reason.startswith(reason) and not bad[0].ok
    if reason.startswith("corrupt"):
        assert f"of {FRAMES} frames" in bad[0].reason and bad[0].frames < FRAMES


def test_packet_counting_also_catches_truncation(tmp_path, video_dir):
    _, index = _index_for(tmp_path, video_dir, ["good.webm", "truncated.webm"], decode=False)
    assert index.entries[0].ok and index.entries[0].frames == FRAMES
    assert index.entries[1].reason.startswith("corrupt")


def test_too_short_depends_on_min_frames(tmp_path, video_dir):
    list_path, index = _index_for(tmp_path, video_dir, ["short.webm", "good.webm"], min_frames=4)
    assert index.entries[0].reason == "too short: 3 < 4" and index.entries[1].ok
    # The cache stores the probe, not the verdict: a smaller minimum makes the video usable.
    assert build_index(list_path, min_frames=3).bad() == []
    with pytest.raises(ValueError, match=r"short.webm \(too short: 3 < 8\)"):
        index.require_ok(min_frames=8)


def test_require_ok_names_files_and_reasons(tmp_path, video_dir):
    names = ["zero.webm", "audio.webm", "missing.webm", "noise.mp4", "truncated.webm", "short.webm", "good.webm"]
    list_path, index = _index_for(tmp_path, video_dir, names, min_frames=4)
    with pytest.raises(ValueError) as info:
        index.require_ok()
    message = str(info.value)
    assert str(list_path) in message and "6 of 7 videos are unusable" in message
    assert "zero.webm (empty file)" in message and "audio.webm (no video stream)" in message
    assert "and 1 more" in message


def test_require_ok_on_cpu_names_gpu_only_codecs_and_the_fix(tmp_path, video_dir):
    list_path, index = _index_for(tmp_path, video_dir, ["good.webm", "good.avi", "good.mp4"])
    with pytest.raises(ValueError, match=r"good\.webm \(vp9 48x32 is below NVDEC's minimum of 128x128\)") as gpu:
        index.require_ok(device="gpu")      # NVDEC decodes H.264 and MJPEG this small, not VP9
    assert "good.mp4" not in str(gpu.value) and "good.avi" not in str(gpu.value)
    with pytest.raises(ValueError) as info:
        index.require_ok(device="cpu")
    message = str(info.value)
    assert "1 videos use codecs DALI cannot decode on the CPU (h264" in message and "good.mp4" in message
    command = f".venv/bin/python -m runners.prepare transcode --list {list_path} --out {tmp_path / 'vp9'} --codec vp9"
    assert f"`{command}` (it prints the data.root to train with)" in message
    with pytest.raises(ValueError, match="device must be one of"):
        index.require_ok(device="tpu")


def test_transcode_hint_names_both_lists_of_the_dataset_train_first(tmp_path, video_dir):
    lists = tmp_path / "my lists"
    for name in ("trainlist.txt", "testlist.txt"):
        write_file_list(lists / name, [(os.path.relpath(video_dir / "good.mp4", lists), 0)])
    with pytest.raises(ValueError) as info:
        build_index(lists / "testlist.txt").require_ok(device="cpu")
    quoted = f"'{lists}/trainlist.txt' '{lists}/testlist.txt' --out '{lists}/vp9' --codec vp9`"
    assert f"`.venv/bin/python -m runners.prepare transcode --list {quoted}" in str(info.value)
    (lists / "trainlist.txt").unlink()      # alone, a test list names itself only
    with pytest.raises(ValueError) as alone:
        build_index(lists / "testlist.txt").require_ok(device="cpu")
    assert f"transcode --list '{lists}/testlist.txt' --out '{lists}/vp9'" in str(alone.value)


def test_cache_is_reused_and_refreshed_when_a_file_changes(tmp_path, video_dir, monkeypatch):
    work = tmp_path / "videos"
    work.mkdir()
    for name in ("good.webm", "short.webm"):
        shutil.copy(video_dir / name, work / name)
    list_path = tmp_path / "list.txt"
    write_file_list(list_path, [("videos/good.webm", 0), ("videos/short.webm", 1)])
    build_index(list_path)
    cache = json.loads(index_path_for(list_path).read_text())
    assert index_path_for(list_path).name == "list.txt.index.json"
    assert [e["frames"] for e in cache["entries"]] == [FRAMES, 3]

    probed = []
    import data.index as index_module
    original = index_module.probe_video
    monkeypatch.setattr(index_module, "probe_video", lambda e, d=True: probed.append(e.relpath) or original(e, d))
    build_index(list_path)
    assert probed == []
    shutil.copy(video_dir / "good.webm", work / "short.webm")  # new size and mtime
    index = build_index(list_path)
    assert probed == ["videos/short.webm"] and index.entries[1].frames == FRAMES
    assert build_index(list_path, cache=False) and probed[-1] == "videos/short.webm" and len(probed) == 3


def test_min_frames_must_be_positive(tmp_path, video_dir):
    with pytest.raises(ValueError, match="min_frames"):
        _index_for(tmp_path, video_dir, ["good.webm"], min_frames=0)


def test_index_of_the_synthetic_lists(tiny_dataset, tiny_spec):
    root, _ = tiny_dataset
    index = build_index(root / "testlist.txt", min_frames=tiny_spec.frames).require_ok(device="cpu")
    assert all(r.frames == tiny_spec.frames and r.codec == "vp9" for r in index.entries)
    assert [r.path for r in index.entries] == [e.path for e in read_file_list(root / "testlist.txt")]


def test_unreadable_cache_is_ignored(tmp_path, video_dir):
    list_path, _ = _index_for(tmp_path, video_dir, ["good.webm"])
    index_path_for(list_path).write_text(json.dumps({"version": INDEX_VERSION, "decode": True,
                                                     "entries": [{"path": 3}]}))
    assert build_index(list_path).entries[0].frames == FRAMES
    assert json.loads(index_path_for(list_path).read_text())["entries"][0]["frames"] == FRAMES


ENCODE_AV1 = """
import sys
from pathlib import Path
import av
import numpy as np
with av.open(sys.argv[1], "w") as container:
    stream = container.add_stream("libsvtav1", rate=15)
    stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
    for value in range(0, 100, 10):
        for packet in stream.encode(av.VideoFrame.from_ndarray(np.full((64, 64, 3), value, np.uint8), "rgb24")):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
"""


def test_an_av1_video_is_recorded_by_its_codec_and_checked_for_nvdec(tmp_path):
    """FFmpeg decodes AV1 with libdav1d; the index records the codec, so the size check applies."""
    path = tmp_path / "small.mkv"
    # In a process of its own: the SVT-AV1 encoder leaves the process in a state in which
    # torch.distributed processes spawned from it later spin without progress.
    subprocess.run([sys.executable, "-c", ENCODE_AV1, str(path)], check=True, capture_output=True, timeout=120)
    list_path = tmp_path / "list.txt"
    list_path.write_text("small.mkv 0\n")
    index = build_index(list_path, cache=False)
    assert index.entries[0].codec == "av1"
    with pytest.raises(ValueError, match=r"small\.mkv \(av1 64x64 is below NVDEC's minimum of 128x128\)"):
        index.require_ok(device="gpu")


def test_a_path_through_a_file_is_recorded_not_raised(tmp_path, video_dir):
    shutil.copy(video_dir / "good.avi", tmp_path / "a.avi")
    list_path = tmp_path / "list.txt"
    write_file_list(list_path, [("a.avi/b.avi", 0), ("a.avi", 1)])
    for _ in range(2):  # the second run meets the cached record of the unreadable path
        index = build_index(list_path)
        bad = index.bad()
        assert [r.relpath for r in bad] == ["a.avi/b.avi"]
        assert bad[0].reason == "unreadable: Not a directory"
        with pytest.raises(ValueError, match=r"a.avi/b.avi \(unreadable: Not a directory\)"):
            index.require_ok()


def test_pixel_format_is_recorded_and_survives_the_cache(tmp_path, video_dir, monkeypatch):
    list_path, index = _index_for(tmp_path, video_dir, ["good.webm", "good.avi", "good.mp4"])
    assert [r.pix_fmt for r in index.entries] == ["yuv420p", "yuvj420p", "yuv420p"]
    assert [e["pix_fmt"] for e in json.loads(index_path_for(list_path).read_text())["entries"]] == [
        "yuv420p", "yuvj420p", "yuv420p"]
    import data.index as index_module
    monkeypatch.setattr(index_module, "probe_video", lambda *a: pytest.fail("cached videos were probed again"))
    assert [r.pix_fmt for r in build_index(list_path).entries] == ["yuv420p", "yuvj420p", "yuv420p"]


VERSION_WITHOUT_PIX_FMT = 2     # the last index version that did not record pixel formats


def _old_cache(path: Path) -> dict:
    """The cache at ``path`` as an index written before pixel formats held it."""
    head, *lines, _tail = path.read_text().splitlines()
    cache = {"version": VERSION_WITHOUT_PIX_FMT, "entries": [json.loads(line.rstrip(",")) for line in lines]}
    for entry in cache["entries"]:
        del entry["pix_fmt"]
    return cache


@pytest.mark.parametrize("indent", [None, 1])     # 1: the layout of the indexes before version 4
def test_a_cache_of_an_older_index_version_is_probed_again_once(tmp_path, video_dir, monkeypatch, caplog, indent):
    caplog.set_level("INFO")
    list_path, _ = _index_for(tmp_path, video_dir, ["good.webm"])
    index_path_for(list_path).write_text(json.dumps(_old_cache(index_path_for(list_path)), indent=indent))
    probed = []
    import data.index as index_module
    original = index_module.probe_video
    monkeypatch.setattr(index_module, "probe_video", lambda e, d=True: probed.append(e.relpath) or original(e, d))
    assert build_index(list_path).entries[0].pix_fmt == "yuv420p" and len(probed) == 1
    assert "of another version" in caplog.text and "unreadable" not in caplog.text
    assert json.loads(index_path_for(list_path).read_text())["version"] == INDEX_VERSION
    assert build_index(list_path).entries[0].pix_fmt == "yuv420p" and len(probed) == 1


# ------------------------------------------------------------------ at scale ----
class Interrupted(Exception):
    """Stands for a Ctrl-C in the middle of probing."""


def test_an_interrupted_index_resumes_without_probing_again_what_it_wrote(tmp_path, video_dir, monkeypatch):
    names = ["good.webm", "good.avi", "good.mp4", "short.webm", "zero.webm"]
    list_path = tmp_path / "list.txt"
    write_file_list(list_path, [(os.path.relpath(video_dir / n, tmp_path), 0) for n in names])
    import data.index as index_module
    original, probed = index_module.probe_video, []

    def probe_three_then_stop(entry, decode=True):
        if len(probed) == 3:
            raise Interrupted
        probed.append(entry.relpath.split("/")[-1])
        return original(entry, decode)

    monkeypatch.setattr(index_module, "probe_video", probe_three_then_stop)
    with pytest.raises(Interrupted):
        build_index(list_path, workers=1)
    assert not index_path_for(list_path).exists() and probed == names[:3]
    probed.clear()
    monkeypatch.setattr(index_module, "probe_video", lambda entry, decode=True: probed.append(
        entry.relpath.split("/")[-1]) or original(entry, decode))
    index = build_index(list_path, workers=1)
    assert probed == names[3:] and [r.relpath.split("/")[-1] for r in index.entries] == names
    assert [r.frames for r in index.entries] == [FRAMES, FRAMES, FRAMES, 3, 0]
    journal = index_path_for(list_path).with_name(index_path_for(list_path).name + ".journal")
    assert index_path_for(list_path).is_file() and not journal.exists()


@pytest.mark.parametrize("name", ["truncated.webm", "truncated.avi", "truncated.mp4"])
def test_the_fast_mode_names_a_truncated_file(tmp_path, video_dir, name):
    _, index = _index_for(tmp_path, video_dir, [name, "good.webm"], decode=False)
    (bad,) = index.bad()
    assert bad.relpath.endswith(name) and bad.reason.startswith(("corrupt", "cannot open")) and not bad.decoded


def test_the_fast_mode_finds_what_the_full_mode_finds_in_good_files(tmp_path, video_dir):
    names = ["good.webm", "good.avi", "good.mp4"]
    _, fast = _index_for(tmp_path, video_dir, names, decode=False, cache=False)
    _, full = _index_for(tmp_path, video_dir, names, cache=False)
    fields = ("frames", "codec", "width", "height", "fps", "container", "keyframes", "cuts", "ok")
    assert [[getattr(r, f) for f in fields] for r in fast.entries] == [[getattr(r, f) for f in fields]
                                                                       for r in full.entries]
    assert [r.decoded for r in fast.entries + full.entries] == [False] * 3 + [True] * 3


def test_the_full_mode_uses_the_fast_modes_records_unless_asked_to_check_them(tmp_path, video_dir, monkeypatch):
    list_path, _ = _index_for(tmp_path, video_dir, ["good.webm", "good.avi"], decode=False)
    import data.index as index_module
    original, probed = index_module.probe_video, []
    monkeypatch.setattr(index_module, "probe_video", lambda e, d=True: probed.append((e.relpath, d)) or original(e, d))
    assert not any(r.decoded for r in build_index(list_path).entries) and probed == []
    assert all(r.decoded for r in build_index(list_path, recheck_fast=True).entries) and len(probed) == 2
    assert all(decode for _, decode in probed)


def test_keyframes_are_recorded_in_display_order(tmp_path, video_dir):
    _, index = _index_for(tmp_path, video_dir, ["good.webm", "good.mp4", "good.avi"])
    webm, mp4, avi = index.entries
    assert list(webm.keyframe_indices()) == [0, 4, 8]
    assert {0, 4, 8} <= set(mp4.keyframe_indices())     # x264 adds keyframes at scene cuts (noise has many)
    assert list(avi.keyframe_indices()) == list(range(FRAMES))      # every MJPEG frame is a keyframe
