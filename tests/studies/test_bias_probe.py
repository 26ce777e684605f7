"""The bias probe around a classifier (studies.probe, studies.bias_probe): pixels, box masks in the
crop, and the probe end to end on the tiny synthetic set with a tiny classify run."""
import json
import os

import numpy as np
import pytest
import torch

from studies import probe as P
from engine import config as C

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = os.path.join(ROOT, "configs", "synthetic_tiny.yaml")
MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def test_pixels_round_trip_through_the_normalisation():
    pixels = np.random.default_rng(0).random((2, 3, 4, 5, 3), dtype=np.float32)    # NTHWC in 0..1
    clips = P.to_model(pixels, MEAN, STD, torch.device("cpu"))
    assert tuple(clips.shape) == (2, 3, 3, 4, 5)                                    # NCTHW
    assert torch.allclose(clips[:, 1], (torch.from_numpy(pixels[..., 1]) - MEAN[1]) / STD[1])
    assert np.allclose(P.to_pixels(clips, MEAN, STD), pixels, atol=1e-6)


def test_clip_boxes_follow_the_test_clips_and_the_centre_crop():
    cfg = C.load_config(TINY, ["clip.frames=2", "clip.stride=1", "clip.crop=28", "eval.clips_per_video=2"])
    # a 64x32 video of 10 frames; the object's box moves 1 pixel right per frame; the centre window is
    # the 28x28 square at x 18..46 (fraction 112/128 of the short side 32 is 28), y 2..30
    frame_boxes = np.array([[20 + t, 10, 24 + t, 14] for t in range(10)])
    boxes = P.clip_boxes(frame_boxes, 10, 64, 32, cfg)
    # clips start at frames 0 and 8 (uniform over 0..8), two frames each: x spans 20..25 and 28..33
    assert boxes.tolist() == [[2, 8, 7, 12], [10, 8, 15, 12]]


def test_missing_run_files_are_named(tmp_path):
    with pytest.raises(P.ProbeError, match="not a directory"):
        P.classifier_files(str(tmp_path / "nowhere"))
    with pytest.raises(P.ProbeError, match="config.yaml, .*last.pt missing"):
        P.classifier_files(str(tmp_path))


@pytest.mark.slow
def test_probe_end_to_end_on_a_tiny_classifier(tmp_path, tiny_data_root):
    from runners import classify
    from studies import bias_probe
    classify.main(C.load_config(TINY, [f"data.root={tiny_data_root}", f"run.dir={tmp_path}", "run.name=lin",
                                       "eval.protocol=linear", "eval.epochs=1"]))
    run_dir = bias_probe.main(["--run", str(tmp_path / "lin")])
    assert run_dir == str(tmp_path / "bias-lin")
    saved = json.loads((tmp_path / "bias-lin" / "bias.json").read_text())
    assert set(saved["masks"]) == {"fame", "box"}                 # synthetic data: both mask sources
    for scores in saved["masks"].values():
        assert set(scores["top1"]) == {"original", "background_only", "foreground_only", "swap"}
        assert scores["videos"] == 8 and scores["chance"] == 25.0
        swap = scores["swap"]
        assert swap["foreground"] + swap["background"] + swap["neither"] == pytest.approx(100.0)
    assert (tmp_path / "bias-lin" / "bias-examples.png").stat().st_size > 0
    assert "| box |" in (tmp_path / "bias-lin" / "bias.md").read_text()
