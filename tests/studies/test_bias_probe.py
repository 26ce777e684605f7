"""The bias probe around a classifier (studies.probe, studies.bias_probe): pixels, box masks in the
crop, and the probe end to end on the tiny synthetic set with a tiny classify run."""
import json
import os

import numpy as np
import pytest
import torch

from engine import config as C
from studies import probe as P

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
    boxes = P.clip_frame_boxes(frame_boxes, 10, 64, 32, cfg)
    # clips start at frames 0 and 8 (uniform over 0..8), two frames each: x spans 20..25 and 28..33
    assert boxes.tolist() == [[[2, 8, 6, 12], [3, 8, 7, 12]], [[10, 8, 14, 12], [11, 8, 15, 12]]]
    assert P.union_boxes(boxes).tolist() == [[2, 8, 7, 12], [10, 8, 15, 12]]


def test_video_stills_are_the_median_over_all_of_a_video_s_clips_across_batches():
    """Two videos of three clips each, in batches of two: video 0's clips straddle the first two
    batches. A pixel's value steps through 0, 1, 2 per clip (frames alike): the video's median
    over its clips' frames is the middle one."""
    rng = np.random.default_rng(0)
    scenes = rng.random((2, 4, 5, 3), dtype=np.float32)
    pixels = np.stack([np.broadcast_to(scenes[v] + 0.1 * k, (2, 4, 5, 3)) for v in range(2) for k in range(3)])
    clips = P.to_model(np.clip(pixels, 0, 1), MEAN, STD, torch.device("cpu"))
    video_index = torch.tensor([0, 0, 0, 1, 1, 1])
    batches = [(clips[i:i + 2], None, video_index[i:i + 2]) for i in range(0, 6, 2)]
    stills = P.video_stills(batches, 2, 3, MEAN, STD)
    expected = np.round(np.clip(scenes + 0.1, 0, 1) * 255)
    assert stills.shape == (2, 4, 5, 3) and stills.dtype == np.uint8
    assert np.abs(stills.astype(int) - expected).max() <= 1
    with pytest.raises(P.ProbeError, match="fewer than 3 clips"):
        P.video_stills(batches[:1], 2, 3, MEAN, STD)


def test_a_reliance_is_starred_when_the_background_only_clips_keep_the_actor():
    scores = {"videos": 8, "chance": 25.0, "top1": dict.fromkeys(("original", "background_only", "foreground_only",
                                                                  "swap"), 50.0),
              "background_reliance": 2.0, "swap": {"foreground": 50.0, "background": 25.0, "neither": 25.0}}
    kept = {**scores, **P.trust_reliance(30.0)}
    clean = {**scores, **P.trust_reliance(2.0)}
    unknown = {**scores, **P.trust_reliance(None)}
    assert not kept["reliance_trusted"] and clean["reliance_trusted"] and unknown["reliance_trusted"] is None
    table = P.format_table({"fame": kept, "box": clean, "other": unknown})
    assert "| 30.0% | 2.00* |" in table and "| 2.0% | 2.00 |" in table and "| n/a | 2.00* |" in table
    assert "keep 30% of the actor" in table and "unverified" in table


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
        assert 0.0 <= scores["actor_kept"] <= 100.0 and scores["reliance_trusted"] in (True, False)
        assert scores["videos"] == 8 and scores["chance"] == 25.0
        swap = scores["swap"]
        assert swap["foreground"] + swap["background"] + swap["neither"] == pytest.approx(100.0)
    assert (tmp_path / "bias-lin" / "bias-examples.png").stat().st_size > 0
    assert "| box |" in (tmp_path / "bias-lin" / "bias.md").read_text()
