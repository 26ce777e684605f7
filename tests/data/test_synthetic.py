import dataclasses
import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from data.filelist import read_class_names, read_file_list
from data.spec import MOTIONS, SyntheticSpec
from data.synthetic import (
    background_pools,
    dataset_is_current,
    ensure_dataset,
    generate_dataset,
    load_annotations,
    load_boxes,
    plan_videos,
    render_video,
)
from data.synthetic.render import draw_look, motion_trajectory
from data.video_io import read_video

# Mean absolute difference (0..255 levels) allowed between rendered and decoded frames.
CODEC_ERROR_LEVELS = 6.0


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_layout_lists_and_class_names(tiny_dataset, tiny_spec):
    root, summary = tiny_dataset
    assert summary["class_names"] == ["right", "left"]
    assert read_class_names(root / "classInd.txt") == ["right", "left"]
    for split, count in (("train", tiny_spec.videos_per_class_train), ("test", tiny_spec.videos_per_class_test)):
        entries = read_file_list(root / f"{split}list.txt")
        assert Counter(e.label for e in entries) == {0: count, 1: count}
        for entry in entries:
            assert entry.relpath.startswith(f"videos/{split}/{MOTIONS[entry.label]}/")
            assert entry.relpath.endswith(".webm")
    spec_record = json.loads((root / "spec.json").read_text())
    assert spec_record["complete"] and spec_record["spec"] == tiny_spec.to_dict()


def test_videos_decode_with_pyav_and_match_rendering(tiny_dataset, tiny_spec):
    root, _ = tiny_dataset
    plan = plan_videos(tiny_spec)[0]
    decoded = read_video(root / plan.relpath(tiny_spec))
    assert decoded.shape == (tiny_spec.frames, tiny_spec.height, tiny_spec.width, 3)
    rendered, boxes = render_video(tiny_spec, plan)
    error = np.abs(decoded.astype(np.float32) - rendered.astype(np.float32)).mean()
    assert error < CODEC_ERROR_LEVELS
    assert np.array_equal(load_boxes(root, plan.relpath(tiny_spec)), boxes)


def test_same_seed_same_bytes_different_seed_different_frames(tmp_path, tiny_spec):
    small = dataclasses.replace(tiny_spec, videos_per_class_train=1, videos_per_class_test=1, frames=12)
    runs = (("first", small.seed, 1), ("again", small.seed, 2), ("other", small.seed + 1, 1))
    for name, seed, workers in runs:  # the number of encoding processes must not change the output
        generate_dataset(tmp_path / name, dataclasses.replace(small, seed=seed), workers=workers)
    for plan in plan_videos(small):
        relpath = plan.relpath(small)
        assert _digest(tmp_path / "first" / relpath) == _digest(tmp_path / "again" / relpath)
        assert not np.array_equal(read_video(tmp_path / "first" / relpath),
                                  read_video(tmp_path / "other" / relpath))
    assert (tmp_path / "first" / "annotations.json").read_bytes() == \
        (tmp_path / "again" / "annotations.json").read_bytes()


def test_boxes_follow_the_class_motion(tiny_spec):
    spec = dataclasses.replace(tiny_spec, num_classes=len(MOTIONS), width=128, height=96, frames=32)
    for label, motion in enumerate(MOTIONS):
        for index in range(3):
            plan = dataclasses.replace(plan_videos(spec)[0], label=label, index=index)
            _, boxes = render_video(spec, plan)
            assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= spec.width).all()
            assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= spec.height).all()
            assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
            cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
            width = boxes[:, 2] - boxes[:, 0]
            steps_x, steps_y = np.diff(cx), np.diff(cy)
            if motion in ("right", "left"):
                assert np.sign(cx[-1] - cx[0]) == (1 if motion == "right" else -1), motion
                assert np.ptp(cx) > spec.width / 3 and np.ptp(cy) <= 1
            elif motion in ("down", "up"):
                assert np.sign(cy[-1] - cy[0]) == (1 if motion == "down" else -1), motion
                assert np.ptp(cy) > spec.height / 3 and np.ptp(cx) <= 1
            elif motion == "pulse":
                assert width.max() - width.min() >= 4 and np.ptp(cx) <= 1 and np.ptp(cy) <= 1
            elif motion == "zigzag":
                assert (steps_y > 0).any() and (steps_y < 0).any() and np.ptp(cx) > spec.width / 4
            else:  # circles: both coordinates go back and forth
                assert (steps_x > 0).any() and (steps_x < 0).any()
                assert (steps_y > 0).any() and (steps_y < 0).any()


