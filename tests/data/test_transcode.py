import numpy as np
import pytest

from data.filelist import read_file_list, write_class_names, write_file_list
from data.index import build_index
from data.transcode import TranscodeReport, require_all_written, transcode_list, transcode_lists
from data.video_io import read_video, write_video

FRAMES = 6
HEIGHT, WIDTH = 33, 47  # odd on purpose: VP9 keeps them, H.264 sources cannot have them
# Mean absolute difference (0..255 levels) allowed after a second lossy encode.
REENCODE_LEVELS = 8.0
NOISE_FRAMES = 12


def _smooth_frames(height, width):
    ys, xs = np.mgrid[0:height, 0:width]
    frames = [np.stack([(xs * 5 + t * 9) % 256, (ys * 7) % 256, np.full_like(xs, 40 * t)], -1)
              for t in range(FRAMES)]
    return np.asarray(frames, np.uint8)


def test_transcode_h264_list_to_vp9(tmp_path):
    source = tmp_path / "source"
    frames = _smooth_frames(32, 48)
    write_video(source / "class a" / "one.mp4", frames, 25, "h264", 4)
    write_video(source / "b" / "two.avi", _smooth_frames(HEIGHT, WIDTH), 25, "mjpeg", 4)
    (source / "b" / "broken.mp4").write_bytes(b"\x00" * 100)
    lists = tmp_path / "lists"
    write_file_list(lists / "train.txt", [("../source/class a/one.mp4", 0), ("../source/b/two.avi", 1),
                                          ("../source/b/broken.mp4", 1)])
    write_class_names(lists / "classInd.txt", ["a", "b"])

    out = tmp_path / "vp9"
    report = transcode_list(lists / "train.txt", out)
    assert report.written == 2 and report.reused == 0 and len(report.failed) == 1
    assert "broken.mp4" in report.failed[0] and "1 failed and left out" in report.summary()
    entries = read_file_list(out / "train.txt")
    assert [(e.relpath, e.label) for e in entries] == [("class a/one.webm", 0), ("b/two.webm", 1)]
    assert (out / "classInd.txt").read_text() == "1 a\n2 b\n"
    decoded = read_video(entries[0].path)
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(np.float32) - frames.astype(np.float32)).mean() < REENCODE_LEVELS
    assert read_video(entries[1].path).shape == (FRAMES, HEIGHT, WIDTH, 3)
    build_index(out / "train.txt").require_ok(device="cpu")

    again = transcode_list(lists / "train.txt", out)
    assert again.reused == 2 and again.written == 0


