"""The generated videos decode with DALI on the CPU (no GPU: device_id=None)."""

import dataclasses

import numpy as np
import pytest

from data.filelist import read_file_list
from data.synthetic import generate_dataset
from data.video_io import read_video

dali = pytest.importorskip("nvidia.dali")
fn = pytest.importorskip("nvidia.dali.fn")

SEQUENCE_LENGTH = 8
# DALI's and PyAV's YUV->RGB conversions may differ by rounding.
CONVERSION_LEVELS = 2.0


def _read_first_batch(entries, batch_size):
    @dali.pipeline_def(batch_size=batch_size, num_threads=1, device_id=None, seed=1)
    def reader():
        video, label = fn.experimental.readers.video(
            device="cpu", filenames=[e.path for e in entries], labels=[e.label for e in entries],
            sequence_length=SEQUENCE_LENGTH, random_shuffle=False, name="reader")
        return video, label

    pipe = reader()
    pipe.build()
    videos, labels = pipe.run()
    return ([np.asarray(videos[i]) for i in range(batch_size)],
            [int(np.asarray(labels[i]).item()) for i in range(batch_size)], pipe.epoch_size("reader"))


def test_vp9_videos_decode_on_cpu(tiny_dataset, tiny_spec):
    root, _ = tiny_dataset
    entries = read_file_list(root / "trainlist.txt")
    clips, labels, epoch = _read_first_batch(entries, batch_size=len(entries))
    # Windows per video with the reader's default step (one sequence length): every video is read.
    assert epoch == len(entries) * (tiny_spec.frames // SEQUENCE_LENGTH)
    for clip in clips:
        assert clip.shape == (SEQUENCE_LENGTH, tiny_spec.height, tiny_spec.width, 3) and clip.dtype == np.uint8
        assert clip.std() > 0
    assert labels[0] == entries[0].label and set(labels) <= {e.label for e in entries}
    first = read_video(entries[0].path)[:SEQUENCE_LENGTH].astype(np.float32)
    assert np.abs(clips[0].astype(np.float32) - first).mean() < CONVERSION_LEVELS


def test_mjpeg_videos_decode_on_cpu(tmp_path, tiny_spec):
    spec = dataclasses.replace(tiny_spec, codec="mjpeg", videos_per_class_train=1, videos_per_class_test=1,
                               frames=SEQUENCE_LENGTH)
    generate_dataset(tmp_path, spec, workers=1)
    entries = read_file_list(tmp_path / "trainlist.txt")
    clips, labels, epoch = _read_first_batch(entries, batch_size=len(entries))
    assert epoch == len(entries)
    assert clips[0].shape == (SEQUENCE_LENGTH, spec.height, spec.width, 3)