def test_circles_turn_in_opposite_directions(tiny_spec):
    spec = dataclasses.replace(tiny_spec, width=128, height=96)
    rng = np.random.default_rng(0)
    turns = {}
    for motion in ("circle_cw", "circle_ccw"):
        x, y, _ = motion_trajectory(motion, spec, 8.0, rng)
        dx, dy = np.diff(x), np.diff(y)
        turns[motion] = np.sign(np.mean(dx[:-1] * dy[1:] - dy[:-1] * dx[1:]))
    assert turns == {"circle_cw": 1, "circle_ccw": -1}  # image y points down: positive cross is clockwise


@pytest.mark.parametrize("correlation, expected_own", [(1.0, 12), (0.0, 3), (0.5, 6 + 2)])
def test_background_correlation_counts(correlation, expected_own):
    """12 videos per class, 4 classes: own pool = round(c*12) + an even share of the rest."""
    spec = SyntheticSpec(num_classes=4, videos_per_class_train=12, videos_per_class_test=12,
                         bg_correlation_train=correlation, bg_correlation_test=0.0)
    plans = plan_videos(spec)
    pools = background_pools(spec)
    for label in range(spec.num_classes):
        train = [p for p in plans if p.split == "train" and p.label == label]
        test = [p for p in plans if p.split == "test" and p.label == label]
        assert len(train) == len(test) == 12
        per_pool = Counter(p.pool for p in train)
        if correlation == 0.5:
            assert 6 + 1 <= per_pool[label] <= 6 + 2
        else:
            assert per_pool[label] == expected_own
        assert Counter(p.pool for p in test) == {pool: 3 for pool in range(4)}  # independent of class
        assert all(p.background in pools[p.pool] for p in train + test)


def test_a_larger_test_split_keeps_the_training_split(tiny_spec):
    """The training videos are planned and drawn first, so more test videos per class re-score a
    pretrained backbone on the very training videos it saw (docs/benchmarks.md: test-split size)."""
    small = dataclasses.replace(tiny_spec, videos_per_class_test=2)
    large = dataclasses.replace(tiny_spec, videos_per_class_test=8)
    train = [[p for p in plan_videos(spec) if p.split == "train"] for spec in (small, large)]
    assert train[0] == train[1] and train[0]
    assert np.array_equal(render_video(small, train[0][-1])[0], render_video(large, train[1][-1])[0])
    assert len([p for p in plan_videos(large) if p.split == "test"]) == 8 * large.num_classes


def test_pools_partition_the_backgrounds(tiny_spec):
    spec = dataclasses.replace(tiny_spec, num_classes=len(MOTIONS))
    pools = background_pools(spec)
    names = [name for pool in pools for name in pool]
    assert len(names) == len(set(names)) and all(pools)


def test_annotations_record_pool_and_boxes(tiny_dataset, tiny_spec):
    root, _ = tiny_dataset
    annotations = load_annotations(root)
    assert len(annotations["videos"]) == 8
    for video in annotations["videos"].values():
        assert video["motion"] == MOTIONS[video["label"]]
        assert video["background"] in annotations["pools"][video["pool"]]
        assert np.asarray(video["boxes"]).shape == (tiny_spec.frames, 4)
    with pytest.raises(KeyError, match="not in"):
        load_boxes(root, "videos/none.webm")


@pytest.mark.parametrize("changes, key", [
    ({"num_classes": 1}, "num_classes"),
    ({"num_classes": len(MOTIONS) + 1}, "num_classes"),
    ({"width": 63}, "width"),
    ({"frames": 1}, "frames"),
    ({"codec": "av1"}, "codec"),
    ({"bg_correlation_train": 1.5}, "bg_correlation_train"),
    ({"noise_std": -1.0}, "noise_std"),
    ({"object_size": (0.3, 0.1)}, "object_size"),
    ({"videos_per_class_test": 0}, "videos_per_class_test"),
    ({"fps": 15.5}, "fps"),
    ({"seed": "1"}, "seed"),
    ({"backgrounds": "photos"}, "backgrounds"),
    ({"frames": 10, "length_spread": 9}, "length_spread"),
    ({"length_spread": -1}, "length_spread"),
])
def test_spec_validation_names_the_key(changes, key):
    with pytest.raises(ValueError, match=rf"SyntheticSpec\.{key}: "):
        SyntheticSpec(**changes)


def test_spec_json_of_the_default_spec_is_that_of_existing_datasets():
    """spec.json decides on regenerating (dataset_is_current): the spec's move to data.spec and
    into the config schema keeps every key and default, so generated datasets stay current."""
    assert SyntheticSpec().to_dict() == {
        "num_classes": 4, "videos_per_class_train": 24, "videos_per_class_test": 12, "width": 128, "height": 96,
        "frames": 48, "fps": 15, "codec": "vp9", "bg_correlation_train": 0.9, "bg_correlation_test": 0.0,
        "noise_std": 3.0, "pan_speed": 0.5, "object_size": [0.15, 0.3], "gop": 8, "palette": 0,
        "backgrounds": "images", "seed": 0}


