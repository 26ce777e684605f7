import numpy as np

from data.filelist import read_file_list, write_class_names, write_file_list
from data.index import build_index
from data.transcode import transcode_list
from data.video_io import read_video, write_video

FRAMES = 6
HEIGHT, WIDTH = 33, 47  # odd on purpose: VP9 keeps them, H.264 sources cannot have them
# Mean absolute difference (0..255 levels) allowed after a second lossy encode.
REENCODE_LEVELS = 8.0


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