def _placeholder(path):
    """A listed file the overwrite checks only look at by name (they refuse before decoding anything)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a video")


def _snapshot(folder):
    return {path: path.read_bytes() for path in folder.rglob("*") if path.is_file()}


def test_refuses_to_replace_the_input_list(tmp_path):
    source = tmp_path / "A"
    _placeholder(source / "x.avi")
    write_file_list(source / "train.txt", [("x.avi", 0)])
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"train.txt: the transcoded list would replace this list"):
        transcode_list(source / "train.txt", source)
    assert _snapshot(tmp_path) == before


def test_refuses_two_sources_written_to_one_target(tmp_path):
    source = tmp_path / "A"
    _placeholder(source / "x.avi")
    _placeholder(source / "x.mp4")
    write_file_list(tmp_path / "lists" / "train.txt", [("../A/x.avi", 0), ("../A/x.mp4", 1)])
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"x.avi and .*x.mp4 would both be written to .*x.webm"):
        transcode_list(tmp_path / "lists" / "train.txt", tmp_path / "out", workers=2)
    assert _snapshot(tmp_path) == before and not (tmp_path / "out").exists()


def test_refuses_a_target_that_is_another_listed_source(tmp_path):
    source = tmp_path / "A"
    for name in ("p/y.webm", "y.avi", "q.avi"):
        _placeholder(source / name)
    # Common folder A: y.avi becomes y.webm, which under --out A/p is the listed A/p/y.webm.
    write_file_list(tmp_path / "lists" / "train.txt", [("../A/p/y.webm", 0), ("../A/y.avi", 1), ("../A/q.avi", 2)])
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"the output for \S*A/y.avi would be written to \S*A/p/y.webm, "
                                         r"which is the listed source \S*A/p/y.webm"):
        transcode_list(tmp_path / "lists" / "train.txt", source / "p")
    assert _snapshot(tmp_path) == before


def test_a_video_listed_twice_is_transcoded_once(tmp_path):
    write_video(tmp_path / "src" / "one.avi", _smooth_frames(HEIGHT, WIDTH), 25, "mjpeg", 4)
    write_file_list(tmp_path / "lists" / "train.txt", [("../src/one.avi", 0), ("../src/one.avi", 1)])
    report = transcode_list(tmp_path / "lists" / "train.txt", tmp_path / "out", workers=2)
    assert (report.written, report.reused, report.failed) == (1, 0, [])
    assert [(e.relpath, e.label) for e in read_file_list(tmp_path / "out" / "train.txt")] == [
        ("one.webm", 0), ("one.webm", 1)]


def test_truncated_source_fails_instead_of_becoming_a_short_good_video(tmp_path):
    source = tmp_path / "src"
    # Noise compresses poorly, so half the file is past the header and holds a few whole frames.
    noise = np.random.default_rng(0).integers(0, 256, (NOISE_FRAMES, HEIGHT, WIDTH, 3), dtype=np.uint8)
    write_video(source / "whole.avi", noise, 25, "mjpeg", 4)
    data = (source / "whole.avi").read_bytes()
    (source / "half.avi").write_bytes(data[: len(data) // 2])
    write_file_list(tmp_path / "lists" / "train.txt", [("../src/whole.avi", 0), ("../src/half.avi", 1)])
    report = transcode_list(tmp_path / "lists" / "train.txt", tmp_path / "out")
    assert report.written == 1 and len(report.failed) == 1
    assert "half.avi: decoded" in report.failed[0] and f"of the {NOISE_FRAMES} frames" in report.failed[0]
    assert [e.relpath for e in read_file_list(tmp_path / "out" / "train.txt")] == ["whole.webm"]
    assert not (tmp_path / "out" / "half.webm").exists()
    assert not list((tmp_path / "out").glob(".partial-*"))


def test_lists_of_one_dataset_are_transcoded_in_one_layout(tmp_path):
    for name in ("a/one.avi", "b/two.avi", "a/three.avi"):
        write_video(tmp_path / "src" / name, _smooth_frames(HEIGHT, WIDTH), 25, "mjpeg", 4)
    lists = tmp_path / "lists"
    write_file_list(lists / "trainlist.txt", [("../src/a/one.avi", 0), ("../src/b/two.avi", 1)])
    write_file_list(lists / "testlist.txt", [("../src/a/three.avi", 0)])   # alone, its folder would be src/a
    reports = transcode_lists([lists / "trainlist.txt", lists / "testlist.txt"], tmp_path / "out")
    assert [(r.list_path.name, r.written, r.failed) for r in reports] == [("trainlist.txt", 2, []),
                                                                          ("testlist.txt", 1, [])]
    assert [e.relpath for e in read_file_list(tmp_path / "out" / "testlist.txt")] == ["a/three.webm"]
    require_all_written(reports)


def test_lists_sharing_a_name_are_refused_before_any_work(tmp_path):
    for folder in ("x", "y"):
        _placeholder(tmp_path / "src" / f"{folder}.avi")
        write_file_list(tmp_path / folder / "trainlist.txt", [(f"../src/{folder}.avi", 0)])
    with pytest.raises(ValueError, match=r"x/trainlist.txt and \S*y/trainlist.txt would both be written as "
                                         r"trainlist.txt in the --out folder"):
        transcode_lists([tmp_path / "x" / "trainlist.txt", tmp_path / "y" / "trainlist.txt"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_two_lists_writing_one_target_are_refused_before_any_work(tmp_path):
    _placeholder(tmp_path / "src" / "x.avi")
    _placeholder(tmp_path / "src" / "x.mp4")
    write_file_list(tmp_path / "lists" / "trainlist.txt", [("../src/x.avi", 0)])
    write_file_list(tmp_path / "lists" / "testlist.txt", [("../src/x.mp4", 0)])
    with pytest.raises(ValueError, match=r"trainlist.txt, \S*testlist.txt: \S*x.avi and \S*x.mp4 would both be "
                                         r"written to \S*out/x.webm"):
        transcode_lists([tmp_path / "lists" / "trainlist.txt", tmp_path / "lists" / "testlist.txt"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_require_all_written_names_every_left_out_video(tmp_path):
    reports = [TranscodeReport(tmp_path / "a.txt", failed=[f"v{n}.mp4: bad" for n in range(4)]),
               TranscodeReport(tmp_path / "b.txt", written=3, failed=[f"w{n}.mp4: bad" for n in range(3)])]
    with pytest.raises(ValueError) as info:
        require_all_written(reports)
    assert str(info.value).startswith("7 videos could not be transcoded and were left out of the new lists: "
                                      "v0.mp4: bad; v1.mp4: bad; v2.mp4: bad; v3.mp4: bad; w0.mp4: bad; and 2 more")
    require_all_written([TranscodeReport(tmp_path / "a.txt", written=2)])