def test_lengths_spread_around_frames_and_leave_the_rest_of_the_plan_as_it_was(tiny_spec):
    spread = dataclasses.replace(tiny_spec, frames=20, length_spread=6, videos_per_class_train=6)
    plans, plain = plan_videos(spread), plan_videos(dataclasses.replace(spread, length_spread=0))
    lengths = [plan.frames for plan in plans]
    assert min(lengths) >= 14 and max(lengths) <= 26 and len(set(lengths)) > 1
    assert [dataclasses.replace(plan, frames=20) for plan in plans] == plain
    frames, boxes = render_video(spread, plans[0])
    assert len(frames) == len(boxes) == plans[0].frames
    assert "length_spread" not in tiny_spec.to_dict() and spread.to_dict()["length_spread"] == 6
    assert SyntheticSpec.from_dict(spread.to_dict()) == spread


def test_spec_dict_round_trip_and_unknown_keys():
    spec = SyntheticSpec(codec="mjpeg", object_size=(0.1, 0.2))
    assert SyntheticSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(ValueError, match=r"unknown synthetic spec keys \['colour'\]"):
        SyntheticSpec.from_dict({"colour": "red"})


def test_ensure_dataset_reuses_and_regenerates(tmp_path, tiny_spec):
    spec = dataclasses.replace(tiny_spec, videos_per_class_train=1, videos_per_class_test=1, frames=8)
    root = tmp_path / "ds"
    assert ensure_dataset(root, spec, workers=1)["generated"]
    assert not ensure_dataset(root, spec, workers=1)["generated"]
    first = read_file_list(root / "trainlist.txt")[0]
    Path(first.path).unlink()
    assert not dataset_is_current(root, spec)
    assert ensure_dataset(root, spec, workers=1)["generated"]
    changed = dataclasses.replace(spec, seed=spec.seed + 1)
    assert not dataset_is_current(root, changed)
    assert ensure_dataset(root, changed, workers=1)["generated"] and dataset_is_current(root, changed)


def test_refuses_to_overwrite_a_foreign_directory(tmp_path, tiny_spec):
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "mine.mp4").write_bytes(b"keep")
    with pytest.raises(ValueError, match="not a synthetic dataset"):
        generate_dataset(tmp_path, tiny_spec, workers=1)
    assert (tmp_path / "videos" / "mine.mp4").read_bytes() == b"keep"


@pytest.mark.parametrize("codec, extension", [("mjpeg", ".avi"), ("h264", ".mp4")])
def test_other_codecs_decode_with_pyav(tmp_path, tiny_spec, codec, extension):
    spec = dataclasses.replace(tiny_spec, codec=codec, num_classes=2, videos_per_class_train=1,
                               videos_per_class_test=1, frames=8)
    generate_dataset(tmp_path, spec, workers=1)
    entry = read_file_list(tmp_path / "trainlist.txt")[0]
    assert entry.path.endswith(extension)
    assert read_video(entry.path).shape == (8, spec.height, spec.width, 3)


def test_palette_limits_the_looks_and_default_keeps_one_per_video():

    def looks(spec, n=24):
        return {(look.shape, look.texture, tuple(look.first), tuple(look.second))
                for look in (draw_look(spec, np.random.default_rng([7, i])) for i in range(n))}
    assert len(looks(SyntheticSpec(palette=3))) <= 3
    assert len(looks(SyntheticSpec(palette=1))) == 1
    assert len(looks(SyntheticSpec())) == 24
    with pytest.raises(ValueError, match="palette"):
        SyntheticSpec(palette=-1)


def test_generated_backgrounds_are_new_per_video_and_keep_the_pool_hue(tiny_spec):
    import colorsys

    spec = dataclasses.replace(tiny_spec, backgrounds="generated", noise_std=0.0, object_size=(0.1, 0.1))
    assert background_pools(spec) == [[f"generated-{k}"] for k in range(spec.num_classes)]
    plans = plan_videos(spec)
    by_pool = {}
    for plan in plans:
        by_pool.setdefault(plan.pool, []).append(plan)
    for pool, members in by_pool.items():
        frames = [render_video(spec, plan)[0][0].astype(np.float64) for plan in members[:2]]
        if len(frames) == 2:
            assert np.abs(frames[0] - frames[1]).mean() > 5.0   # no two videos share a background
        r, g, b = frames[0].reshape(-1, 3).mean(axis=0) / 255.0
        hue = colorsys.rgb_to_hsv(r, g, b)[0]
        target = pool / spec.num_classes
        assert min(abs(hue - target), 1 - abs(hue - target)) < 0.1
